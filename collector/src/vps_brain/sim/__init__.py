"""A local fake Binance venue (spot, USD-M or COIN-M futures: websocket combined streams with the
venue's routes, REST depth) for tests, bench and lab; the venue is ``SimulatorSettings.venue``."""

from vps_brain.sim.server import Simulator

__all__ = ["Simulator"]
