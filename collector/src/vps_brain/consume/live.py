"""The live feed for strategies on the Brain.

The consumer hands every entry to the live feed as soon as it is read, before it is stored (the
store is the exactly-once record; the live feed is for low latency). Two ways to listen:

* other processes: the consumer re-publishes each entry's wire fields, unchanged, to the Brain's
  local Redis as stream ``live:<vps stream key>`` (capped with ``MAXLEN ~``); a strategy iterates
  them with :func:`live_records`::

      async for item in live_records("redis://127.0.0.1:6379/0", ["md:binance:ethusdt"]):
          item.record.recv_ns, item.record.payload   # decoded with vps_brain.frame

* in the consumer's own process: :meth:`LiveHub.subscribe` gives an async iterator over a bounded
  queue (a slow subscriber loses its oldest items, counted, never blocks the consumer).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis

from vps_brain.frame import Decoder, FrameError, Record

SOURCE_ID_FIELD = b"src"


class LiveRecord(NamedTuple):
    stream: str  # the VPS stream key, e.g. md:binance:ethusdt
    entry_id: bytes  # id of the entry in the VPS stream
    record: Record


class Subscription:
    """An in-process live subscription: ``async for item in sub``; ``dropped`` counts losses."""

    def __init__(self, hub: LiveHub, maxsize: int) -> None:
        self._hub = hub
        self.queue: asyncio.Queue[LiveRecord] = asyncio.Queue(maxsize)
        self.dropped = 0

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> LiveRecord:
        return await self.queue.get()

    def close(self) -> None:
        self._hub.unsubscribe(self)


class LiveHub:
    """Fan-out of live records to in-process subscribers (bounded, drop-oldest)."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self.dropped = 0

    def subscribe(self, maxsize: int = 100_000) -> Subscription:
        sub = Subscription(self, maxsize)
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    @property
    def active(self) -> bool:
        return bool(self._subs)

    def publish(self, stream: str, entry_id: bytes, records: Sequence[Record]) -> int:
        """Hand records to every subscriber; returns how many items were dropped."""
        dropped = 0
        for sub in self._subs:
            q = sub.queue
            for rec in records:
                item = LiveRecord(stream, entry_id, rec)
                if q.full():
                    q.get_nowait()
                    sub.dropped += 1
                    dropped += 1
                q.put_nowait(item)
        self.dropped += dropped
        return dropped


class LivePublisher:
    """Re-publishes VPS entries to the Brain's local Redis, one pipeline per read."""

    def __init__(self, url: str, prefix: str = "live:", maxlen: int = 100_000) -> None:
        self.url = url
        self.prefix = prefix
        self.maxlen = maxlen
        self._redis: aioredis.Redis | None = None

    async def publish(self, items: Iterable[tuple[str, bytes, Mapping[bytes, bytes]]]) -> int:
        """XADD each ``(stream, entry id, fields)``; returns the number published."""
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(self.url)
        pipe = self._redis.pipeline(transaction=False)
        n = 0
        for stream, entry_id, fields in items:
            out: dict[Any, Any] = dict(fields)
            out[SOURCE_ID_FIELD] = entry_id
            pipe.xadd(self.prefix + stream, out, maxlen=self.maxlen, approximate=True)
            n += 1
        if n:
            await pipe.execute()
        return n

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


async def live_records(
    url: str,
    streams: Sequence[str] | None = None,
    *,
    prefix: str = "live:",
    start: str = "$",
    block_ms: int = 1000,
    count: int = 1000,
) -> AsyncIterator[LiveRecord]:
    """Iterate the live feed of ``streams`` (VPS keys; default: every ``live:*`` stream).

    ``start="$"`` yields only what arrives from now on; ``"0"`` replays what the capped live
    stream still holds. Entries that fail to decode are skipped (the store has them).
    """
    r = aioredis.Redis.from_url(url)
    decoder = Decoder()
    try:
        if streams is None:
            keys = [k.decode() async for k in r.scan_iter(match=prefix + "*", _type="STREAM")]
            streams = [k[len(prefix) :] for k in keys]
        if not streams:
            raise ValueError(f"no live streams match {prefix}* at {url}")
        last: dict[str, str] = {prefix + s: start for s in streams}
        while True:
            resp: Any = await r.xread(last, count=count, block=block_ms)  # type: ignore[arg-type]
            for key, entries in resp or []:
                k = key.decode() if isinstance(key, bytes) else key
                for eid, fields in entries:
                    last[k] = eid.decode() if isinstance(eid, bytes) else eid
                    src = fields.get(SOURCE_ID_FIELD, b"")
                    try:
                        records = decoder.decode(fields)
                    except FrameError:
                        continue
                    for rec in records:
                        yield LiveRecord(k[len(prefix) :], src, rec)
    finally:
        await r.aclose()
