"""Prometheus metrics of ``vps-brain consume`` (one registry per consumer, served over HTTP).

Names start with ``vps_brain_consumer_`` except the tunnel probe, ``vps_brain_tunnel_rtt_seconds``
(the seed's ping check as a metric: PING round trip to the VPS Redis through the tunnel).
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        p = "vps_brain_consumer_"
        self.entries = Counter(p + "entries", "Stream entries read", ["stream"], registry=r)
        self.records = Counter(p + "records", "Records stored", ["stream"], registry=r)
        self.bytes = Counter(p + "payload_bytes", "Payload bytes stored", ["stream"], registry=r)
        self.duplicates = Counter(
            p + "duplicates", "Entries already stored, acknowledged without storing", registry=r
        )
        self.quarantined = Counter(
            p + "quarantined",
            "Corrupt or unknown-version entries quarantined (stored aside with their id)",
            ["stream"],
            registry=r,
        )
        self.missing = Counter(
            p + "missing", "Pending entries deleted on the VPS before they were read", registry=r
        )
        self.acked = Counter(p + "acked", "Entries acknowledged (XACK)", registry=r)
        self.flushes = Counter(p + "flushes", "Committed store flushes", registry=r)
        self.flush_errors = Counter(
            p + "flush_errors", "Store flushes that failed (disk full, I/O error)", registry=r
        )
        self.flush_seconds = Histogram(
            p + "flush_seconds",
            "Time to write, fsync and checkpoint one flush",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.parts = Counter(p + "parts_written", "Parquet part files written", registry=r)
        self.compacted = Counter(
            p + "compacted_parts", "Part files merged into per-hour or per-day files", registry=r
        )
        self.buffered_records = Gauge(
            p + "buffered_records", "Records read but not yet committed", registry=r
        )
        self.buffered_bytes = Gauge(
            p + "buffered_bytes", "Approximate bytes read but not yet committed", registry=r
        )
        self.disk_blocked = Gauge(
            p + "disk_blocked",
            "1 while the store refuses writes: acknowledgements are stopped",
            registry=r,
        )
        self.connected = Gauge(p + "connected", "1 while connected to the VPS Redis", registry=r)
        self.reconnects = Counter(
            p + "reconnects", "Connection losses to the VPS Redis", registry=r
        )
        self.lag_entries = Gauge(
            p + "lag_entries",
            "Entries in the stream not yet delivered to the group",
            ["stream"],
            registry=r,
        )
        self.pending_entries = Gauge(
            p + "pending_entries",
            "Entries delivered but not yet acknowledged",
            ["stream"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            p + "lag_seconds",
            "Now minus the receive time (collector clock) of the last record read",
            ["stream"],
            registry=r,
        )
        self.catching_up = Gauge(
            p + "catching_up",
            "1 while the stream is catching up: the live feed follows its newest entries while "
            "the group drains the backlog",
            ["stream"],
            registry=r,
        )
        self.behind_seconds = Gauge(
            p + "behind_seconds",
            "Age of the last entry delivered to the group while entries are undelivered (VPS "
            "clock of the entry id against the Brain's): how far behind the store is",
            ["stream"],
            registry=r,
        )
        self.read_bytes = Counter(
            p + "read_bytes",
            "Entry bytes read from the VPS Redis, by path: group (in order, for the store) or "
            "tail (newest entries for the live feed while catching up)",
            ["path"],
            registry=r,
        )
        self.catchup_throttled_seconds = Counter(
            p + "catchup_throttled_seconds",
            "Time the group's reads waited for the catch-up bandwidth budget",
            registry=r,
        )
        self.stream_resets = Counter(
            p + "stream_resets",
            "Streams found behind the store's checkpoint (recreated on the VPS)",
            ["stream"],
            registry=r,
        )
        self.live_published = Counter(
            p + "live_published", "Entries published to the live feed", registry=r
        )
        self.live_errors = Counter(
            p + "live_errors", "Failed publications to the live feed's Redis", registry=r
        )
        self.live_lost = Counter(
            p + "live_lost",
            "Entries not published to the live feed's Redis (stored all the same), by reason: "
            "error (an error reply, e.g. OOM), connection, timeout, overflow (publisher behind)",
            ["reason"],
            registry=r,
        )
        self.live_queued = Gauge(
            p + "live_queued", "Entries waiting for the live feed's publisher", registry=r
        )
        self.live_publish_seconds = Histogram(
            p + "live_publish_seconds",
            "Time of one publication (a pipeline of XADDs) to the live feed's Redis",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.live_dropped = Counter(
            p + "live_dropped",
            "Live feed items dropped for a slow in-process subscriber",
            registry=r,
        )
        self.tunnel_rtt = Gauge(
            "vps_brain_tunnel_rtt_seconds",
            "PING round trip to the VPS Redis through the tunnel (last probe)",
            registry=r,
        )
        self.tunnel_rtt_hist = Histogram(
            "vps_brain_tunnel_rtt_distribution_seconds",
            "PING round trips to the VPS Redis through the tunnel",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )

    def serve(self, host: str, port: int) -> None:
        """Expose ``/metrics`` on ``host:port`` (a daemon thread)."""
        start_http_server(port, addr=host, registry=self.registry)
