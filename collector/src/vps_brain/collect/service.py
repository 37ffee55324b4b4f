"""The collector service: wires source -> router -> batcher -> writer (-> spool) and the loops.

``Collector(settings).run(stop)`` runs until ``stop`` is set, then shuts down within
``shutdown_timeout_s`` (:data:`SHUTDOWN_TIMEOUT_S`, shorter than the unit's ``TimeoutStopSec``, so
the service manager never kills a collector that still holds data):

1. the connections close (a quarter of the budget at most) and open batches are flushed;
2. the writer goes on sending to Redis (and the spool) as usual until half the budget;
3. what is still in memory then goes to the spool only: its size bound is lifted (at shutdown
   durability beats backpressure), Redis is no longer tried and a request hanging on it is cut
   off, until 85 % of the budget.

Everything received is then in Redis or in the spool (fsynced); the last log line, ``collector
stopped``, says how many records went where: ``to_redis`` + ``to_spool`` + ``lost`` are the
``at_stop`` records in memory when the stop came plus any a closing connection still delivered;
``lost`` is non-zero only when neither Redis nor the disk took them.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from prometheus_client import start_http_server

from vps_brain.collect.rest import SnapshotFetcher, SyncOrder, WeightBudget
from vps_brain.collect.router import Router
from vps_brain.collect.spool import Spool
from vps_brain.collect.stats import CollectorStats
from vps_brain.collect.trim import trim_loop
from vps_brain.collect.writer import Batcher, RedisWriter
from vps_brain.collect.ws import (
    ConnectionPacer,
    RenewalSchedule,
    Slot,
    group_streams,
    url_prefix_bytes,
)
from vps_brain.config import ConfigError, Settings, redact_url
from vps_brain.frame import quarantine_key, stream_key
from vps_brain.redisclient import async_client

log = logging.getLogger("vps_brain.collect")

#: The whole shutdown fits in this (seconds). The unit (roles/service/templates/
#: vps-brain-service.service.j2) has TimeoutStopSec=30; a test keeps this 5 s below it at least.
SHUTDOWN_TIMEOUT_S = 20.0


def _wire(router: Router, slots: list[Slot]) -> None:
    """The router's renewal and shutdown-notice callbacks reach the slots of its market."""

    def on_switched(cid: int) -> None:
        for slot in slots:
            slot.on_switched(cid)

    def on_server_shutdown(cid: int) -> None:
        for slot in slots:
            slot.on_server_shutdown(cid)

    router.on_switched = on_switched
    router.on_server_shutdown = on_server_shutdown


class Collector:
    def __init__(self, settings: Settings, *, stats: CollectorStats | None = None) -> None:
        self.settings = settings
        self.cfg = settings.collector
        self.stats = stats or CollectorStats()
        c = self.cfg
        #: The streams of each market (``collector.markets``), in the order of the settings.
        self.market_streams = [
            [f"{sym}@{ch}" for sym in m.symbols for ch in m.stream_channels] for m in c.markets
        ]
        self.streams = [s for streams in self.market_streams for s in streams]
        exchanges = list(dict.fromkeys(m.exchange_name for m in c.markets))
        self.keys = [stream_key(m.exchange_name, s) for m in c.markets for s in m.symbols] + [
            quarantine_key(e) for e in exchanges
        ]
        self.slots: list[Slot] = []
        self.writer: RedisWriter | None = None
        self.batcher: Batcher | None = None
        #: One router and one snapshot fetcher per market, in the order of the settings.
        self.routers: list[Router] = []
        self.fetchers: list[SnapshotFetcher] = []
        self.ready = asyncio.Event()
        #: Budget of the shutdown after ``stop`` (see the module docstring).
        self.shutdown_timeout_s = SHUTDOWN_TIMEOUT_S
        #: (market index, websocket URL, streams) of each connection, in slot order.
        self.connection_plan = self._plan_connections()
        #: One REST weight budget and one connection pacer per venue (its hosts count per IP).
        self.budgets: dict[str, WeightBudget] = {}
        self.pacers: dict[str, ConnectionPacer] = {}

    def _plan_connections(self) -> list[tuple[int, str, list[str]]]:
        """The streams of each connection: by route, within the venue's streams per connection
        and ``max_url_bytes``; raises :class:`ConfigError` when the renewals cannot be staggered
        within ``renew_after_s``."""
        c = self.cfg
        plan: list[tuple[int, str, list[str]]] = []
        for i, (market, streams) in enumerate(zip(c.markets, self.market_streams, strict=True)):
            venue = market.spec
            per_connection = min(
                c.max_streams_per_connection or venue.max_streams_per_connection,
                venue.max_streams_per_connection,
            )
            routed: dict[str, list[str]] = {}
            for name in streams:
                routed.setdefault(venue.route_of(name.split("@", 1)[1]), []).append(name)
            for path, names in routed.items():
                url = market.ws_base.rstrip("/") + path
                prefix = url_prefix_bytes(url.rstrip("/") + "/stream?streams=")
                for group in group_streams(
                    names,
                    per_connection=per_connection,
                    prefix_bytes=prefix,
                    max_url_bytes=c.max_url_bytes,
                ):
                    plan.append((i, url, group))
        spread = (len(plan) - 1) * c.renew_stagger_s
        if spread >= c.renew_after_s - c.renew_overlap_s:
            raise ConfigError(
                f"collector: {len(plan)} connections renewed {c.renew_stagger_s:g} s apart "
                f"(renew_stagger_s) need {spread:g} s, more than renew_after_s - "
                f"renew_overlap_s ({c.renew_after_s - c.renew_overlap_s:g} s): lower the "
                "stagger or raise renew_after_s"
            )
        for market in c.markets:
            if c.renew_after_s + spread >= market.spec.lifetime_s:
                raise ConfigError(
                    f"collector: renewals staggered over {spread:g} s after renew_after_s "
                    f"({c.renew_after_s:g} s) pass the {market.spec.name} connection lifetime "
                    f"({market.spec.lifetime_s:g} s): lower renew_stagger_s or renew_after_s"
                )
        return plan

    async def run(self, stop: asyncio.Event) -> None:
        c = self.cfg
        stats = self.stats
        r = async_client(self.settings.redis)
        spool = Spool(c.spool_dir, c.spool_max_bytes, c.spool_segment_bytes, stats=stats)
        if len(spool):
            log.info("spool holds %d batches from a previous run: draining first", len(spool))
        writer = self.writer = RedisWriter(
            r,
            spool,
            stats=stats,
            queue_max_records=c.queue_max_records,
            high_watermark=c.redis_high_watermark,
            low_watermark=c.redis_low_watermark,
            memory_check_interval_s=c.memory_check_interval_s,
        )
        await writer.seed_ids(self.keys)
        batcher = self.batcher = Batcher(
            writer,
            framing=c.framing,
            codec=c.codec,
            level=c.zstd_level,
            max_records=c.batch_max_records,
            max_bytes=c.batch_max_bytes,
            max_delay_ms=c.batch_max_delay_ms,
        )
        stats.started_at = time.monotonic()
        budgets = self.budgets  # one per venue: its REST host has its own limit
        for market, streams in zip(c.markets, self.market_streams, strict=True):
            venue = market.spec
            router = Router(
                market.exchange_name,
                streams,
                emit=batcher.add,
                request_snapshot=lambda _symbol: None,  # the fetcher below, once it exists
                stats=stats,
                max_frame_bytes=c.max_frame_bytes,
                sequence=venue.sequence,
            )
            budget = budgets.get(venue.name)
            if budget is None:
                per_minute = min(
                    c.rest_weight_per_minute or venue.weight_per_minute, venue.weight_per_minute
                )
                budget = budgets[venue.name] = WeightBudget(
                    per_minute, window_s=c.rest_weight_window_s or venue.weight_window_s
                )
            fetcher = SnapshotFetcher(
                market.exchange_name,
                market.rest_base.rstrip("/") + venue.depth_path,
                c.snapshot_limit,
                weight=venue.depth_weight(c.snapshot_limit),
                budget=budget,
                limits=market.snapshot_limits,
                weight_of=venue.depth_weight,
                order=SyncOrder(market.symbols, market.snapshot_priority, router.depth_seen),
                stats=stats,
                on_snapshot=router.on_snapshot,
                still_wanted=router.snapshot_wanted,
                jitter_s=c.resync_jitter_s,
                timeout_s=c.rest_timeout_s,
                backoff_max_s=c.reconnect_max_s,
            )
            router.request_snapshot = fetcher.request
            self.routers.append(router)
            self.fetchers.append(fetcher)
        self._gather_first_snapshots()

        def backpressure(full: bool) -> None:
            for router in self.routers:
                router.backpressure = full

        writer.on_full = backpressure
        metrics_server: Any = None
        if c.metrics_port:
            metrics_server, _thread = start_http_server(
                c.metrics_port, c.metrics_host, registry=stats.registry
            )
        session = aiohttp.ClientSession()
        background = [
            asyncio.create_task(writer.run(), name="writer"),
            asyncio.create_task(writer.memory_loop(), name="memory"),
        ]
        if c.trim_interval_s > 0:

            def on_trim(n: int) -> None:
                stats.trimmed_entries += n

            background.append(
                asyncio.create_task(
                    trim_loop(
                        r,
                        lambda: self.keys,
                        c.trim_interval_s,
                        c.trim_min_retention_s,
                        c.trim_require_group,
                        on_trim,
                    ),
                    name="trim",
                )
            )
        schedule = RenewalSchedule(c.renew_stagger_s, len(self.connection_plan))
        by_market: dict[int, list[Slot]] = {}
        for i, url, group in self.connection_plan:
            market = c.markets[i]
            venue = market.spec
            pacer = self.pacers.get(venue.name)
            if pacer is None:
                pacer = self.pacers[venue.name] = ConnectionPacer(
                    min(
                        c.connection_attempts or venue.connection_attempts,
                        venue.connection_attempts,
                    ),
                    c.connection_window_s or venue.connection_window_s,
                )
            slot = Slot(
                len(self.slots),
                url,
                streams=group,
                router=self.routers[i],
                stats=stats,
                session=session,
                wait_room=writer.wait_room,
                pacer=pacer,
                schedule=schedule,
                renew_after_s=c.renew_after_s,
                renew_overlap_s=c.renew_overlap_s,
                reconnect_min_s=c.reconnect_min_s,
                reconnect_max_s=c.reconnect_max_s,
                # a quiet stream gets nothing but the venue's pings
                idle_timeout_s=max(c.idle_timeout_s, 1.5 * venue.ping_interval_s),
                max_msg_size=max(4 * c.max_frame_bytes, 1 << 20),
            )
            self.slots.append(slot)
            by_market.setdefault(i, []).append(slot)
        for i, router in enumerate(self.routers):
            _wire(router, by_market.get(i, []))
        slot_tasks = [asyncio.create_task(s.run(), name=f"slot-{s.index}") for s in self.slots]
        self.ready.set()
        log.info(
            "collector started: %d streams on %d connections -> %s",
            len(self.streams),
            len(self.slots),
            redact_url(self.settings.redis.url),
        )
        failed = ""
        try:
            stop_wait = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait(
                [stop_wait, *slot_tasks, *background], return_when=asyncio.FIRST_COMPLETED
            )
            for t in done:
                if t is not stop_wait:
                    failed = t.get_name()
                    exc = None if t.cancelled() else t.exception()
                    log.error("task %s ended unexpectedly: stopping", failed, exc_info=exc)
            stop_wait.cancel()
        finally:
            fields = await self._shutdown(
                r,
                spool,
                writer,
                batcher,
                slot_tasks,
                background,
                [*(f.close for f in self.fetchers), session.close],
            )
            if metrics_server is not None:
                metrics_server.shutdown()
            # The last line: where every record received went.
            log.log(
                logging.ERROR if fields["lost"] else logging.INFO,
                "collector stopped",
                extra={"fields": fields},
            )
        if failed:
            # Exit non-zero so the service manager restarts us (the spool keeps the data).
            raise RuntimeError(f"collector task {failed} ended unexpectedly")

    def _gather_first_snapshots(self) -> None:
        """Hold a venue's first snapshot for ``snapshot_gather_s`` when its books' snapshots
        weigh more than one window allows: every book's first request is then waiting when the
        first grant is due, so even the first window goes in sync order."""
        c = self.cfg
        weight: dict[str, int] = {}
        for market, router in zip(c.markets, self.routers, strict=True):
            venue = market.spec
            weight[venue.name] = weight.get(venue.name, 0) + sum(
                venue.depth_weight(market.snapshot_limit_of(s, c.snapshot_limit))
                for s in router.depth_of
            )
        for name, budget in self.budgets.items():
            if weight.get(name, 0) > budget.limit and c.snapshot_gather_s > 0:
                budget.pause(c.snapshot_gather_s)

    async def _shutdown(
        self,
        r: aioredis.Redis,
        spool: Spool,
        writer: RedisWriter,
        batcher: Batcher,
        slot_tasks: list[asyncio.Task[None]],
        background: list[asyncio.Task[None]],
        closers: list[Any],
    ) -> dict[str, Any]:
        """Bounded: connections closed, then everything in memory to Redis or to the spool.

        Returns the figures of the final log line: records in memory when the stop came
        (``at_stop``) and, of every record released since, how many went ``to_redis``,
        ``to_spool`` or were ``lost``."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        budget = self.shutdown_timeout_s

        def left(share: float) -> float:
            """Seconds until ``share`` of the budget has passed."""
            return max(0.0, t0 + share * budget - loop.time())

        async def bounded(aw: Awaitable[Any], share: float, what: str) -> None:
            try:
                await asyncio.wait_for(aw, left(share))
            except Exception as exc:  # a timeout included: the shutdown goes on
                log.warning("shutdown: %s did not finish (%r)", what, exc)

        stats = self.stats
        writer_task = background[0]
        at_stop = writer.queued_records  # received, not yet in Redis nor in the spool
        redis0 = sum(stats.records_out.values()) - spool.drained_records
        spool0 = spool.appended_records

        for t in slot_tasks:
            t.cancel()
        late = (await asyncio.wait(slot_tasks, timeout=left(0.25)))[1] if slot_tasks else set()
        if late:
            log.warning("%d connection(s) did not close within the shutdown budget", len(late))
        for close in closers:
            await bounded(close(), 0.3, "closing the HTTP clients")
        # As usual first: Redis, or the spool when Redis refuses.
        if not await self._until_written(batcher, writer, writer_task, left(0.5)):
            log.warning(
                "shutdown: %d records not yet written after %.1f s: to the spool only",
                writer.queued_records,
                loop.time() - t0,
            )
            for t in background[1:]:
                t.cancel()  # memory and trim loops: they talk to Redis and hold no data
            spool.max_bytes = sys.maxsize
            writer.spilling = True  # the writer spools every round and drains nothing
            stats.spilling = 1
            # A request hanging on Redis is cut off: the writer spools that round too.
            await bounded(r.connection_pool.disconnect(), 0.55, "disconnecting from Redis")
            await self._until_written(batcher, writer, writer_task, left(0.85))
        if writer_task.done() and writer.queue:
            # The writer died: what it still held goes to the spool from here.
            rest = list(writer.queue)
            spool.max_bytes = sys.maxsize
            try:
                await asyncio.wait_for(asyncio.to_thread(spool.append, rest), left(0.85))
                writer.queue.clear()
                writer.queued_records -= sum(b.records for b in rest)
            except Exception as exc:
                log.error("shutdown: the spool refused the last %d batches (%r)", len(rest), exc)
        lost = writer.queued_records
        for t in background:
            t.cancel()
        await asyncio.wait(background, timeout=left(0.9))
        await bounded(r.aclose(), 0.95, "closing the Redis client")
        to_spool = spool.appended_records - spool0
        fields: dict[str, Any] = {
            "shutdown_s": round(loop.time() - t0, 3),
            "at_stop": at_stop,
            "to_redis": sum(stats.records_out.values()) - spool.drained_records - redis0,
            "to_spool": to_spool,
            "lost": lost,
            "spool_batches": len(spool),
            "spool_dir": str(spool.dir),
        }
        if lost:
            log.error(
                "shutdown: %d records reached neither Redis nor the spool within %.1f s",
                lost,
                budget,
            )
        return fields

    @staticmethod
    async def _until_written(
        batcher: Batcher, writer: RedisWriter, writer_task: asyncio.Task[None], within_s: float
    ) -> bool:
        """Until every record received is in Redis or in the spool; False at the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while True:
            batcher.flush_all()  # a connection that closed late may have added some
            if not writer.queue and writer.queued_records <= 0:
                return True
            if writer_task.done() or loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)

    async def flushed(self) -> None:
        """Wait until every record received so far is in Redis (tests and bench)."""
        assert self.batcher is not None and self.writer is not None
        while True:
            self.batcher.flush_all()
            await self.writer.wait_idle()
            if not self.batcher.open and not self.writer.queue:
                return
            await asyncio.sleep(0.005)
