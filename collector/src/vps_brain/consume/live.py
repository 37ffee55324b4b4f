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

Both are best effort and never cost the store: the consumer only queues entries for the
:class:`LivePublisher` task (bounded, never blocking), so a full (OOM), refusing, slow or hung
local Redis loses live entries (counted in ``vps_brain_consumer_live_lost_total``, logged at
most once per interval) and nothing else: storing and acknowledging go on, in order, unslowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypeAlias

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from vps_brain.backoff import Backoff
from vps_brain.config import redact_url
from vps_brain.consume.metrics import ConsumerMetrics
from vps_brain.frame import Decoder, FrameError, Record
from vps_brain.redisclient import async_client

log = logging.getLogger("vps_brain.consume.live")

SOURCE_ID_FIELD = b"src"

#: What the consumer hands the publisher: (VPS stream key, entry id, the entry's wire fields).
_Item: TypeAlias = tuple[str, bytes, Mapping[bytes, bytes]]


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
        #: Per stream: live or catching up, and how far behind the store is (as :func:`live_state`).
        self.state: dict[str, dict[str, Any]] = {}

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


class LiveReport:
    """What the live feed lost, logged at most once per ``interval_s``.

    Every failed publish and every overflow is counted here; a line is written when the
    interval since the previous line has passed, with the counts since that line: the first
    failure of an outage is logged at once, a flood of them is one line per interval, and the
    return to health is one line (INFO) with what was lost since the last one.
    """

    def __init__(
        self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last_line: float | None = None
        self._failing = False
        self._errors = 0  # failed publishes since the last line
        self._lost = 0  # entries not published since the last line
        self._error: BaseException | None = None  # the last failure

    def failed(self, exc: BaseException, lost: int) -> None:
        """A publish failed (an error answered, a timeout, a lost connection)."""
        self._failing = True
        self._errors += 1
        self._lost += lost
        self._error = exc
        self._maybe_log()

    def overflow(self, lost: int) -> None:
        """Entries dropped unpublished because the publisher is behind (a slow live Redis)."""
        self._lost += lost
        self._maybe_log()

    def ok(self) -> None:
        """A publish succeeded: say so once after failures, with what was lost since."""
        if self._failing:
            self._maybe_log(recovered=True)
        elif self._lost:
            self._maybe_log()

    def _maybe_log(self, recovered: bool = False) -> None:
        now = self._clock()
        if self._last_line is not None and now - self._last_line < self.interval_s:
            return
        fields: dict[str, object] = {
            "lost_entries": self._lost,
            "errors_since_last_report": self._errors,
        }
        if recovered:
            self._failing = False
            log.info("live feed publishing again", extra={"fields": fields})
        elif self._errors:
            fields["error"] = repr(self._error)
            log.warning(
                "live feed publish failed; the store goes on, these entries are not on the "
                "live feed",
                extra={"fields": fields},
            )
        elif self._lost:
            log.warning(
                "live feed falling behind: entries dropped unpublished", extra={"fields": fields}
            )
        else:
            return
        self._last_line = now
        self._errors = self._lost = 0


class LivePublisher:
    """Re-publishes VPS entries to the Brain's local Redis, best effort, from its own task.

    Invariants (the store is the exactly-once record; the live feed must never cost it):

    * :meth:`offer` never blocks, never raises and never waits for the live Redis: it queues the
      entries for the publisher task (one pipeline per offer, in order). The queue is bounded
      (``max_queued_entries``, ``max_queued_bytes``); when it is full the oldest entries are
      dropped, counted (a strategy wants the newest data).
    * One publish holds the live Redis at most ``publish_timeout_s`` (connect, send, replies);
      the client has a socket and a connect timeout and does not retry by itself.
    * Any failure (an error reply such as OOM, a refused or lost connection, a timeout) loses
      that pipeline's entries (counted, never retried: the entries are in the store), drops the
      connection unless the failure was an error reply, and backs off (capped, jittered) before
      the next publish.
    * Failures and losses are counted in ``metrics`` and logged by :class:`LiveReport`.
    """

    def __init__(
        self,
        url: str,
        *,
        # Where entries go on the live Redis: stream ``prefix + key``, capped at ``maxlen``.
        prefix: str = "live:",
        maxlen: int = 100_000,
        # Bounds on the live Redis: nothing waits for it longer than this.
        socket_timeout_s: float = 1.0,
        connect_timeout_s: float = 1.0,
        publish_timeout_s: float = 2.0,
        # The queue between the consumer and the publisher task.
        max_queued_entries: int = 20_000,
        max_queued_bytes: int = 64 * 1024**2,
        # After a failure, wait this long (exponential, jittered) before the next publish.
        retry_min_s: float = 0.05,
        retry_max_s: float = 2.0,
        # Reporting.
        metrics: ConsumerMetrics | None = None,
        report_interval_s: float = 10.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.maxlen = maxlen
        self.socket_timeout_s = socket_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.publish_timeout_s = publish_timeout_s
        self.max_queued_entries = max_queued_entries
        self.max_queued_bytes = max_queued_bytes
        self.metrics = metrics
        self.report = LiveReport(report_interval_s)
        self._backoff = Backoff(retry_min_s, retry_max_s)
        self._redis: aioredis.Redis | None = None
        self._queue: deque[tuple[list[_Item], int]] = deque()  # (entries, bytes)
        self._queued_entries = 0
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._state: dict[str, str] = {}  # stream -> JSON, waiting to be written
        self.published = 0  # entries
        self.errors = 0  # failed publishes
        self.lost = 0  # entries not published

    def offer(self, items: Iterable[_Item]) -> None:
        """Queue ``(stream, entry id, fields)`` for publication; never blocks, never raises."""
        batch = list(items)
        if not batch:
            return
        size = sum(len(v) for _, _, fields in batch for v in fields.values())
        self._queue.append((batch, size))
        self._queued_entries += len(batch)
        self._queued_bytes += size
        dropped = 0
        while len(self._queue) > 1 and (
            self._queued_entries > self.max_queued_entries
            or self._queued_bytes > self.max_queued_bytes
        ):
            old, old_size = self._queue.popleft()
            self._queued_entries -= len(old)
            self._queued_bytes -= old_size
            dropped += len(old)
        if dropped:
            self._lose(dropped, "overflow")
            self.report.overflow(dropped)
        if self.metrics is not None:
            self.metrics.live_queued.set(self._queued_entries)
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="live-publisher")

    def offer_state(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        """Queue each stream's state for the hash ``prefix + "state"`` (the newest wins; written
        when no entries wait, best effort like the entries)."""
        self._state.update({k: json.dumps(v, sort_keys=True) for k, v in states.items()})
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="live-publisher")

    async def idle(self) -> None:
        """Wait until everything offered is published or given up on."""
        await self._idle.wait()

    async def close(self, drain_s: float | None = None) -> None:
        """Publish what is queued for at most ``drain_s`` (default: one publish timeout), then
        stop the publisher task and close the connection. Bounded, whatever the live Redis does."""
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.publish_timeout_s if drain_s is None else drain_s):
                    await self._idle.wait()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._disconnect()

    # ------------------------------------------------------------------------ publisher task

    async def _run(self) -> None:
        while True:
            if not self._queue and self._state:
                state, self._state = self._state, {}
                try:
                    async with asyncio.timeout(self.publish_timeout_s):
                        mapping: dict[Any, Any] = dict(state)
                        await self._connection().hset(self.prefix + "state", mapping=mapping)
                except Exception as exc:  # best effort, as the entries
                    self._failed(exc, 0, _reason(exc))
                    await self._disconnect()
                continue
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, size = self._queue.popleft()
            self._queued_entries -= len(batch)
            self._queued_bytes -= size
            if self.metrics is not None:
                self.metrics.live_queued.set(self._queued_entries)
            try:
                failed = await self._publish(batch)
            except Exception as exc:  # best effort: nothing may escape to the consumer
                self._failed(exc, len(batch), _reason(exc))
                await self._disconnect()  # cut mid-pipeline: the connection's state is unknown
                await asyncio.sleep(self._backoff.next())
                continue
            if failed is not None:
                self._failed(failed[0], failed[1], "error")
                await asyncio.sleep(self._backoff.next())
                continue
            self._backoff.reset()
            self.report.ok()

    async def _publish(self, batch: Sequence[_Item]) -> tuple[BaseException, int] | None:
        """One pipeline of XADDs, bounded by ``publish_timeout_s``; returns the first error
        reply and how many entries were refused, or None if all were published."""
        started = time.perf_counter()
        async with asyncio.timeout(self.publish_timeout_s):
            pipe = self._connection().pipeline(transaction=False)
            for stream, entry_id, fields in batch:
                out: dict[Any, Any] = dict(fields)
                out[SOURCE_ID_FIELD] = entry_id
                pipe.xadd(self.prefix + stream, out, maxlen=self.maxlen, approximate=True)
            results = await pipe.execute(raise_on_error=False)
        errors = [r for r in results if isinstance(r, BaseException)]
        self.published += len(results) - len(errors)
        if self.metrics is not None:
            self.metrics.live_published.inc(len(results) - len(errors))
            self.metrics.live_publish_seconds.observe(time.perf_counter() - started)
        return (errors[0], len(errors)) if errors else None

    def _connection(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = async_client(
                self.url,
                socket_timeout_s=self.socket_timeout_s,
                connect_timeout_s=self.connect_timeout_s,
                retries=0,  # our backoff, not one hidden in the client
            )
        return self._redis

    def _failed(self, exc: BaseException, lost: int, reason: str) -> None:
        self.errors += 1
        if self.metrics is not None:
            self.metrics.live_errors.inc()
        self._lose(lost, reason)
        self.report.failed(exc, lost)

    def _lose(self, n: int, reason: str) -> None:
        self.lost += n
        if self.metrics is not None:
            self.metrics.live_lost.labels(reason).inc(n)

    async def _disconnect(self) -> None:
        r, self._redis = self._redis, None
        if r is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.connect_timeout_s):
                    await r.aclose()


def _reason(exc: BaseException) -> str:
    """The ``reason`` label of ``live_lost`` for a publish that raised."""
    if isinstance(exc, TimeoutError | RedisTimeoutError):
        return "timeout"
    if isinstance(exc, RedisConnectionError | OSError):
        return "connection"
    return "error"


async def live_state(url: str, *, prefix: str = "live:") -> dict[str, dict[str, Any]]:
    """Per VPS stream, what the consumer last said of it: ``mode`` (``live``, or ``catching_up``
    while the live feed follows the newest entries and the store drains the backlog),
    ``behind_entries`` and ``behind_s`` (how far behind the store is), ``since`` (when catch-up
    began, Unix time). Streams never behind may be absent."""
    r = async_client(url)
    try:
        raw: Any = await r.hgetall(prefix + "state")
    finally:
        await r.aclose()
    return {_text(k): json.loads(v) for k, v in raw.items()}


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


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
    r = async_client(url)
    decoder = Decoder()
    try:
        if streams is None:
            keys = [k.decode() async for k in r.scan_iter(match=prefix + "*", _type="STREAM")]
            streams = [k[len(prefix) :] for k in keys]
        if not streams:
            raise ValueError(f"no live streams match {prefix}* at {redact_url(url)}")
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
