"""vps_brain: loss-free market data from a VPS near the exchange to the Brain."""

__version__ = "0.1.0"
