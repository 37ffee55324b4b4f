"""``vps-brain collect``: Binance combined streams -> Redis Streams, loss-free.

Data path (one module per stage): :mod:`.ws` (connections, renewal) -> :mod:`.router`
(validation, de-duplication, sequence checks, snapshots via :mod:`.rest`) -> :mod:`.writer`
(batching with :mod:`vps_brain.frame`, MULTI/EXEC XADD, :mod:`.spool` on disk) ; :mod:`.trim`.
"""

from vps_brain.collect.service import Collector

__all__ = ["Collector"]
