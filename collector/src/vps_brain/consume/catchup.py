"""Live first after an outage: the live feed follows the streams' newest entries while the group
drains the backlog behind it, within a bandwidth budget.

When the Brain has been away (a home outage, a cut tunnel), the consumer group is hours behind.
Reading in order, the store needs every entry; a strategy needs the newest. So, per stream:

* :class:`CatchUp` decides, from the group's lag at every probe, whether the stream is *live*
  (the group is at the head: the group's reads feed the live feed, as always) or *catching up*
  (more than ``live_first_entries`` undelivered, or undelivered entries while the last delivered
  one is older than ``live_first_s``). It leaves catch-up once the group is within one read of
  the head.
* :class:`TailReader` reads the catching-up streams from their newest entry on (``XREAD``, no
  group, its own connection), and hands what it reads to the live feed at once.
* The consumer hands an entry to the live feed only if its id is above the highest id the feed
  has had for that stream (from either path), so the live feed has each entry at most once and in
  id order: backlog entries the tail has overtaken go to the store only.
* :class:`ByteBudget` caps the group's reads while any stream is catching up, so the backlog
  uses only what the home link has left over live traffic; the tail is never throttled.

Bytes are counted as the entries' field values, which is what crosses the tunnel (frames are
already compressed), less Redis' protocol framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vps_brain.backoff import Backoff
from vps_brain.config import RedisSettings
from vps_brain.frame import StreamId, parse_id
from vps_brain.redisclient import async_client

log = logging.getLogger("vps_brain.consume.catchup")

Entries = Sequence[tuple[bytes, Mapping[bytes, bytes]]]


def entry_bytes(entries: Entries) -> int:
    """What ``entries`` weigh on the wire: the sum of their field values."""
    return sum(len(v) for _, fields in entries for v in fields.values())


class ByteBudget:
    """A token bucket in bytes per second (``rate`` 0: no limit).

    A read is paid for after it is made (its size is known then), so the bucket may go into debt
    by one read; :meth:`wait_s` says how long until the debt is paid. The bucket holds at most one
    second of tokens, so an idle spell is not followed by a burst above the budget."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = rate
        self._t = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._t) * self.rate)
        self._t = now

    def wait_s(self) -> float:
        if self.rate <= 0:
            return 0.0
        self._refill()
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def spend(self, n: int) -> None:
        if self.rate > 0:
            self._refill()
            self._tokens -= n


@dataclass
class StreamState:
    catching_up: bool = False
    behind_entries: int = 0  # undelivered to the group at the last probe
    behind_s: float = 0.0  # age of the last entry the group was given, if any is undelivered
    since: float = 0.0  # wall time catch-up began

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": "catching_up" if self.catching_up else "live",
            "behind_entries": self.behind_entries,
            "behind_s": round(self.behind_s, 3),
            "since": round(self.since, 3) if self.catching_up else None,
        }


class CatchUp:
    """Which streams are catching up, from the group's lag (see the module's docstring)."""

    def __init__(self, max_entries: int, max_s: float, head_entries: int) -> None:
        self.max_entries = max_entries
        self.max_s = max_s
        self.head_entries = head_entries  # within this many of the head counts as caught up
        self.streams: dict[str, StreamState] = {}

    def update(self, key: str, lag: int, last_delivered: StreamId, now_ms: int) -> bool:
        """Record a probe of ``key``; True if the stream changed mode."""
        st = self.streams.setdefault(key, StreamState())
        age_s = max(0.0, (now_ms - last_delivered[0]) / 1000) if last_delivered[0] else 0.0
        st.behind_entries = lag
        st.behind_s = age_s if lag > 0 else 0.0
        if st.catching_up:
            if lag <= self.head_entries:
                st.catching_up = False
                return True
            return False
        if lag > self.max_entries or (lag > self.head_entries and st.behind_s > self.max_s):
            st.catching_up = True
            st.since = time.time()
            return True
        return False

    def is_catching_up(self, key: str) -> bool:
        st = self.streams.get(key)
        return st is not None and st.catching_up

    @property
    def any(self) -> bool:
        return any(st.catching_up for st in self.streams.values())

    @property
    def catching_up(self) -> list[str]:
        return sorted(k for k, st in self.streams.items() if st.catching_up)


class TailReader:
    """Reads the newest entries of the followed streams, apart from the consumer group.

    ``on_entries(key, entries)`` gets what it reads, in id order; a stream newly followed starts
    with its newest entry. Its own connection; a lost one is retried with capped backoff."""

    def __init__(
        self,
        redis_cfg: RedisSettings,
        on_entries: Callable[[str, Entries], None],
        *,
        block_ms: int = 200,
        count: int = 1000,
        retry_min_s: float = 0.1,
        retry_max_s: float = 5.0,
    ) -> None:
        self.redis_cfg = redis_cfg
        self.on_entries = on_entries
        self.block_ms = block_ms
        self.count = count
        self._backoff = Backoff(retry_min_s, retry_max_s)
        self._pos: dict[str, str] = {}  # followed stream -> last id read ("" = not started)
        self._task: asyncio.Task[None] | None = None
        self.entries = 0
        self.bytes = 0

    def follow(self, keys: Sequence[str]) -> None:
        """Tail exactly ``keys`` (start or stop the task as needed)."""
        wanted = set(keys)
        for k in list(self._pos):
            if k not in wanted:
                del self._pos[k]
        for k in wanted:
            self._pos.setdefault(k, "")
        if wanted and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._run(), name="live-tail")

    @property
    def following(self) -> list[str]:
        return sorted(self._pos)

    async def close(self) -> None:
        task, self._task = self._task, None
        self._pos.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while self._pos:
            r = async_client(self.redis_cfg)
            try:
                while self._pos:
                    await self._read(r)
                    self._backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the tail is best effort: the group reads everything
                delay = self._backoff.next()
                log.warning(
                    "live tail read failed, retrying",
                    extra={"fields": {"error": repr(exc), "retry_in_s": round(delay, 3)}},
                )
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(Exception):
                    await r.aclose()

    async def _read(self, r: Any) -> None:
        for key, pos in list(self._pos.items()):
            if pos:
                continue
            newest: Any = await r.xrevrange(key, count=1)
            if newest:
                self._deliver(key, newest)
            else:
                self._pos[key] = "0-0"
        if not self._pos:
            return
        resp: Any = await r.xread(dict(self._pos), count=self.count, block=self.block_ms)
        for key_raw, entries in resp or []:
            key = key_raw.decode() if isinstance(key_raw, bytes) else key_raw
            if key in self._pos and entries:
                self._deliver(key, entries)

    def _deliver(self, key: str, entries: Entries) -> None:
        last = entries[-1][0]
        self._pos[key] = last.decode() if isinstance(last, bytes) else str(last)
        self.entries += len(entries)
        self.bytes += entry_bytes(entries)
        self.on_entries(key, entries)


def newer_than(entries: Entries, upto: StreamId) -> list[tuple[bytes, Mapping[bytes, bytes]]]:
    """The entries with fields whose ids are above ``upto``."""
    return [(eid, f) for eid, f in entries if f and parse_id(eid) > upto]
