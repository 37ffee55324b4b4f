#!/usr/bin/env python
"""Cost with the number of symbols: the generated market at 10, 100, 1,000 and 2,000 symbols.

Each size runs the real chain, every part its own process so that CPU and memory are per process
(``/proc/<pid>/stat`` and ``/proc/<pid>/status``): a fresh redis-server, ``vps-brain simulate``
(generated market), ``vps-brain collect`` (pinned to one CPU, ``--collector-cpu``) and
``vps-brain consume`` into a Parquet store, configured with YAML files in a temporary directory.

The market: ``--market-symbols`` (2,000) symbols at ``--rate`` messages a second in all (default
10,000: trade 25 %, bookTicker 50 %, depth@100ms 25 %), spread over the symbols by Zipf with
exponent ``--skew`` (1.0): the symbol of rank k carries 1/k of the traffic of the first, and no
symbol sends more than 10 depth events a second (``depth@100ms``); see
``SimulatorSettings.rate_skew`` for why. A size of N symbols is the N most active of that market
(the simulator's ``rate_skew`` with per-symbol means chosen so that rank k keeps its rate): 10
symbols carry about a third of the market's messages, 1,000 about nine tenths. A real whole spot
market is larger (an assumption, not measured: several tens of thousands of messages a second on
~1,500 symbols); 10,000 is what this 2-core machine carries with the simulator, collector, Redis
and consumer on it together.

Per size it waits until every book is synced (the collector's ``books_synced`` gauge if it has
one, else a ``vps_brain_collector_snapshots`` sample for every symbol), then measures a steady
window of ``--seconds``: collector CPU-seconds per million messages, collector and consumer peak
RSS (``VmHWM``), Redis ``used_memory`` per minute of traffic (trimming off: what the VPS holds per
minute the Brain does not read), bytes read by the Brain per raw byte received, consumer
CPU-seconds per million records, Parquet files and bytes per hour (scaled from the window; files
at the bench's flush interval), gaps and 429s, and whether the collector kept up (generated msg/s
against received). The first sync is bounded by the REST weight budget (spot 6,000 a minute):
that bound is printed beside the measured time.

It prints one table (sizes as columns), then a growth table: each figure's ratio between
successive sizes beside the ratios of symbols and messages, so a reader sees whether a cost is
linear in either. Nothing is asserted: this is a measurement.

Usage: ``python bench/bench_scale.py [--sizes 10,100,1000,2000] [--seconds 60] [--rate 10000]``
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

from vps_brain.config import MarketSettings
from vps_brain.sim.market import skewed_rates, zipf_weights
from vps_brain.venues import VENUES

SPOT = VENUES["spot"]
CHANNELS = ("trade", "depth@100ms", "bookTicker")
#: Share of the market's messages per simulator rate.
MIX = {"trade_rate": 0.25, "ticker_rate": 0.50, "depth_rate": 0.25}
DEPTH_CAP = 10.0  # depth@100ms: at most 10 events a second per symbol
HOT = 10  # symbols snapshotted at 1,000 levels when per-symbol limits exist; the rest at TAIL
HOT_LIMIT, TAIL_LIMIT = 1000, 100
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def harmonic(n: int, s: float) -> float:
    return math.fsum(k**-s for k in range(1, n + 1))


def symbol_names(n: int) -> list[str]:
    return [f"s{k:04d}usdt" for k in range(1, n + 1)]


def rates_for(n: int, market: int, rate: float, skew: float) -> dict[str, float]:
    """Per-symbol mean rates that make N symbols the N most active of the market."""
    share = harmonic(n, skew) / harmonic(market, skew)
    out = {k: rate * mix * share / n for k, mix in MIX.items() if k != "depth_rate"}
    depth = skewed_rates(market, rate * MIX["depth_rate"] / market, skew, DEPTH_CAP)
    out["depth_rate"] = math.fsum(depth[:n]) / n
    return out


def per_symbol_limits() -> bool:
    return "snapshot_limits" in MarketSettings.model_fields


# ----------------------------------------------------------------------------------- probes


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples of a Prometheus endpoint by name (``_total`` of counters kept in the name).

    Retries a 500: the collector's exporter thread iterates its counters' dicts while the event
    loop adds keys ("dictionary changed size during iteration", collect/stats.py).
    """
    for attempt in range(10):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            break
        except urllib.error.HTTPError as exc:
            if exc.code != 500 or attempt == 9:
                raise
            time.sleep(0.05)
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def total(m: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return math.fsum(
        v for lab, v in m.get(name, ()) if all(lab.get(k) == want for k, want in labels.items())
    )


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def wait_for(cond: Callable[[], bool], limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if cond():
                return
        time.sleep(0.1)
    raise SystemExit(f"{what}: not within {limit_s:.0f} s")


def store_files(root: Path) -> tuple[int, int]:
    n = size = 0
    for dirpath, _dirs, files in os.walk(root / "data"):
        for f in files:
            if f.endswith(".parquet") and not f.startswith("."):
                n += 1
                size += os.stat(os.path.join(dirpath, f)).st_size
    return n, size


# ------------------------------------------------------------------------------------- run


@dataclass
class Procs:
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, args: list[str], cpus: set[int] | None, log: Path) -> int:
        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        with log.open("wb") as out:
            p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pin)
        self.procs[name] = p
        return p.pid

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def check(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise SystemExit(f"{name} exited with {p.returncode}")

    def stop_all(self) -> None:
        for _name, p in reversed(self.procs.items()):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


@dataclass
class Sample:
    at: float
    col_cpu: float
    con_cpu: float
    sim_cpu: float
    msgs_in: float
    bytes_in: float
    read_bytes: float
    records: float
    used_memory: int
    sent: int


def yaml_file(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc, indent=1))  # JSON is YAML
    return path


def run_size(n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    d = work / f"n{n}"
    d.mkdir()
    symbols = symbol_names(n)
    rates = rates_for(n, args.market_symbols, args.rate, args.skew)
    planned = n * sum(rates.values())
    redis_port, sim_port = free_port(), free_port()
    col_metrics, con_metrics = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    limits = per_symbol_limits()
    market: dict[str, Any] = {
        "venue": "spot",
        "symbols": symbols,
        "channels": list(CHANNELS),
        "ws_url": f"ws://127.0.0.1:{sim_port}",
        "rest_url": f"http://127.0.0.1:{sim_port}",
    }
    snapshot_limit = TAIL_LIMIT
    if limits:
        market["snapshot_limits"] = {s: HOT_LIMIT for s in symbols[:HOT]}
    weights = [
        SPOT.depth_weight(HOT_LIMIT if limits and i < HOT else snapshot_limit) for i in range(n)
    ]
    sim_cfg = yaml_file(
        d / "simulator.yaml",
        {
            "simulator": {
                "port": sim_port,
                "symbols": symbols,
                **rates,
                "rate_skew": args.skew,
                "max_depth_rate": DEPTH_CAP,
                "book_levels": 200,
            }
        },
    )
    col_cfg = yaml_file(
        d / "collector.yaml",
        {
            "redis": {"url": redis_url},
            "collector": {
                "markets": [market],
                # the simulator's HTTP server takes request lines up to 8 KiB (docs/scaling.md)
                "max_streams_per_connection": 200,
                "snapshot_limit": snapshot_limit,
                "spool_dir": str(d / "spool"),
                "trim_interval_s": 0,
                "metrics_port": col_metrics,
                "log_level": "WARNING",
                "log_format": "text",
            },
        },
    )
    con_cfg = yaml_file(
        d / "consumer.yaml",
        {
            "redis": {"url": redis_url},
            "consumer": {
                "store_dir": str(d / "store"),
                "consumer_name": "bench",
                "discover_interval_s": 2.0,
                "flush_interval_s": args.flush_interval,
                "metrics_port": con_metrics,
                "log_level": "WARNING",
                "log_format": "text",
            },
        },
    )
    procs = Procs()
    other = {c for c in os.sched_getaffinity(0) if c != args.collector_cpu} or None
    cli = [sys.executable, "-m", "vps_brain.cli"]
    try:
        rdir = d / "redis"
        rdir.mkdir()
        procs.start(
            "redis",
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(rdir),
             "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"],
            None,
            d / "redis.log",
        )  # fmt: skip
        r = redis.Redis(port=redis_port)
        wait_for(lambda: bool(r.ping()), 10, "redis-server")
        procs.start(
            "simulator", [*cli, "simulate", "--config", str(sim_cfg)], other, d / "simulator.log"
        )
        sim_url = f"http://127.0.0.1:{sim_port}"
        wait_for(lambda: bool(get_json(sim_url + "/_sim/stats")), 60, "simulator")
        t_start = time.monotonic()
        procs.start(
            "collector",
            [*cli, "collect", "--config", str(col_cfg)],
            {args.collector_cpu},
            d / "collector.log",
        )
        procs.start("consumer", [*cli, "consume", "--config", str(con_cfg)], other, d / "con.log")
        wait_for(lambda: bool(scrape(col_metrics)), 60, "collector metrics")
        wait_for(lambda: bool(scrape(con_metrics)), 60, "consumer metrics")

        # ---- until every book is synced
        synced_s: float | None = None
        gauge = False
        deadline = t_start + args.sync_timeout
        while time.monotonic() < deadline:
            procs.check()
            m = scrape(col_metrics)
            if "vps_brain_collector_books_synced" in m:
                gauge = True
                done = total(m, "vps_brain_collector_books_synced") >= n
            else:
                have = {
                    lab.get("symbol")
                    for lab, v in m.get("vps_brain_collector_snapshots_total", ())
                    if v > 0
                }
                done = len(have) >= n
            if done:
                synced_s = time.monotonic() - t_start
                break
            time.sleep(0.25)

        # ---- the steady window
        def sample() -> Sample:
            stats = get_json(sim_url + "/_sim/stats")  # sent first: received can only catch up
            cm, nm = scrape(col_metrics), scrape(con_metrics)
            return Sample(
                at=time.monotonic(),
                col_cpu=cpu_seconds(procs.pid("collector")),
                con_cpu=cpu_seconds(procs.pid("consumer")),
                sim_cpu=cpu_seconds(procs.pid("simulator")),
                msgs_in=total(cm, "vps_brain_collector_messages_in_total"),
                bytes_in=total(cm, "vps_brain_collector_bytes_in_total"),
                read_bytes=total(nm, "vps_brain_consumer_read_bytes_total"),
                records=total(nm, "vps_brain_consumer_records_total"),
                used_memory=int(r.info("memory")["used_memory"]),  # type: ignore[index]
                sent=sum(stats["sent"].values()),
            )

        a = sample()
        end = a.at + args.seconds
        while time.monotonic() < end:
            procs.check()
            time.sleep(0.5)
        b = sample()
        cm, nm = scrape(col_metrics), scrape(con_metrics)
        files, size = store_files(d / "store")
        stored = total(nm, "vps_brain_consumer_records_total")
        flushes = total(nm, "vps_brain_consumer_flushes_total")
        parts = total(nm, "vps_brain_consumer_parts_written_total")
        if gauge and "vps_brain_collector_all_books_synced_seconds" in cm:
            own = total(cm, "vps_brain_collector_all_books_synced_seconds")
        else:
            own = None
        wall = b.at - a.at
        msgs, recs = b.msgs_in - a.msgs_in, b.records - a.records
        out = {
            "symbols": n,
            "planned msg/s": planned,
            "generated msg/s (sent)": (b.sent - a.sent) / wall,
            "received msg/s": msgs / wall,
            "in flight at start / end, msgs": f"{a.sent - a.msgs_in:,.0f} / "
            f"{b.sent - b.msgs_in:,.0f}",
            "collector CPU-s / M msg": (b.col_cpu - a.col_cpu) / msgs * 1e6,
            "collector CPU share of its core": (b.col_cpu - a.col_cpu) / wall,
            "simulator CPU share": (b.sim_cpu - a.sim_cpu) / wall,
            "collector RSS max MiB": status_kib(procs.pid("collector"), "VmHWM") / 1024,
            "consumer RSS max MiB": status_kib(procs.pid("consumer"), "VmHWM") / 1024,
            "Redis MiB / min of traffic": (b.used_memory - a.used_memory) / wall * 60 / 2**20,
            "Brain bytes / raw byte": (b.read_bytes - a.read_bytes) / (b.bytes_in - a.bytes_in),
            "time to all books synced s": synced_s,
            "  (collector's own gauge s)": own,
            "REST weight of the first sync": sum(weights),
            "  budget bound, min at 6,000/min": sum(weights) / SPOT.weight_per_minute,
            "consumer CPU-s / M records": (b.con_cpu - a.con_cpu) / recs * 1e6 if recs else None,
            "consumer CPU share": (b.con_cpu - a.con_cpu) / wall,
            "consumer lag at the end, entries": total(nm, "vps_brain_consumer_lag_entries"),
            "Parquet files / hour": parts / flushes * 3600 / args.flush_interval
            if flushes
            else None,
            "Parquet MiB / hour": size / stored * recs / wall * 3600 / 2**20 if stored else None,
            "gaps": total(cm, "vps_brain_collector_gaps_total"),
            "REST 429": total(cm, "vps_brain_collector_rest_429_total"),
            "_files": files,
            # not behind by more at the end than at the start (or than a second of traffic)
            "_kept_up": b.sent - b.msgs_in <= max(a.sent - a.msgs_in, msgs / wall),
            "_limits": limits,
            "_gauge": gauge,
        }
        return out
    except BaseException:
        for log in sorted(d.glob("*.log")):
            print(f"--- {log.name} (last lines)\n" + "\n".join(log.read_text().splitlines()[-15:]))
        raise
    finally:
        procs.stop_all()
        shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------------------------- print

#: Figures whose growth is compared, and whether they are per message already.
GROWTH = (
    ("received msg/s", False),
    ("collector CPU-s / M msg", True),
    ("collector RSS max MiB", False),
    ("consumer RSS max MiB", False),
    ("Redis MiB / min of traffic", False),
    ("Brain bytes / raw byte", True),
    ("time to all books synced s", False),
    ("consumer CPU-s / M records", True),
    ("Parquet files / hour", False),
    ("Parquet MiB / hour", False),
)


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 100):
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def table(rows: list[tuple[str, list[str]]], head: list[str]) -> Iterator[str]:
    width = max(len(r[0]) for r in rows)
    cols = [max(len(h), *(len(r[1][i]) for r in rows)) for i, h in enumerate(head)]
    yield " " * width + "  " + "  ".join(h.rjust(c) for h, c in zip(head, cols, strict=True))
    for name, cells in rows:
        yield (
            name.ljust(width)
            + "  "
            + "  ".join(x.rjust(c) for x, c in zip(cells, cols, strict=True))
        )


def report(results: list[dict[str, Any]]) -> None:
    head = [f"{r['symbols']:,}" for r in results]
    keys = [k for k in results[0] if not k.startswith("_") and k != "symbols"]
    rows = [(k, [fmt(r[k]) for r in results]) for k in keys]
    kept = ["yes" if r["_kept_up"] else "NO" for r in results]
    rows.append(("collector kept up (in flight not growing)", kept))
    print()
    for line in table(rows, head):
        print("    " + line)
    if len(results) < 2:
        return
    pairs = list(itertools.pairwise(results))
    ghead = [f"{b['symbols']:,}/{a['symbols']:,}" for a, b in pairs]

    def ratio(a: Any, b: Any) -> str:
        return f"{b / a:.2f}x" if a and b is not None else "-"

    grows = [
        ("symbols", [ratio(a["symbols"], b["symbols"]) for a, b in pairs]),
        ("messages (received msg/s)", [ratio(a[GROWTH[0][0]], b[GROWTH[0][0]]) for a, b in pairs]),
    ]
    for key, per_message in GROWTH[1:]:
        label = key + (" (per message: 1x = linear)" if per_message else "")
        grows.append((label, [ratio(a[key], b[key]) for a, b in pairs]))
    for key in ("collector RSS max MiB", "consumer RSS max MiB"):
        grows.append(
            (
                key.replace(" max MiB", ": KiB per added symbol"),
                [
                    f"{(b[key] - a[key]) * 1024 / (b['symbols'] - a['symbols']):.1f}"
                    for a, b in pairs
                ],
            )
        )
    print("\n    growth between successive sizes (figure(b) / figure(a)):")
    for line in table(grows, ghead):
        print("    " + line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,100,1000,2000", help="comma-separated symbol counts")
    ap.add_argument("--seconds", type=float, default=60, help="steady window per size (s)")
    ap.add_argument("--rate", type=float, default=10_000, help="msg/s of the whole market")
    ap.add_argument("--market-symbols", type=int, default=2000, help="symbols of that market")
    ap.add_argument("--skew", type=float, default=1.0, help="Zipf exponent of the traffic")
    ap.add_argument("--sync-timeout", type=float, default=240, help="longest wait for sync (s)")
    ap.add_argument("--collector-cpu", type=int, default=max(os.sched_getaffinity(0)))
    ap.add_argument("--flush-interval", type=float, default=15, help="consumer flush (s)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    if shutil.which("redis-server") is None:
        sys.exit("redis-server not found")
    if max(sizes) > args.market_symbols:
        sys.exit("--sizes must not exceed --market-symbols")
    limits = per_symbol_limits()
    top = zipf_weights(args.market_symbols, args.skew)[0] / args.market_symbols
    now = datetime.now(UTC)
    py = sys.version.split()[0]
    print(f"vps_brain scale bench, {now:%Y-%m-%d %H:%M} UTC, python {py}, {os.cpu_count()} CPUs")
    print(f"    host load (uptime) at the start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"    market: {args.market_symbols:,} symbols, {args.rate:,.0f} msg/s (trade 25 %, "
        f"bookTicker 50 %, depth@100ms 25 %, at most {DEPTH_CAP:.0f} depth/s a symbol), Zipf "
        f"s={args.skew} (the top symbol {top:.1%} of trades and tickers); a size of N = its N "
        "most active symbols"
    )
    print(
        f"    collector on CPU {args.collector_cpu}; simulator and consumer on the others; "
        f"{args.seconds:.0f} s steady window per size after every book is synced; consumer "
        f"flush every {args.flush_interval:.0f} s; trimming off"
    )
    if limits:
        snaps = f"top {HOT} at limit {HOT_LIMIT}, the rest at {TAIL_LIMIT} (snapshot_limits)"
    else:
        weight = SPOT.depth_weight(TAIL_LIMIT)
        snaps = (
            f"snapshot_limit {TAIL_LIMIT} for every symbol (weight {weight}; no snapshot_limits)"
        )
    print("    snapshots: " + snaps)
    results = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for n in sizes:
            t = time.monotonic()
            print(f"    ... {n:,} symbols (load {os.getloadavg()[0]:.2f})", flush=True)
            results.append(run_size(n, args, Path(tmp)))
            print(f"        done in {time.monotonic() - t:.0f} s", flush=True)
    report(results)
    print(f"\n    wall {time.monotonic() - t0:.0f} s; load average at the end "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip


if __name__ == "__main__":
    main()
