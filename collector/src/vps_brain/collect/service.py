"""The collector service: wires source -> router -> batcher -> writer (-> spool) and the loops.

``Collector(settings).run(stop)`` runs until ``stop`` is set, then closes the connections, flushes
open batches and waits until every record is in Redis or in the spool before returning.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from prometheus_client import start_http_server

from vps_brain.collect.rest import SnapshotFetcher, WeightBudget
from vps_brain.collect.router import Router
from vps_brain.collect.spool import Spool
from vps_brain.collect.stats import CollectorStats
from vps_brain.collect.trim import trim_loop
from vps_brain.collect.writer import Batcher, RedisWriter
from vps_brain.collect.ws import Slot, split_streams
from vps_brain.config import RedisSettings, Settings
from vps_brain.frame import quarantine_key, stream_key

log = logging.getLogger("vps_brain.collect")


def redis_client(cfg: RedisSettings) -> aioredis.Redis:
    """An asyncio client (hiredis parser when installed) authenticating as the configured user."""
    return aioredis.from_url(
        cfg.url,
        username=cfg.username,
        password=cfg.resolved_password(),
        socket_timeout=cfg.socket_timeout_s,
        socket_connect_timeout=cfg.connect_timeout_s,
        decode_responses=False,
    )


class Collector:
    def __init__(self, settings: Settings, stats: CollectorStats | None = None) -> None:
        self.settings = settings
        self.cfg = settings.collector
        self.stats = stats or CollectorStats()
        c = self.cfg
        self.streams = [f"{sym}@{ch}" for sym in c.symbols for ch in c.channels]
        self.keys = [stream_key(c.exchange, s) for s in c.symbols] + [quarantine_key(c.exchange)]
        self.slots: list[Slot] = []
        self.writer: RedisWriter | None = None
        self.batcher: Batcher | None = None
        self.router: Router | None = None
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        c = self.cfg
        stats = self.stats
        r = redis_client(self.settings.redis)
        spool = Spool(c.spool_dir, c.spool_max_bytes, c.spool_segment_bytes, stats=stats)
        if len(spool):
            log.info("spool holds %d batches from a previous run: draining first", len(spool))
        writer = self.writer = RedisWriter(
            r,
            spool,
            stats,
            c.queue_max_records,
            c.redis_high_watermark,
            c.redis_low_watermark,
            c.memory_check_interval_s,
        )
        await writer.seed_ids(self.keys)
        batcher = self.batcher = Batcher(
            writer,
            c.framing,
            c.codec,
            c.zstd_level,
            c.batch_max_records,
            c.batch_max_bytes,
            c.batch_max_delay_ms,
        )
        fetcher: SnapshotFetcher | None = None

        def request_snapshot(symbol: str) -> None:
            assert fetcher is not None
            fetcher.request(symbol)

        router = self.router = Router(
            c.exchange, self.streams, batcher.add, stats, request_snapshot, c.max_frame_bytes
        )
        writer.on_full = lambda full: setattr(router, "backpressure", full)
        fetcher = SnapshotFetcher(
            c.rest_url,
            c.snapshot_limit,
            WeightBudget(c.rest_weight_per_minute),
            stats,
            router.on_snapshot,
            router.snapshot_wanted,
            c.resync_jitter_s,
            c.rest_timeout_s,
            c.reconnect_max_s,
        )
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
        for i, group in enumerate(split_streams(self.streams, c.max_streams_per_connection)):
            self.slots.append(
                Slot(
                    i,
                    c.ws_url,
                    group,
                    router,
                    stats,
                    session,
                    writer.wait_room,
                    c.renew_after_s,
                    c.renew_overlap_s,
                    c.reconnect_min_s,
                    c.reconnect_max_s,
                    c.idle_timeout_s,
                    max(4 * c.max_frame_bytes, 1 << 20),
                )
            )
        slots = self.slots

        def on_switched(cid: int) -> None:
            for slot in slots:
                slot.on_switched(cid)

        def on_server_shutdown(cid: int) -> None:
            for slot in slots:
                slot.on_server_shutdown(cid)

        router.on_switched = on_switched
        router.on_server_shutdown = on_server_shutdown
        slot_tasks = [asyncio.create_task(s.run(), name=f"slot-{s.index}") for s in self.slots]
        self.ready.set()
        log.info(
            "collector started: %d streams on %d connections -> %s",
            len(self.streams),
            len(self.slots),
            self.settings.redis.url.split("@")[-1],
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
            for t in slot_tasks:
                t.cancel()
            late = (await asyncio.wait(slot_tasks, timeout=10))[1] if slot_tasks else set()
            if late:
                log.warning("%d connection(s) did not close within 10 s", len(late))
            await fetcher.close()
            await session.close()
            batcher.flush_all()
            # Everything received must be in Redis or in the spool before we return.
            while writer.queue or writer.queued_records > 0:
                if background[0].done():
                    break
                await asyncio.sleep(0.01)
            for t in background:
                t.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await r.aclose()
            if metrics_server is not None:
                metrics_server.shutdown()
            log.info("collector stopped")
        if failed:
            # Exit non-zero so the service manager restarts us (the spool keeps the data).
            raise RuntimeError(f"collector task {failed} ended unexpectedly")

    async def flushed(self) -> None:
        """Wait until every record received so far is in Redis (tests and bench)."""
        assert self.batcher is not None and self.writer is not None
        while True:
            self.batcher.flush_all()
            await self.writer.wait_idle()
            if not self.batcher.open and not self.writer.queue:
                return
            await asyncio.sleep(0.005)
