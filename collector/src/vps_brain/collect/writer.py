"""Records -> batches -> Redis, with the disk spool when Redis is full, refusing or gone.

* :class:`Batcher` groups records per stream key and closes a batch on count, bytes or age
  (``batch_max_delay_ms``); each batch becomes one entry (or one entry per record in plain
  framing) with an explicit, increasing entry id ``<ms>-<seq>`` assigned here.
* :class:`RedisWriter` owns the order: one task sends closed batches in a MULTI/EXEC pipeline.
  Redis refuses a whole transaction on OOM (EXECABORT), so an OOM refusal never splits a round.
  While Redis is above its memory high-watermark, refuses (OOM) or is unreachable, batches go to
  the :class:`Spool` in order, and whenever the spool is not empty new batches go behind it; the
  spool drains back first when Redis has room again.
* Ids and order. A runtime error inside EXEC does *not* abort the other commands: an XADD
  refused for its id would let the entries after it land first. So no XADD may fail on its id:
  the writer is the only writer of its streams and knows each stream's last id (read from Redis
  at start and again whenever an outcome was unknown, then kept from its own writes). Before a
  round, an entry at or below that id is either already in the stream (same id *and* fields: an
  earlier attempt whose reply was lost; skipped, so a re-send is idempotent) or stale (ids given
  while the writer did not know the stream, e.g. Redis down at start with the clock behind it):
  that entry and every later entry of the same stream in the round get new ids, in receive
  order, past the stream's last id. Records therefore reach each stream in receive order, once.
  A drained round keeps its new ids in memory until its spool items are committed.
* The in-memory queue is bounded: :meth:`RedisWriter.wait_room` is the backpressure receivers
  await. Nothing is ever dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ExecAbortError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from vps_brain.backoff import Backoff
from vps_brain.collect import hold
from vps_brain.collect.spool import Batch, Entry, Spool, SpoolFull
from vps_brain.collect.stats import CollectorStats
from vps_brain.frame import HEADER, BatchEncoder, Kind, Record, encode_plain, parse_id

log = logging.getLogger("vps_brain.collect.writer")

DRAIN_CHUNK_BYTES = 4 * 1024 * 1024
#: The smallest drained round (bytes of spool; a batch larger than this is still read whole).
DRAIN_MIN_BYTES = 64 * 1024
ROUND_MAX_BATCHES = 256


class IdGen:
    """Strictly increasing stream entry ids per key, from the wall clock."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[int, int]] = {}

    def seed(self, key: str, entry_id: bytes | str | tuple[int, int]) -> None:
        """Never give ``key`` an id at or below ``entry_id`` again."""
        cur = entry_id if isinstance(entry_id, tuple) else parse_id(entry_id)
        if cur > self.last.get(key, (0, 0)):
            self.last[key] = cur

    def next(self, key: str) -> bytes:
        ms = time.time_ns() // 1_000_000
        last = self.last.get(key)
        cur = (last[0], last[1] + 1) if last is not None and ms <= last[0] else (ms, 0)
        self.last[key] = cur
        return b"%d-%d" % cur


class _Open:
    __slots__ = ("count", "first_mono", "handle", "nbytes", "parts", "records")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.records: list[Record] = []
        self.count = 0
        self.nbytes = 0
        self.first_mono = 0.0
        self.handle: asyncio.TimerHandle | None = None


class Batcher:
    """Per-key open batches closed on count, bytes or age."""

    def __init__(
        self,
        writer: RedisWriter,
        *,
        # The shape of an entry (docs/frame-format.md).
        framing: str = "batch",
        codec: str = "zstd",
        level: int | None = None,
        # A batch closes at the first of these.
        max_records: int = 2000,
        max_bytes: int = 1024 * 1024,
        max_delay_ms: float = 5.0,
    ) -> None:
        self.writer = writer
        self.plain = framing == "plain"
        self.encoder = BatchEncoder(codec, level)
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.delay = max_delay_ms / 1000.0
        self.open: dict[str, _Open] = {}
        self.ids = writer.ids
        self._pack = HEADER.pack

    def add(self, key: str, recv_ns: int, kind: int, payload: bytes) -> None:
        b = self.open.get(key)
        if b is None:
            b = self.open[key] = _Open()
            b.first_mono = time.monotonic()
            b.handle = asyncio.get_running_loop().call_later(self.delay, self.flush_key, key)
        size = len(payload)
        if self.plain:
            b.records.append(Record(recv_ns, Kind(kind), payload))
        else:
            b.parts.append(self._pack(recv_ns, kind, size))
            b.parts.append(payload)
        b.count += 1
        b.nbytes += size + 13
        self.writer.queued_records += 1
        if b.count >= self.max_records or b.nbytes >= self.max_bytes:
            self.flush_key(key)

    def flush_key(self, key: str) -> None:
        b = self.open.get(key)
        if b is None or b.count == 0:
            return
        if b.handle is not None:
            b.handle.cancel()
        del self.open[key]
        if self.plain:
            entries = [Entry(self.ids.next(key), encode_plain(r)) for r in b.records]
        else:
            fields = self.encoder.encode_raw(b"".join(b.parts), b.count)
            entries = [Entry(self.ids.next(key), fields)]
        self.writer.submit(Batch(key, entries, b.count, b.first_mono, b.nbytes))

    def flush_all(self) -> None:
        for key in list(self.open):
            self.flush_key(key)


def _is_oom(exc: BaseException) -> bool:
    text = str(exc)
    return "OOM" in text or "EXECABORT" in text or "maxmemory" in text


def _is_dup_id(exc: BaseException) -> bool:
    return "equal or smaller than the target stream top item" in str(exc)


def _is_no_key(exc: BaseException) -> bool:
    return "no such key" in str(exc)


class RedisWriter:
    """The single ordered path from closed batches to Redis (or the spool)."""

    def __init__(
        self,
        client: aioredis.Redis,
        spool: Spool,
        *,
        stats: CollectorStats,
        # Backpressure: the in-memory queue's bound.
        queue_max_records: int = 200_000,
        # Spill to the spool above high, drain back below low (fractions of maxmemory).
        high_watermark: float = 0.85,
        low_watermark: float = 0.70,
        memory_check_interval_s: float = 1.0,
        # Retrying an unreachable Redis.
        backoff_max_s: float = 5.0,
    ) -> None:
        self.r = client
        self.spool = spool
        self.stats = stats
        self.queue: deque[Batch] = deque()
        self.queued_records = 0
        self.queue_max_records = queue_max_records
        self.high = high_watermark
        self.low = low_watermark
        self.check_interval = memory_check_interval_s
        self.backoff_max_s = backoff_max_s
        self.backoff = Backoff(0.025, backoff_max_s)
        self.ids = IdGen()
        #: Each stream's last id as far as this writer knows (it is the streams' only writer).
        self.top: dict[str, tuple[int, int]] = {}
        #: Streams whose last id must be read again before the next round (an unknown outcome).
        self._unsure: set[str] = set()
        #: A drained round not yet committed: re-sent as is (with any new ids) until it is.
        self._draining: tuple[list[Batch], tuple[int, int]] | None = None
        self.spilling = False  # memory above the high watermark (or OOM seen)
        #: Bytes a drained round may take: half the room below the high watermark at the last
        #: memory check. A round larger than Redis's room is refused whole and re-sent as is,
        #: for ever (seen with a small maxmemory and a large backlog).
        self.drain_bytes = DRAIN_CHUNK_BYTES
        self.healthy = True
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        #: Called with True when the queue fills up and False when it has room again.
        self.on_full: Callable[[bool], None] = lambda _full: None
        self._idle = asyncio.Event()
        self._idle.set()
        self._retry_at = 0.0
        self.keys: set[str] = set()
        #: The input rate and the hold time of the room left (memory_loop).
        self.hold = hold.HoldEstimate()

    # ------------------------------------------------------------------------ interface
    def submit(self, batch: Batch) -> None:
        self.queue.append(batch)
        self.keys.add(batch.key)
        self._idle.clear()
        self._wake.set()
        if self.queued_records >= self.queue_max_records and self._room.is_set():
            self._room.clear()
            self.on_full(True)

    @property
    def full(self) -> bool:
        return not self._room.is_set()

    async def wait_room(self) -> None:
        await self._room.wait()

    async def wait_idle(self) -> None:
        """Until the queue is empty and everything sits in Redis (or in the spool)."""
        await self._idle.wait()

    async def seed_ids(self, keys: Iterable[str]) -> None:
        """Start entry ids after each stream's last generated id (survives trimming)."""
        for key in keys:
            try:
                info = await self.r.xinfo_stream(key)
            except ResponseError as exc:
                if _is_no_key(exc):
                    self.top[key] = (0, 0)  # no such stream yet
                continue
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning(
                    "cannot read last ids from Redis (%s): using the clock, "
                    "checked against each stream before its first write",
                    exc,
                )
                return
            self._learn_top(key, info["last-generated-id"])

    def _learn_top(self, key: str, entry_id: bytes | str) -> None:
        top = self.top[key] = parse_id(entry_id)
        self.ids.seed(key, top)
        self._unsure.discard(key)

    # ----------------------------------------------------------------------------- tasks
    async def run(self) -> None:
        while True:
            if not self.queue and not (len(self.spool) and self._may_drain()):
                if not self.queue and not len(self.spool):
                    self._idle.set()
                self._wake.clear()
                timeout = None
                if len(self.spool):
                    timeout = 0.2
                    if not self.healthy:
                        timeout = max(0.01, self._retry_at - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            batches: list[Batch] = []
            while self.queue and len(batches) < ROUND_MAX_BATCHES:
                batches.append(self.queue.popleft())
            try:
                if not batches:
                    await self._drain_once()
                    continue
                if len(self.spool) or self.spilling or not self.healthy:
                    await self._to_spool(batches)
                    batches_done, batches = batches, []
                    self._release(batches_done)
                    if self._may_drain():
                        await self._drain_once()
                elif not await self._send(batches):
                    await self._to_spool(batches)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Never drop: put the round back in front (ids make a repeat harmless).
                log.exception("writer round failed; retrying")
                self.queue.extendleft(reversed(batches))
                self._unsure.update(b.key for b in batches)
                if self._draining is not None:
                    self._unsure.update(b.key for b in self._draining[0])
                self._fail("writer round failed")
                await asyncio.sleep(max(0.0, self._retry_at - time.monotonic()))
                continue
            self._release(batches)

    def _release(self, batches: list[Batch]) -> None:
        self.queued_records -= sum(b.records for b in batches)
        self.stats.queued_records = self.queued_records
        if self.queued_records < self.queue_max_records * 0.8 and not self._room.is_set():
            self._room.set()
            self.on_full(False)

    def _may_drain(self) -> bool:
        return not self.spilling and (self.healthy or time.monotonic() >= self._retry_at)

    async def _to_spool(self, batches: list[Batch]) -> None:
        backoff = Backoff(0.05, 0.5)
        while True:
            try:
                await asyncio.to_thread(self.spool.append, batches)
                break
            except (SpoolFull, OSError) as exc:
                if self._room.is_set():
                    self._room.clear()
                    self.on_full(True)
                log.error("spool refused (%s): holding batches in memory, backpressure on", exc)
                if self._may_drain():
                    await self._drain_once()
                else:
                    await asyncio.sleep(backoff.next())
        self.stats.spooled_batches += len(batches)
        self._update_spool_stats()

    def _update_spool_stats(self) -> None:
        self.stats.spool_batches = len(self.spool)
        self.stats.spool_bytes = self.spool.size if len(self.spool) else 0

    async def _drain_once(self) -> None:
        if self._draining is None:
            batches, cursor = await asyncio.to_thread(self.spool.read, self.drain_bytes)
            if not batches:
                await asyncio.to_thread(self.spool.commit, cursor, 0)
                return
            self._draining = (batches, cursor)
        batches, cursor = self._draining
        if await self._send(batches, drained=True):
            self._draining = None
            await asyncio.to_thread(self.spool.commit, cursor, len(batches))
            self.stats.drained_batches += len(batches)
            if not len(self.spool):
                log.info("spool drained: writing to Redis directly again")
        self._update_spool_stats()

    async def _send(self, batches: list[Batch], drained: bool = False) -> bool:
        """One MULTI/EXEC round; True when every entry is in Redis, in receive order."""
        keys = set(b.key for b in batches)
        try:
            plan = await self._plan(batches)
            async with self.r.pipeline(transaction=True) as pipe:
                for key, e in plan:
                    pipe.xadd(key, e.fields, id=e.id)  # type: ignore[arg-type]
                results = await pipe.execute(raise_on_error=False) if plan else []
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self._unsure.update(keys)  # the round may or may not be in
            self._fail(f"Redis unreachable: {exc}")
            return False
        except (ExecAbortError, ResponseError) as exc:
            if _is_oom(exc):
                self._set_spilling(True, f"Redis refused writes: {str(exc)[:160]}")
            else:
                self._unsure.update(keys)
                self._fail(f"Redis error: {str(exc)[:160]}")
            return False
        last: dict[str, bytes] = {}
        failed = False
        for (key, e), res in zip(plan, results, strict=True):
            if not isinstance(res, Exception):
                last[key] = e.id
                continue
            failed = True
            self._unsure.add(key)
            if _is_oom(res):
                self._set_spilling(True, str(res)[:160])
            elif _is_dup_id(res):
                # Cannot happen while this writer is the stream's only writer: say so loudly.
                self._fail(f"XADD to {key} refused id {e.id!r}: does something else write here?")
            else:
                self._fail(f"XADD to {key} failed: {str(res)[:160]}")
        if failed:
            return False
        for key, eid in last.items():
            self.top[key] = parse_id(eid)
        now = time.monotonic()
        for b in batches:
            self.stats.records_out[b.key] += b.records
            self.stats.entries_out[b.key] += len(b.entries)
            self.stats.bytes_out[b.key] += sum(
                len(k) + len(v) for e in b.entries for k, v in e.fields.items()
            )
            if not drained and b.first_mono:
                self.stats.batch_latency.observe(now - b.first_mono)
        if not self.healthy:
            log.info("Redis reachable again")
        self.healthy = True
        self.backoff.reset()
        return True

    async def _plan(self, batches: list[Batch]) -> list[tuple[str, Entry]]:
        """The XADDs of a round, none of which can fail on its id (see the module docstring)."""
        keys = dict.fromkeys(b.key for b in batches)
        unknown = [k for k in keys if k in self._unsure or k not in self.top]
        if unknown:
            await self._read_tops(unknown)
        top = self.top
        running = {k: top[k] for k in keys}
        # Common case: each batch's first id is past the last one; ids inside a batch increase.
        slow: set[str] = set()
        for b in batches:
            if not b.entries or b.key in slow:
                continue
            if parse_id(b.entries[0].id) <= running[b.key]:
                slow.add(b.key)  # this batch and every later one of its stream
            else:
                running[b.key] = parse_id(b.entries[-1].id)
        if not slow:
            return [(b.key, e) for b in batches for e in b.entries]
        return await self._plan_slow(batches, slow)

    async def _plan_slow(self, batches: list[Batch], slow: set[str]) -> list[tuple[str, Entry]]:
        top = self.top
        candidates = [
            (b.key, e)
            for b in batches
            if b.key in slow
            for e in b.entries
            if parse_id(e.id) <= top[b.key]
        ]
        present = await self._present(candidates)
        running = {k: top[k] for k in {b.key for b in batches}}
        renumbering: set[str] = set()
        plan: list[tuple[str, Entry]] = []
        for b in batches:
            key = b.key
            for e in b.entries:
                cur = parse_id(e.id)
                if key in slow and key not in renumbering:
                    if cur <= top[key] and id(e) in present:
                        continue  # in Redis already: an earlier attempt's reply was lost
                    if cur <= running[key]:
                        renumbering.add(key)
                        log.warning(
                            "entry id %s of %s is not past the stream's last id %d-%d: "
                            "renumbering it and the rest of the round in receive order",
                            e.id.decode(),
                            key,
                            *running[key],
                        )
                if key in renumbering:
                    self.ids.seed(key, running[key])
                    e.id = self.ids.next(key)
                    cur = parse_id(e.id)
                running[key] = cur
                plan.append((key, e))
        return plan

    async def _read_tops(self, keys: list[str]) -> None:
        """Each stream's last generated id from Redis (0-0 for a stream not created yet)."""
        async with self.r.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.xinfo_stream(key)
            results = await pipe.execute(raise_on_error=False)
        for key, res in zip(keys, results, strict=True):
            if isinstance(res, Exception):
                if not _is_no_key(res):
                    raise res
                self.top[key] = (0, 0)
                self._unsure.discard(key)
            else:
                self._learn_top(key, res["last-generated-id"])

    async def _present(self, entries: list[tuple[str, Entry]]) -> set[int]:
        """``id()`` of the entries already in their stream with the same id and fields."""
        async with self.r.pipeline(transaction=False) as pipe:
            for key, e in entries:
                pipe.xrange(key, e.id, e.id, count=1)
            results = await pipe.execute()
        return {
            id(e)
            for (_key, e), got in zip(entries, results, strict=True)
            if got and got[0][1] == e.fields
        }

    def _fail(self, why: str) -> None:
        if self.healthy:
            log.error("%s: batches go to the disk spool", why)
        self.healthy = False
        self._retry_at = time.monotonic() + self.backoff.next()

    def _set_spilling(self, on: bool, why: str) -> None:
        if on != self.spilling:
            log.warning("%s: %s", "spilling to disk" if on else "spill over", why)
        self.spilling = on
        self.stats.spilling = int(on)
        if not on:
            self._wake.set()

    def _update_hold(self, used: int, limit: int) -> None:
        """The hold time (:mod:`vps_brain.collect.hold`) at this memory check."""
        stats = self.stats
        rate = self.hold.observe(time.monotonic(), sum(stats.bytes_out.values()))
        free = self.spool.max_bytes - self.spool.size
        left = hold.room(used, limit, self.high, free)
        stats.input_bytes_per_second = rate
        stats.hold_room_bytes = -1 if left is None else left
        stats.hold_seconds = self.hold.seconds(left)

    async def memory_loop(self) -> None:
        """Watch used_memory against maxmemory and toggle spilling with hysteresis."""
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                info = await self.r.info("memory")
            except (RedisConnectionError, RedisTimeoutError, OSError):
                continue
            except ResponseError:
                continue
            if not self.healthy:
                self.healthy = True  # reachable again: let the writer try
                self._wake.set()
            used = int(info.get("used_memory", 0))
            limit = int(info.get("maxmemory", 0))
            self._update_hold(used, limit)
            if limit <= 0:
                self.drain_bytes = DRAIN_CHUNK_BYTES
                if self.spilling:
                    self._set_spilling(False, "no maxmemory")
                continue
            frac = used / limit
            room = int((self.high * limit - used) / 2)
            self.drain_bytes = max(DRAIN_MIN_BYTES, min(DRAIN_CHUNK_BYTES, room))
            if frac >= self.high and not self.spilling:
                self._set_spilling(True, f"used_memory at {frac:.0%} of maxmemory")
            elif frac < self.low and self.spilling:
                self._set_spilling(False, f"used_memory down to {frac:.0%} of maxmemory")


__all__ = ["Batcher", "IdGen", "Kind", "RedisWriter"]
