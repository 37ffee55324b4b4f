"""The samples and the frame of ``vps-brain status``, a terminal dashboard of one VPS and one Brain.

Sources, each optional (a missing one shows as "unreachable", never stops the dashboard):

* the VPS Redis, as the Brain's read-only ACL user (settings ``redis``): memory against
  ``maxmemory``, per stream its length, entries added per second, and the consumer group's lag
  and pending count; the PING round trip is the tunnel latency;
* the collector's Prometheus endpoint on the VPS (``--collector-metrics``): messages/s in,
  records/s to Redis, disk spool, how long the VPS could hold the backlog if the Brain stopped
  reading (:mod:`vps_brain.collect.hold`), reconnects, gaps, memory;
* the consumer's endpoint on the Brain (``--consumer-metrics``): records/s stored, lag in seconds
  and entries, buffered records, disk state, quarantined entries, memory.

Rates are differences between two samples (:func:`render`); the command,
:mod:`vps_brain.commands.status`, samples and prints.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

Metrics = dict[str, dict[tuple[tuple[str, str], ...], float]]


@dataclass
class StreamInfo:
    length: int = 0
    added: int = 0  # entries-added since the stream was created
    lag: int | None = None
    pending: int | None = None


@dataclass
class Sample:
    t: float
    vps_error: str | None = None
    rtt_ms: float | None = None
    used_memory: int = 0
    maxmemory: int = 0
    streams: dict[str, StreamInfo] = field(default_factory=dict)
    collector: Metrics | None = None
    collector_error: str | None = None
    consumer: Metrics | None = None
    consumer_error: str | None = None


def scrape(url: str, timeout: float = 2.0) -> Metrics:
    """Prometheus text from ``url`` as ``name -> {labels: value}`` (counters keep ``_total``)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text = resp.read().decode()
    out: Metrics = defaultdict(dict)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = float(s.value)
    return dict(out)


def total(m: Metrics | None, name: str) -> float | None:
    if m is None or name not in m:
        return None
    return sum(m[name].values())


def sample_vps(r: redis.Redis, group: str, pattern: str, s: Sample) -> None:
    rtts = []
    for _ in range(3):
        t0 = time.perf_counter()
        r.ping()
        rtts.append((time.perf_counter() - t0) * 1000)
    s.rtt_ms = min(rtts)
    info: Any = r.info("memory")
    s.used_memory = int(info.get("used_memory", 0))
    s.maxmemory = int(info.get("maxmemory", 0))
    for raw in r.scan_iter(match=pattern, count=1000, _type="STREAM"):
        key = raw.decode() if isinstance(raw, bytes) else raw
        st = StreamInfo()
        xi: Any = r.xinfo_stream(key)
        st.length = int(xi.get("length", 0))
        st.added = int(xi.get("entries-added", st.length) or 0)
        groups: Any = r.xinfo_groups(key)
        for g in groups:
            name = g.get("name")
            name = name.decode() if isinstance(name, bytes) else name
            if name == group:
                lag = g.get("lag")
                st.lag = int(lag) if lag is not None else None
                st.pending = int(g.get("pending", 0))
        s.streams[key] = st


def take_sample(
    r: redis.Redis | None,
    group: str,
    pattern: str,
    collector_url: str | None,
    consumer_url: str | None,
) -> Sample:
    s = Sample(time.monotonic())
    if r is not None:
        try:
            sample_vps(r, group, pattern, s)
        except (redis.RedisError, OSError) as exc:
            s.vps_error = str(exc) or type(exc).__name__
    if collector_url:
        try:
            s.collector = scrape(collector_url)
        except (OSError, ValueError) as exc:
            s.collector_error = str(exc)
    if consumer_url:
        try:
            s.consumer = scrape(consumer_url)
        except (OSError, ValueError) as exc:
            s.consumer_error = str(exc)
    return s


def _bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _duration(seconds: float | None) -> str:
    """``3h25m`` from seconds; ``-`` unknown (NaN or absent), ``unbounded`` for +Inf."""
    if seconds is None or math.isnan(seconds):
        return "-"
    if math.isinf(seconds):
        return "unbounded"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m{int(seconds % 60):02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _num(n: float | None, fmt: str = ",.0f") -> str:
    return "-" if n is None else format(n, fmt)


def _rate(cur: Metrics | None, prev: Metrics | None, name: str, dt: float) -> float | None:
    a, b = total(cur, name), total(prev, name)
    if a is None or b is None or dt <= 0:
        return None
    return max(0.0, (a - b) / dt)


def render(prev: Sample, cur: Sample, title: str = "") -> str:
    """One dashboard frame from two samples (pure: tested without a terminal)."""
    dt = cur.t - prev.t
    lines = [f"vps-brain status {title}  {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}"]
    lines.append("")
    lines.append("VPS")
    if cur.vps_error is not None:
        lines.append(f"  redis: unreachable ({cur.vps_error})")
    elif cur.rtt_ms is not None:
        mem = _bytes(cur.used_memory)
        if cur.maxmemory:
            mem += f" / {_bytes(cur.maxmemory)} ({100 * cur.used_memory / cur.maxmemory:.0f}%)"
        lines.append(f"  tunnel latency (PING) {cur.rtt_ms:.2f} ms    redis memory {mem}")
        lines.append(f"  {'stream':32s} {'length':>10s} {'in/s':>9s} {'lag':>9s} {'pending':>9s}")
        for key, st in sorted(cur.streams.items()):
            before = prev.streams.get(key)
            rate = (st.added - before.added) / dt if before is not None and dt > 0 else None
            lines.append(
                f"  {key:32s} {st.length:>10,} {_num(rate):>9s} "
                f"{_num(st.lag):>9s} {_num(st.pending):>9s}"
            )
    c, pc = cur.collector, prev.collector
    if cur.collector_error is not None:
        lines.append(f"  collector: unreachable ({cur.collector_error})")
    elif c is not None:
        p = "vps_brain_collector_"
        lines.append(
            f"  collector  in {_num(_rate(c, pc, p + 'messages_in_total', dt))} msg/s   "
            f"to redis {_num(_rate(c, pc, p + 'records_out_total', dt))} rec/s   "
            f"spool {_bytes(total(c, p + 'spool_bytes'))}"
            f"{' SPILLING' if total(c, p + 'spilling') else ''}   "
            f"queued {_num(total(c, p + 'queued_records'))}   "
            f"holds {_duration(total(c, p + 'hold_seconds'))}"
        )
        lines.append(
            f"             reconnects {_num(total(c, p + 'reconnects_total'))}   "
            f"gaps {_num(total(c, p + 'gaps_total'))}   "
            f"quarantined {_num(total(c, p + 'quarantined_total'))}   "
            f"memory {_bytes(total(c, 'process_resident_memory_bytes'))}"
        )
    lines.append("")
    lines.append("BRAIN")
    b, pb = cur.consumer, prev.consumer
    if cur.consumer_error is not None:
        lines.append(f"  consumer: unreachable ({cur.consumer_error})")
    elif b is not None:
        p = "vps_brain_consumer_"
        lag_map = b.get(p + "lag_seconds")
        lag_s = max(lag_map.values()) if lag_map else None
        lag_n = total(b, p + "lag_entries")
        disk = "BLOCKED (acks stopped)" if total(b, p + "disk_blocked") else "ok"
        rtt = total(b, "vps_brain_tunnel_rtt_seconds")
        lines.append(
            f"  consumer   stored {_num(_rate(b, pb, p + 'records_total', dt))} rec/s   "
            f"lag {_num(lag_s, '.3f')} s / {_num(lag_n)} entries   "
            f"buffered {_num(total(b, p + 'buffered_records'))}   disk {disk}"
        )
        lines.append(
            f"             tunnel latency {_num(None if rtt is None else rtt * 1000, '.2f')} ms   "
            f"quarantined {_num(total(b, p + 'quarantined_total'))}   "
            f"connected {'yes' if total(b, p + 'connected') else 'NO'}   "
            f"memory {_bytes(total(b, 'process_resident_memory_bytes'))}"
        )
        lines.extend(_catchup_lines(b, pb, dt))
    return "\n".join(lines)


def _path_rate(cur: Metrics, prev: Metrics | None, path: str, dt: float) -> float | None:
    name = "vps_brain_consumer_read_bytes_total"
    key = (("path", path),)
    a = cur.get(name, {}).get(key)
    b = (prev or {}).get(name, {}).get(key)
    if a is None or b is None or dt <= 0:
        return None
    return max(0.0, (a - b) / dt)


def _catchup_lines(b: Metrics, pb: Metrics | None, dt: float) -> list[str]:
    """After an outage (vps_brain.consume.catchup): the streams catching up, the backlog, how
    fast it drains and when it will be done, and what the two read paths take of the link."""
    p = "vps_brain_consumer_"
    up = [dict(k).get("stream", "") for k, v in b.get(p + "catching_up", {}).items() if v]
    if not up:
        return []
    lags = b.get(p + "lag_entries", {})
    backlog = sum(v for k, v in lags.items() if dict(k).get("stream") in up)
    before = (pb or {}).get(p + "lag_entries", {})
    prev_backlog = sum(v for k, v in before.items() if dict(k).get("stream") in up)
    drain = (prev_backlog - backlog) / dt if before and dt > 0 else None
    if drain is None:
        eta = "?"
    elif drain <= 0:
        eta = "not draining"
    else:
        eta = _duration(backlog / drain)
    behind = max(
        (v for k, v in b.get(p + "behind_seconds", {}).items() if dict(k).get("stream") in up),
        default=None,
    )
    group, tail = _path_rate(b, pb, "group", dt), _path_rate(b, pb, "tail", dt)
    return [
        f"  catch-up   {len(up)} stream(s) catching up, live feed on the newest entries   "
        f"store behind {_duration(behind)}",
        f"             backlog {_num(backlog)} entries   drain {_num(drain)} entries/s   "
        f"caught up in {eta}   reads: backlog {_bytes(group)}/s, live {_bytes(tail)}/s",
    ]
