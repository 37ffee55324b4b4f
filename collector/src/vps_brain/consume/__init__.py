"""The Brain side: read the VPS streams, store them exactly once, feed strategies, replay.

Data path: VPS Redis stream entry -> :mod:`vps_brain.frame` (decode) -> :mod:`.rows` (parsed
columns) -> :mod:`.store` (Parquet parts + commit checkpoint) -> XACK. :mod:`.reader` drives it;
:mod:`.live` publishes entries to strategies as they arrive; :mod:`.replay` reads the store back in
stream order; :mod:`.status` is the terminal dashboard.
"""
