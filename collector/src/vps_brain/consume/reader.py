"""The consumer behind ``vps-brain consume``: VPS Redis streams -> exactly-once store (+ live feed).

Life of the consumer (one process per store; the store's lock enforces it):

1. open the store: undo an interrupted flush, load the commit checkpoint;
2. connect to the VPS Redis as the read-only ACL user (:data:`READER_ACL`), find the streams,
   create the consumer group where missing (from id 0: a new group reads the whole stream);
3. recover: claim the pending entries of other, dead consumers of the group (XAUTOCLAIM), then
   re-read this consumer's own pending entries from id 0, in id order;
4. read new entries (XREADGROUP ``>``); every entry is checked against the checkpoint: at or
   below it, it was stored before a crash and is only acknowledged; otherwise it is decoded
   (:mod:`vps_brain.frame`), buffered, published to the live feed;
5. at the flush bound (time, records, bytes) the buffer is sealed and committed in a worker
   thread (Parquet parts, fsync, rename, checkpoint), then its entries are acknowledged.

Corrupt or unknown-version entries are quarantined (stored aside with their stream id and the
reason, counted, logged) and acknowledged only once that is durable. When the disk refuses a
write, nothing is acknowledged; the consumer alerts (log + ``disk_blocked`` metric), keeps
reading until its memory bound, then waits, retrying with capped, jittered backoff.
A lost connection (tunnel cut, Redis restart) is retried the same way; recovery (3) runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import math
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from vps_brain.backoff import Backoff
from vps_brain.config import ConsumerSettings, RedisSettings, redact_url
from vps_brain.consume.catchup import (
    ByteBudget,
    CatchUp,
    Entries,
    TailReader,
    entry_bytes,
    newer_than,
)
from vps_brain.consume.live import LiveHub, LivePublisher
from vps_brain.consume.metrics import ConsumerMetrics
from vps_brain.consume.store import ParquetStore, StoreWriteError
from vps_brain.frame import Decoder, FrameError, StreamId, parse_id
from vps_brain.redisclient import async_client

log = logging.getLogger("vps_brain.consume")

#: ACL rules of the Brain's user on the VPS Redis: read and acknowledge the market-data streams,
#: manage its own group, probe; no command that writes market data (XADD, XDEL, XTRIM, DEL...).
#: The redis role grants the same (roles/redis/defaults/main.yml ``redis_acl_users.brain``;
#: tests/test_role_defaults.py holds the two equal).
READER_ACL: Final = (
    "~md:*",
    "resetchannels",
    "-@all",
    "+ping",
    "+hello",
    "+client|setname",
    "+scan",
    "+type",
    "+exists",
    "+xreadgroup",
    "+xread",
    "+xack",
    "+xautoclaim",
    "+xclaim",
    "+xpending",
    "+xinfo",
    "+xgroup|create",
    "+xgroup|createconsumer",
    "+xgroup|delconsumer",
    "+xrange",
    "+xrevrange",
    "+xlen",
    "+info",
)

_NET_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)
ACK_CHUNK: Final = 2000


def next_hours_pass(now: float, after_s: float) -> float:
    """When the next closed-hours compaction is due: ``after_s`` past the next UTC hour end
    that is not yet ``after_s`` behind ``now`` (wall clock, seconds)."""
    return (math.floor((now - after_s) / 3600) + 1) * 3600 + after_s


def tune_gc() -> None:
    """Collect the young generation less often: the data path makes no reference cycles, and
    the default threshold (700 allocations) costs a third of the decode time at 100k msg/s."""
    gc.collect()
    gc.freeze()  # everything alive at start-up is never scanned again
    gc.set_threshold(50_000, 20, 20)


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


class Consumer:
    """Reads the VPS streams with a consumer group and commits them exactly once to the store."""

    def __init__(
        self,
        cfg: ConsumerSettings,
        redis_cfg: RedisSettings,
        *,
        metrics: ConsumerMetrics | None = None,
        hub: LiveHub | None = None,
    ) -> None:
        self.cfg = cfg
        self.redis_cfg = redis_cfg
        self.name = cfg.consumer_name or socket.gethostname()
        self.metrics = metrics or ConsumerMetrics()
        self.hub = hub or LiveHub()
        self.store = ParquetStore(
            cfg.store_dir,
            compression=cfg.parquet_compression,
            max_records=cfg.flush_max_records,
            max_bytes=cfg.flush_max_bytes,
        )
        self.publisher = (
            LivePublisher(
                cfg.live_redis_url,
                prefix=cfg.live_prefix,
                maxlen=cfg.live_maxlen,
                metrics=self.metrics,
            )
            if cfg.live
            else None
        )
        self.decoder = Decoder()
        self.streams: list[str] = list(cfg.streams)
        self._last_discovery = 0.0
        self._flush_deadline = 0.0
        self._commit_task: asyncio.Task[dict[str, list[bytes]]] | None = None
        self._compaction: asyncio.Task[dict[str, list[bytes]]] | None = None
        self._disk_backoff = Backoff(cfg.retry_min_s, cfg.retry_max_s)
        self._disk_retry_at = 0.0
        self._stop = asyncio.Event()
        self._last_recv: dict[str, int] = {}
        self._disk_blocked = False
        self._compact_at = time.monotonic() + min(60.0, cfg.compact_interval_s)
        # Wall clock (hours are UTC hours of the entry ids): the first pass soon after start.
        self._hours_at = (
            time.time() + min(60.0, cfg.compact_hours_after_s) if cfg.compact_hours else math.inf
        )
        self._archive_task: asyncio.Task[None] | None = None
        self._parts_seen = 0
        # Live first (vps_brain.consume.catchup): per stream, the highest id the live feed has
        # had from either path; which streams are catching up; the budget of the group's reads.
        self._live_upto: dict[str, StreamId] = {}
        self.catchup = CatchUp(cfg.live_first_entries, cfg.live_first_s, cfg.read_count)
        self.budget = ByteBudget(cfg.catchup_budget_bytes_s)
        self.tail = TailReader(
            redis_cfg,
            self._tail_entries,
            block_ms=min(cfg.block_ms, 200),
            count=cfg.read_count,
            retry_min_s=cfg.retry_min_s,
            retry_max_s=cfg.retry_max_s,
        )

    # ------------------------------------------------------------------------------ control

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Run until :meth:`stop`; then commit and acknowledge what is buffered."""
        self.store.open()
        log.info(
            "consumer started",
            extra={
                "fields": {
                    "consumer": self.name,
                    "group": self.cfg.group,
                    "store": str(self.cfg.store_dir),
                    "committed": len(self.store.committed),
                }
            },
        )
        backoff = Backoff(self.cfg.retry_min_s, self.cfg.retry_max_s)
        r: aioredis.Redis | None = None
        try:
            while not self._stop.is_set():
                r = async_client(self.redis_cfg)
                try:
                    await self._session(r, backoff)
                except _NET_ERRORS as exc:
                    self.metrics.connected.set(0)
                    self.metrics.reconnects.inc()
                    delay = backoff.next()
                    log.warning(
                        "VPS Redis unreachable, retrying",
                        extra={"fields": {"error": repr(exc), "retry_in_s": round(delay, 3)}},
                    )
                    await self._sleep(delay)
                finally:
                    with contextlib.suppress(Exception):
                        await r.aclose()
                    r = None
            await self._shutdown()
        finally:
            await self.tail.close()
            if self._commit_task is not None and not self._commit_task.done():
                with contextlib.suppress(BaseException):
                    await self._commit_task
            if self._archive_task is not None:  # stops after the file it is copying
                with contextlib.suppress(BaseException):
                    await self._archive_task
            if self.publisher is not None:
                with contextlib.suppress(Exception):
                    await self.publisher.close()  # bounded, whatever the live Redis does
            self.store.close()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _shutdown(self) -> None:
        """Graceful stop: commit what is buffered and acknowledge it if Redis is reachable."""
        if self._commit_task is not None:
            with contextlib.suppress(BaseException):
                await self._commit_task
            self._commit_task = None
        try:
            acks = await asyncio.to_thread(self.store.flush)
        except StoreWriteError as exc:
            log.error("final flush failed", extra={"fields": {"error": str(exc)}})
            return
        if not acks:
            return
        r = async_client(self.redis_cfg)
        try:
            await self._ack(r, acks)
        except _NET_ERRORS:
            pass  # acknowledged at the next start (ids are at or below the checkpoint)
        finally:
            with contextlib.suppress(Exception):
                await r.aclose()

    # ------------------------------------------------------------------------------ session

    async def _session(self, r: aioredis.Redis, backoff: Backoff) -> None:
        await r.ping()
        self.metrics.connected.set(1)
        await self._discover(r, force=True)
        await self._probe(r)  # a backlog is known before the first read: live first
        next_probe = time.monotonic() + self.cfg.ping_interval_s
        await self._recover(r)
        backoff.reset()
        log.info("reading", extra={"fields": {"streams": self.streams}})
        self._flush_deadline = time.monotonic() + self.cfg.flush_interval_s
        while not self._stop.is_set():
            now = time.monotonic()
            await self._maybe_commit(r, now)
            if now >= next_probe:
                await self._probe(r)
                next_probe = now + self.cfg.ping_interval_s
            if now - self._last_discovery >= self.cfg.discover_interval_s:
                await self._discover(r)
            if not self.streams:
                await self._sleep(min(1.0, self.cfg.discover_interval_s))
                await self._discover(r, force=True)
                continue
            if self.store.full:
                # Memory bound reached while a commit is in flight or failing: wait for it.
                await self._sleep(0.01 if self._commit_task else 0.1)
                continue
            if self._commit_task is not None:
                wake = now + 0.05  # look for the commit's end soon, to acknowledge it
            elif self.store.sealed:
                wake = self._disk_retry_at
            else:
                wake = self._flush_deadline
            block = int(max(1, min(self.cfg.block_ms, (wake - now) * 1000)))
            if self.catchup.any:
                wait = self.budget.wait_s()
                if wait > 0:  # the backlog has used its share of the link: live traffic first
                    pause = min(wait, block / 1000)
                    self.metrics.catchup_throttled_seconds.inc(pause)
                    await self._sleep(pause)
                    continue
            try:
                resp: Any = await r.xreadgroup(
                    self.cfg.group,
                    self.name,
                    dict.fromkeys(self.streams, ">"),
                    count=self.cfg.read_count,
                    block=block,
                )
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # stream recreated, or Redis lost its data
                    log.warning("consumer group missing, recreating", extra={"fields": {}})
                    await self._discover(r, force=True)
                    await self._recover(r)
                    continue
                raise
            if resp:
                n = sum(entry_bytes(entries) for _, entries in resp)
                self.metrics.read_bytes.labels("group").inc(n)
                if self.catchup.any:
                    self.budget.spend(n)
                await self._handle(r, resp)

    async def _discover(self, r: aioredis.Redis, force: bool = False) -> None:
        self._last_discovery = time.monotonic()
        if self.cfg.streams:
            wanted = list(self.cfg.streams)
        else:
            wanted = sorted(
                {
                    _s(k)
                    async for k in r.scan_iter(
                        match=self.cfg.stream_pattern, count=1000, _type="STREAM"
                    )
                }
            )
        ready: list[str] = []
        for key in wanted:
            try:
                await r.xgroup_create(key, self.cfg.group, id="0")
                log.info("created consumer group", extra={"fields": {"stream": key}})
            except ResponseError as exc:
                msg = str(exc)
                if "BUSYGROUP" not in msg:
                    if "requires the key to exist" in msg or "no such key" in msg.lower():
                        continue  # the collector has not written it yet; never create it here
                    raise
            ready.append(key)
        if force:
            for key in ready:
                await self._check_not_reset(r, key)
        if ready != self.streams or force:
            new = [s for s in ready if s not in self.streams]
            self.streams = ready
            if new and not force:
                log.info("new streams", extra={"fields": {"streams": new}})
                await self._recover(r, new)

    async def _check_not_reset(self, r: aioredis.Redis, key: str) -> None:
        """Entries at or below the checkpoint count as stored. A stream recreated with lower ids
        (its Redis lost its data and a clock went back) would be mistaken for old data: say so."""
        committed = self.store.committed.get(key)
        if committed is None:
            return
        info: Any = await r.xinfo_stream(key)
        last = parse_id(info.get("last-generated-id") or b"0-0")
        if last < committed:
            log.error(
                "stream is behind the store's checkpoint: it was recreated; entries up to the "
                "checkpoint would be taken as already stored",
                extra={"fields": {"stream": key, "last_id": f"{last[0]}-{last[1]}",
                                  "checkpoint": f"{committed[0]}-{committed[1]}"}},
            )  # fmt: skip
            self.metrics.stream_resets.labels(key).inc()

    async def _recover(self, r: aioredis.Redis, streams: Sequence[str] | None = None) -> None:
        """Claim dead consumers' pending entries, then re-read our own pending list in order."""
        for key in streams if streams is not None else self.streams:
            await self._claim_all(r, key)
            start = "0"
            while not self._stop.is_set():
                if self.store.full:
                    await self._maybe_commit(r, time.monotonic(), wait=True)
                    continue
                resp: Any = await r.xreadgroup(
                    self.cfg.group, self.name, {key: start}, count=self.cfg.read_count
                )
                if not resp or not resp[0][1]:
                    break
                start = _s(resp[0][1][-1][0])
                await self._handle(r, resp)

    async def _claim_all(self, r: aioredis.Redis, key: str) -> None:
        """Take over every pending entry of other consumers of the group, waiting (bounded) for
        them to be idle for ``claim_min_idle_ms``. Entries must be stored in id order, so new
        entries are not read while older ones are pending elsewhere."""
        deadline = time.monotonic() + 3 * self.cfg.claim_min_idle_ms / 1000 + 1
        while True:
            summary = await r.xpending(key, self.cfg.group)
            others = [c for c in summary.get("consumers") or [] if _s(c["name"]) != self.name]
            if not others:
                return
            start: bytes | str = "0-0"
            claimed = 0
            while True:
                # Not JUSTID: redis-py then drops the cursor, and the cursor is what walks past
                # a long pending list of our own (COUNT bounds the scan, not the whole list).
                res: Any = await r.xautoclaim(
                    key,
                    self.cfg.group,
                    self.name,
                    min_idle_time=self.cfg.claim_min_idle_ms,
                    start_id=start,
                    count=1000,
                )
                start, ids = res[0], res[1]
                claimed += len(ids)
                if _s(start) == "0-0":
                    break
            if claimed:
                log.info(
                    "claimed pending entries of other consumers",
                    extra={
                        "fields": {
                            "stream": key,
                            "entries": claimed,
                            "from": [_s(c["name"]) for c in others],
                        }
                    },
                )
            remaining = await r.xpending(key, self.cfg.group)
            still = [c for c in remaining.get("consumers") or [] if _s(c["name"]) != self.name]
            if not still:
                return
            if time.monotonic() > deadline:
                log.warning(
                    "entries pending at another consumer that is not idle; is a second consumer "
                    "reading this group?",
                    extra={"fields": {"stream": key, "consumers": [_s(c["name"]) for c in still]}},
                )
                return
            await self._sleep(min(1.0, max(0.05, self.cfg.claim_min_idle_ms / 4000)))

    # ----------------------------------------------------------------------------- entries

    async def _handle(self, r: aioredis.Redis, resp: Sequence[Any]) -> None:
        m = self.metrics
        store = self.store
        decoder = self.decoder
        ack_now: dict[str, list[bytes]] = {}
        hub = self.hub if self.hub.active else None
        live_from = self._live_marks(resp) if hub is not None or self.publisher else {}
        if self.publisher is not None and live_from:
            await self._publish_live(resp, live_from)
        for key_raw, entries in resp:
            key = _s(key_raw)
            seen = store.last_seen(key)
            live_mark = live_from.get(key)
            n_entries = n_records = n_bytes = 0
            for eid, fields in entries:
                sid: StreamId = parse_id(eid)
                if sid <= seen:
                    if store.is_committed(key, sid):
                        ack_now.setdefault(key, []).append(eid)
                        m.duplicates.inc()
                    continue  # else: buffered already, acknowledged with its flush
                seen = sid
                n_entries += 1
                if not fields:
                    store.add_missing(key, eid)
                    m.missing.inc()
                    log.warning(
                        "pending entry was deleted on the VPS before it was stored",
                        extra={"fields": {"stream": key, "id": _s(eid)}},
                    )
                    continue
                try:
                    records = decoder.decode(fields)
                except FrameError as exc:
                    store.add_quarantine(key, eid, fields, str(exc))
                    m.quarantined.labels(key).inc()
                    log.warning(
                        "quarantined a corrupt entry",
                        extra={"fields": {"stream": key, "id": _s(eid), "reason": str(exc)}},
                    )
                    continue
                store.add(key, eid, records)
                n_records += len(records)
                for rec in records:
                    n_bytes += len(rec.payload)
                if records:
                    self._last_recv[key] = records[-1].recv_ns
                if hub is not None and live_mark is not None and sid > live_mark:
                    m.live_dropped.inc(hub.publish(key, eid, records))
            if n_entries:
                m.entries.labels(key).inc(n_entries)
                m.records.labels(key).inc(n_records)
                m.bytes.labels(key).inc(n_bytes)
        m.buffered_records.set(store.buffered_records)
        m.buffered_bytes.set(store.buffered_bytes)
        if ack_now:
            await self._ack(r, ack_now)

    def _live_marks(self, resp: Sequence[Any]) -> dict[str, StreamId]:
        """Per stream of a group read, the id above which its entries go to the live feed: the
        highest the feed has had from either path (or the store's last seen, after a restart).
        A stream that is catching up has none: the tail serves its live feed, and the backlog
        goes to the store only. Advances the marks past this read."""
        marks: dict[str, StreamId] = {}
        for key_raw, entries in resp:
            key = _s(key_raw)
            if not entries or self.catchup.is_catching_up(key):
                continue
            mark = self._live_mark(key)
            marks[key] = mark
            self._live_upto[key] = max(mark, parse_id(entries[-1][0]))
        return marks

    def _live_mark(self, key: str) -> StreamId:
        """The highest id the live feed has had of ``key`` from either path, or the store's last
        seen (after a restart): only entries above it go live."""
        return max(self._live_upto.get(key, (0, 0)), self.store.last_seen(key))

    async def _publish_live(self, resp: Sequence[Any], live_from: Mapping[str, StreamId]) -> None:
        """Hand new entries to the live feed first: strategies do not wait for decoding and
        storing. Best effort: an entry re-read after a crash may be published twice.

        The publisher only queues them (bounded, never blocking, never raising); its own task
        sends them, so no error or slowness of the live Redis reaches storing and acking. The
        one yield lets that task write the pipeline before this read is decoded."""
        assert self.publisher is not None
        live: list[tuple[str, bytes, Mapping[bytes, bytes]]] = []
        for key_raw, entries in resp:
            key = _s(key_raw)
            mark = live_from.get(key)
            if mark is not None:
                live.extend((key, eid, fields) for eid, fields in newer_than(entries, mark))
        if live:
            self.publisher.offer(live)
            await asyncio.sleep(0)

    def _tail_entries(self, key: str, entries: Entries) -> None:
        """The tail's newest entries of a stream that is catching up, to the live feed."""
        self.metrics.read_bytes.labels("tail").inc(entry_bytes(entries))
        fresh = newer_than(entries, self._live_mark(key))
        if not fresh:
            return
        self._live_upto[key] = parse_id(fresh[-1][0])
        if self.publisher is not None:
            self.publisher.offer((key, eid, fields) for eid, fields in fresh)
        if self.hub.active:
            for eid, fields in fresh:
                try:
                    records = self.decoder.decode(fields)
                except FrameError:
                    continue  # quarantined when the group reaches it
                self.metrics.live_dropped.inc(self.hub.publish(key, eid, records))

    async def _ack(self, r: aioredis.Redis, acks: Mapping[str, list[bytes]]) -> None:
        pipe = r.pipeline(transaction=False)
        n = 0
        for key, ids in acks.items():
            for i in range(0, len(ids), ACK_CHUNK):
                pipe.xack(key, self.cfg.group, *ids[i : i + ACK_CHUNK])
            n += len(ids)
        if n:
            await pipe.execute()
            self.metrics.acked.inc(n)

    # ------------------------------------------------------------------------------ commits

    async def _maybe_commit(self, r: aioredis.Redis, now: float, wait: bool = False) -> None:
        """Start a commit at the flush bound; acknowledge a finished one; retry a failed one."""
        task = self._commit_task
        if task is not None:
            if not task.done() and wait:
                await asyncio.wait({task}, timeout=0.5)
            if not task.done():
                return
            self._commit_task = None
            try:
                acks = task.result()
            except StoreWriteError as exc:
                self.metrics.flush_errors.inc()
                self.metrics.disk_blocked.set(1)
                self._disk_blocked = True
                delay = self._disk_backoff.next()
                self._disk_retry_at = now + delay
                log.error(
                    "store write failed: acknowledgements stopped until it succeeds",
                    extra={
                        "fields": {
                            "error": str(exc),
                            "errno": exc.errno,
                            "retry_in_s": round(delay, 3),
                            "buffered_records": self.store.buffered_records,
                        }
                    },
                )
                if wait:
                    await self._sleep(min(delay, 0.5))
                return
            if task is self._compaction:
                self._start_archive()
            else:
                if self._disk_blocked:
                    log.warning("store writable again; acknowledging", extra={"fields": {}})
                self._disk_blocked = False
                self.metrics.disk_blocked.set(0)
                self._disk_backoff.reset()
                self.metrics.flushes.inc()
                self.metrics.parts.inc(self.store.parts_written - self._parts_seen)
                self._parts_seen = self.store.parts_written
                await self._ack(r, acks)
            now = time.monotonic()
        if self.store.sealed:
            if now < self._disk_retry_at and not wait:
                return
            if now < self._disk_retry_at:
                await self._sleep(min(0.5, self._disk_retry_at - now))
            self._start_commit()
            if wait:
                await self._maybe_commit(r, time.monotonic(), wait=True)
            return
        scheduled = (self.cfg.compact_interval_s and now >= self._compact_at) or (
            time.time() >= self._hours_at
        )
        # A pass cut by compact_slice_s goes on between flushes, never instead of a due one.
        resumed = bool(self.store.compaction_pending) and now < self._flush_deadline
        if not wait and (scheduled or resumed) and not self.store.full:
            if scheduled:
                self._compact_at = now + (self.cfg.compact_interval_s or math.inf)
                if self.cfg.compact_hours:
                    self._hours_at = next_hours_pass(time.time(), self.cfg.compact_hours_after_s)
            self._commit_task = asyncio.create_task(asyncio.to_thread(self._compact))
            self._compaction = self._commit_task
            return
        due = now >= self._flush_deadline or self.store.full or wait
        if due:
            self._flush_deadline = now + self.cfg.flush_interval_s
            if self.store.seal():
                self._start_commit()
                if wait:
                    await self._maybe_commit(r, time.monotonic(), wait=True)

    def _compact(self) -> dict[str, list[bytes]]:
        """Merge closed days' parts, then closed hours' (worker thread, in the commit slot:
        never beside a commit)."""
        today = time.strftime("%Y-%m-%d", time.gmtime())
        removed = hours = 0
        try:
            budget = self.cfg.compact_slice_s
            pending = self.store.compaction_pending
            if self.cfg.compact_interval_s and (not pending or "days" in pending):
                removed = self.store.compact(today, budget_s=budget)
            if self.cfg.compact_hours and "days" not in self.store.compaction_pending:
                before_ms = int((time.time() - self.cfg.compact_hours_after_s) * 1000)
                hours = self.store.compact_hours(before_ms, budget_s=budget)
        except OSError as exc:  # e.g. no room for the merged file: the small parts stay
            log.warning("compaction failed", extra={"fields": {"error": str(exc)}})
            return {}
        if removed or hours:
            self.metrics.compacted.inc(removed + hours)
            log.info(
                "compacted closed days and hours",
                extra={"fields": {"files_merged_days": removed, "files_merged_hours": hours}},
            )
        return {}

    def _start_archive(self) -> None:
        """After a compaction: copy the closed parts to ``archive_uri`` in a thread of its own
        (network I/O; never in the commit slot), one run at a time."""
        if not self.cfg.archive_uri or (
            self._archive_task is not None and not self._archive_task.done()
        ):
            return
        self._archive_task = asyncio.create_task(asyncio.to_thread(self._archive))

    def _archive(self) -> None:
        from vps_brain.consume.archive import archive

        now = time.time()
        try:
            result = archive(
                self.cfg.store_dir,
                self.cfg.archive_uri,
                before_day=time.strftime("%Y-%m-%d", time.gmtime(now)),
                hours_before_ms=(
                    int((now - self.cfg.compact_hours_after_s) * 1000)
                    if self.cfg.compact_hours
                    else None
                ),
                stop=self._stop.is_set,
            )
        except (OSError, ValueError) as exc:  # unreachable, full, refused: the next run resumes
            log.warning("archive failed", extra={"fields": {"error": redact_url(str(exc))}})
            return
        if result.copied or result.removed:
            log.info("archived closed parts", extra={"fields": dataclasses.asdict(result)})

    def _start_commit(self) -> None:
        started = time.perf_counter()

        def commit() -> dict[str, list[bytes]]:
            acks = self.store.commit()
            self.metrics.flush_seconds.observe(time.perf_counter() - started)
            return acks

        self._commit_task = asyncio.create_task(asyncio.to_thread(commit))

    # ------------------------------------------------------------------------------- probes

    async def _probe(self, r: aioredis.Redis) -> None:
        """Tunnel latency (PING round trip), group lag and pending per stream, time lag."""
        m = self.metrics
        t0 = time.perf_counter()
        await r.ping()
        rtt = time.perf_counter() - t0
        m.tunnel_rtt.set(rtt)
        m.tunnel_rtt_hist.observe(rtt)
        now_ns = time.time_ns()
        for key, recv_ns in self._last_recv.items():
            m.lag_seconds.labels(key).set(max(0.0, (now_ns - recv_ns) / 1e9))
        changed = False
        now_ms = time.time_ns() // 1_000_000
        for key in self.streams:
            try:
                groups = await r.xinfo_groups(key)
            except ResponseError:
                continue
            for g in groups:
                if _s(g.get("name", b"")) == self.cfg.group:
                    lag = g.get("lag")
                    if lag is not None:
                        m.lag_entries.labels(key).set(int(lag))
                        last = parse_id(g.get("last-delivered-id") or b"0-0")
                        changed |= self.catchup.update(key, int(lag), last, now_ms)
                    m.pending_entries.labels(key).set(int(g.get("pending", 0)))
        self._report_catchup(changed)

    def _report_catchup(self, changed: bool) -> None:
        """Metrics, the live feed's per-stream state, and the tail's streams after a probe."""
        live_on = self.publisher is not None or self.hub.active
        states = {}
        for key, st in self.catchup.streams.items():
            self.metrics.catching_up.labels(key).set(1 if st.catching_up else 0)
            self.metrics.behind_seconds.labels(key).set(st.behind_s)
            states[key] = st.as_dict()
        self.hub.state.update(states)
        if self.publisher is not None and (changed or self.catchup.any):
            self.publisher.offer_state(states)
        if changed:
            log.info(
                "live first: streams catching up changed",
                extra={"fields": {"catching_up": self.catchup.catching_up}},
            )
            if live_on:
                self.tail.follow(self.catchup.catching_up)
