"""How long the VPS can hold the backlog if the Brain stops reading now.

The collector's stream entries stay in Redis until the Brain acknowledges them (then they are
trimmed); with the Brain away, Redis fills up to the high watermark and the disk spool takes the
rest up to its bound. The hold time is that room divided by the rate the collector writes entry
bytes at (smoothed over about a minute), published as
``vps_brain_collector_hold_seconds`` with the room and the rate beside it, and alerted on by
``VpsBrainBacklogHoldShort`` (roles/monitoring/files/vps_brain_alerts.yml).

Entry bytes are what the writer sends (compressed batches); Redis holds a little more for them
(the stream's own index), so the estimate errs on the long side by that overhead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: The input rate is an exponential moving average with this time constant.
RATE_TIME_CONSTANT_S = 60.0


@dataclass
class HoldEstimate:
    """Input rate (EWMA of written bytes per second) and the hold time of a given room."""

    time_constant_s: float = RATE_TIME_CONSTANT_S
    rate: float = 0.0
    _last: tuple[float, int] | None = None
    _start: float = 0.0

    def observe(self, now: float, written_bytes: int) -> float:
        """Take the total bytes written so far at ``now`` (monotonic seconds); the rate.

        Until a time constant has passed the rate is the mean since the first observation (an
        average that starts at 0 would promise a long hold for the first minutes)."""
        if self._last is None:
            self._start = now
        else:
            t, w = self._last
            dt = now - t
            if dt <= 0:
                return self.rate
            alpha = max(1.0 - math.exp(-dt / self.time_constant_s), dt / (now - self._start))
            self.rate += alpha * (max(0, written_bytes - w) / dt - self.rate)
        self._last = (now, written_bytes)
        return self.rate

    def seconds(self, room_bytes: int | None) -> float:
        """The room at the current rate: inf with no input, NaN when the room is unknown."""
        if room_bytes is None:
            return math.nan
        if self.rate <= 0:
            return math.inf
        return max(0, room_bytes) / self.rate


def room(used_memory: int, maxmemory: int, high_watermark: float, spool_free: int) -> int | None:
    """Bytes the backlog may still take: Redis up to the high watermark, then the spool.

    None without a maxmemory (Redis would grow until the host runs out: no bound to report)."""
    if maxmemory <= 0:
        return None
    return max(0, int(high_watermark * maxmemory) - used_memory) + max(0, spool_free)
