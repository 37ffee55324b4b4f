"""A local fake Binance Spot (websocket combined streams + REST depth) for tests, bench and lab."""

from vps_brain.sim.server import Simulator

__all__ = ["Simulator"]
