"""Counters of the collector, kept as plain ints on the hot path and exported to Prometheus.

The hot path bumps dict entries (cheap); a custom Prometheus collector reads them at scrape time.
Batch latency (first record received -> entry acknowledged by Redis) is a real histogram,
observed once per batch.

Books (one per symbol with a depth stream, per exchange): ``books`` counts them, ``books_synced``
those in sync now (read from the routers' stream states at scrape time), and
``all_books_synced_seconds`` is the time from :attr:`CollectorStats.started_at` until every book
of the exchange had been in sync at least once (-1 until then; a symbol the exchange refused for
good never syncs, so it stays -1).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0)


@dataclass
class CollectorStats:
    """Everything the collector counts; labels are exchanges, stream names, keys and reasons.

    Per-stream and per-symbol counts are keyed by ``(exchange, ...)``: one collector may take the
    same symbol on spot and on futures (``ethusdt`` on ``binance`` and ``binance-usdm``).
    """

    #: per-stream objects with ``exchange``, ``name``, ``n_in``, ``bytes_in`` (the routers' stream
    #: states)
    streams: list[Any] = field(default_factory=list)
    records_out: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    bytes_out: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    entries_out: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: (exchange, stream) -> messages dropped as duplicates
    duplicates: defaultdict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    #: (exchange, symbol, channel) -> gaps
    gaps: defaultdict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    #: (exchange, symbol) -> resyncs started, snapshots written
    resyncs: defaultdict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    snapshots: defaultdict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    quarantined: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    reconnects: int = 0
    renewals: int = 0
    #: exchange -> REST snapshot requests, and 429/418 answers
    rest_requests: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    rest_429: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    spooled_batches: int = 0
    drained_batches: int = 0
    trimmed_entries: int = 0
    spool_bytes: int = 0
    spool_batches: int = 0
    queued_records: int = 0
    spilling: int = 0
    #: Entry bytes written per second (smoothed), the room the backlog may still take (Redis to
    #: the high watermark plus the spool; -1 without maxmemory) and how long that room lasts at
    #: that rate (vps_brain.collect.hold; NaN when unknown, +Inf with no input).
    input_bytes_per_second: float = 0.0
    hold_room_bytes: int = -1
    hold_seconds: float = math.nan
    #: corrupt spool regions moved to the quarantine file, and their bytes
    spool_quarantined: int = 0
    spool_quarantined_bytes: int = 0
    #: The depth streams' states (``exchange``, ``in_sync``), registered by the routers
    depth_books: list[Any] = field(default_factory=list)
    #: exchange -> books, and books that were in sync at least once
    books_total: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    books_first_synced: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: exchange -> seconds from ``started_at`` until every book was first in sync
    all_books_synced_s: dict[str, float] = field(default_factory=dict)
    #: time.monotonic() of the collector's start (set by the collector when it runs)
    started_at: float = field(default_factory=time.monotonic)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    batch_latency: Histogram = field(init=False)

    @property
    def messages_in(self) -> dict[tuple[str, str], int]:
        """Websocket messages accepted per (exchange, stream)."""
        return {(s.exchange, s.name): s.n_in for s in self.streams if s.n_in}

    @property
    def bytes_in(self) -> dict[tuple[str, str], int]:
        return {(s.exchange, s.name): s.bytes_in for s in self.streams if s.n_in}

    def add_books(self, books: list[Any]) -> None:
        """Register depth stream states (a router's): each has ``exchange`` and ``in_sync``."""
        self.depth_books.extend(books)
        for st in books:
            self.books_total[st.exchange] += 1

    def book_first_synced(self, exchange: str) -> None:
        """One more book of ``exchange`` was in sync for the first time."""
        self.books_first_synced[exchange] += 1
        if (
            self.books_first_synced[exchange] >= self.books_total[exchange]
            and exchange not in self.all_books_synced_s
        ):
            self.all_books_synced_s[exchange] = time.monotonic() - self.started_at

    def books_synced(self) -> dict[str, int]:
        """exchange -> books in sync now."""
        out = dict.fromkeys(self.books_total, 0)
        for st in list(self.depth_books):  # the exporter's thread, beside the event loop
            if st.in_sync:
                out[st.exchange] = out.get(st.exchange, 0) + 1
        return out

    def __post_init__(self) -> None:
        self.batch_latency = Histogram(
            "vps_brain_collector_batch_latency_seconds",
            "Receive time of a batch's first record to the entry acknowledged by Redis",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Export(self))


class _Export(Collector):
    def __init__(self, stats: CollectorStats) -> None:
        self.s = stats

    def collect(self) -> Iterator[Metric]:
        s = self.s
        p = "vps_brain_collector_"
        labelled: tuple[tuple[str, str, Mapping[Any, int], tuple[str, ...]], ...] = (
            ("messages_in", "Websocket messages received", s.messages_in, ("exchange", "stream")),
            ("bytes_in", "Raw bytes received", s.bytes_in, ("exchange", "stream")),
            ("records_out", "Records written to Redis", s.records_out, ("key",)),
            (
                "bytes_out",
                "Entry bytes written to Redis (after compression)",
                s.bytes_out,
                ("key",),
            ),
            ("entries_out", "Stream entries written to Redis", s.entries_out, ("key",)),
            (
                "duplicates",
                "Messages dropped as duplicates (renewal overlap)",
                s.duplicates,
                ("exchange", "stream"),
            ),
            ("resyncs", "Depth resyncs started", s.resyncs, ("exchange", "symbol")),
            ("snapshots", "REST snapshots written", s.snapshots, ("exchange", "symbol")),
            ("quarantined", "Frames quarantined", s.quarantined, ("reason",)),
            ("gaps", "Sequence gaps detected", s.gaps, ("exchange", "symbol", "channel")),
            ("rest_requests", "REST snapshot requests", s.rest_requests, ("exchange",)),
            ("rest_429", "REST 429/418 answers", s.rest_429, ("exchange",)),
        )
        for name, doc, data, labels in labelled:
            m = CounterMetricFamily(p + name, doc, labels=list(labels))
            # A copy: this runs in the exporter's thread while the event loop adds keys (iterating
            # the dict itself fails with "dictionary changed size during iteration").
            for k, v in list(data.items()):
                m.add_metric(list(k) if isinstance(k, tuple) else [k], v)
            yield m
        for name, doc, value in (
            ("reconnects", "Unplanned reconnects", s.reconnects),
            ("renewals", "Planned connection renewals", s.renewals),
            ("spooled_batches", "Batches written to the disk spool", s.spooled_batches),
            ("drained_batches", "Batches drained from the spool to Redis", s.drained_batches),
            ("trimmed_entries", "Entries trimmed after acknowledgement", s.trimmed_entries),
            (
                "spool_quarantined",
                "Corrupt spool regions moved to the quarantine file (each one a gap)",
                s.spool_quarantined,
            ),
            (
                "spool_quarantined_bytes",
                "Bytes of corrupt spool regions moved to the quarantine file",
                s.spool_quarantined_bytes,
            ),
        ):
            yield CounterMetricFamily(p + name, doc, value=value)
        gauges: tuple[tuple[str, str, float], ...] = (
            ("spool_bytes", "Bytes waiting in the disk spool", s.spool_bytes),
            ("spool_batches", "Batches waiting in the disk spool", s.spool_batches),
            ("queued_records", "Records waiting in memory for Redis", s.queued_records),
            ("spilling", "1 while batches go to the spool instead of Redis", s.spilling),
            (
                "input_bytes_per_second",
                "Entry bytes written per second, smoothed over about a minute",
                s.input_bytes_per_second,
            ),
            (
                "hold_room_bytes",
                "Bytes the backlog may still take: Redis to the high watermark plus the spool",
                s.hold_room_bytes,
            ),
            (
                "hold_seconds",
                "Seconds the VPS can hold the backlog at the input rate if the Brain stops",
                s.hold_seconds,
            ),
        )
        for name, doc, level in gauges:
            yield GaugeMetricFamily(p + name, doc, value=level)
        books = GaugeMetricFamily(
            p + "books", "Symbols with a depth stream (order books)", labels=["exchange"]
        )
        synced = GaugeMetricFamily(
            p + "books_synced", "Order books in sync now", labels=["exchange"]
        )
        all_synced = GaugeMetricFamily(
            p + "all_books_synced_seconds",
            "Seconds from the collector's start until every book was first in sync (-1: not yet)",
            labels=["exchange"],
        )
        in_sync = s.books_synced()
        for exchange, total in list(s.books_total.items()):
            books.add_metric([exchange], total)
            synced.add_metric([exchange], in_sync.get(exchange, 0))
            all_synced.add_metric([exchange], s.all_books_synced_s.get(exchange, -1.0))
        yield books
        yield synced
        yield all_synced
