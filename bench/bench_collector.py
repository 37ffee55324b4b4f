#!/usr/bin/env python
"""Collector benchmark: vps-brain collect vs a seed-style baseline, same input, same run.

Runs, against a private redis-server and the simulator (each in its own process):

1. throughput: both ETHUSDT recordings replayed as fast as possible into
   a) the collector (zstd batches, pipelined MULTI/EXEC XADD) and
   b) the baseline written the way the seed's guide does it: one awaited XADD per message with
      JSON fields (``json.loads`` the frame, ``json.dumps`` the data back), no compression;
   messages/s of each, their ratio, and raw exchange bytes / Redis-stored bytes
   (``MEMORY USAGE`` of the streams);
2. futures: the USD-M ETHUSDT recording (depth@0ms, trade, bookTicker) replayed as fast as
   possible into the collector as a ``usdm`` market (pu sequence rule, routed /public path):
   messages/s and raw / stored beside the spot figures;
3. latency: the collector at 5,000 msg/s (generated market); a separate reader process measures
   receive time (recorded ns in each record) -> entry visible in Redis (XREAD BLOCK), p50/p99.

Usage: ``.venv/bin/python bench/bench_collector.py [--latency-seconds 8] [--data DIR]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import redis
import redis.asyncio as aioredis

from vps_brain.collect.service import Collector
from vps_brain.config import Settings
from vps_brain.recordings import read_recording

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "binance"
FILES = ("spot_ethusdt_20240808.gz", "spot_ethusdt_20240809.gz")
FUTURES_FILE = "usdm_ethusdt_20240808.gz"
STREAMS = ("ethusdt@trade", "ethusdt@depth@100ms", "ethusdt@bookTicker")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, limit_s: float = 20) -> None:
    import urllib.request

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=0.5).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], **kw: object) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[bytes]) -> None:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self) -> None:
        for p in self.procs:
            self.stop(p)


def start_redis(procs: Procs, workdir: Path) -> int:
    port = free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    procs.start(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory-policy",
            "noeviction",
        ]
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            redis.Redis(port=port).ping()
            return port
        except redis.ConnectionError:
            time.sleep(0.02)
    raise SystemExit("redis-server did not start")


def start_sim(procs: Procs, args: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    p = procs.start([sys.executable, "-m", "vps_brain.cli", "simulate", "--port", str(port), *args])
    wait_http(f"http://127.0.0.1:{port}/_sim/stats")
    return p, port


def collector_settings(
    redis_port: int,
    sim_port: int,
    spool: Path,
    prefix: str,
    venue: str = "spot",
    channels: tuple[str, ...] = ("trade", "depth@100ms", "bookTicker"),
) -> Settings:
    market = {
        "venue": venue,
        "exchange": prefix,
        "ws_url": f"ws://127.0.0.1:{sim_port}",
        "rest_url": f"http://127.0.0.1:{sim_port}",
        "symbols": ["ethusdt"],
        "channels": list(channels),
    }
    return Settings.model_validate(
        {
            "redis": {"url": f"redis://127.0.0.1:{redis_port}/0"},
            "collector": {
                "markets": [market],
                "spool_dir": str(spool),
                "metrics_port": 0,
                "trim_interval_s": 0,
                "resync_jitter_s": 0.0,
            },
        }
    )


async def run_collector(settings: Settings, expected: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) from the first message to all in Redis."""
    col = Collector(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(col.run(stop))
    t0 = c0 = 0.0
    while sum(col.stats.messages_in.values()) < expected:
        if t0 == 0.0 and col.stats.messages_in:
            t0, c0 = time.perf_counter(), time.process_time()
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    await col.flushed()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    stop.set()
    await task
    return elapsed, cpu


async def run_baseline(redis_port: int, sim_port: int, expected: int) -> tuple[float, float]:
    """The seed guide's way: parse, one XADD per message with JSON fields, awaited."""
    r = aioredis.Redis(port=redis_port)
    url = f"ws://127.0.0.1:{sim_port}/stream?streams=" + "/".join(STREAMS)
    n = 0
    t0 = c0 = 0.0
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            if t0 == 0.0:
                t0, c0 = time.perf_counter(), time.process_time()
            event = json.loads(msg.data)
            await r.xadd(
                f"seed:{event['stream']}",
                {
                    "stream": event["stream"],
                    "data": json.dumps(event["data"]),
                    "recv_ts": str(time.time_ns()),
                },
            )
            n += 1
            if n >= expected:
                break
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    await r.aclose()
    return elapsed, cpu


def stored_bytes(port: int, pattern: str) -> int:
    r = redis.Redis(port=port)
    total = 0
    for key in r.scan_iter(match=pattern):
        total += int(r.memory_usage(key, samples=0) or 0)
    return total


LATENCY_READER = r"""
import sys, time, json, redis
from vps_brain.frame import decode_entry
port, key, seconds, warmup = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
r = redis.Redis(port=port)
last = "$"
lat = []
t_end = time.monotonic() + seconds
t_warm = time.monotonic() + warmup
while time.monotonic() < t_end:
    got = r.xread({key: last}, block=200, count=100)
    now = time.time_ns()
    for _k, entries in got or []:
        for eid, fields in entries:
            last = eid
            if time.monotonic() < t_warm:
                continue
            for rec in decode_entry(fields):
                if rec.kind == 1:
                    lat.append((now - rec.recv_ns) / 1e6)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
print(json.dumps({"n": len(lat), "p50": q(0.5), "p99": q(0.99), "max": lat[-1] if lat else None}))
"""


async def latency(procs: Procs, redis_port: int, spool: Path, seconds: float) -> dict[str, float]:
    sim, sim_port = start_sim(
        procs,
        [
            "--symbols",
            "ethusdt",
            "--trade-rate",
            "2200",
            "--ticker-rate",
            "2300",
            "--depth-rate",
            "500",
        ],
    )
    settings = collector_settings(redis_port, sim_port, spool, "lat")
    reader = await asyncio.create_subprocess_exec(
        *[
            sys.executable,
            "-c",
            LATENCY_READER,
            str(redis_port),
            "md:lat:ethusdt",
            str(seconds),
            "1.0",
        ],
        stdout=asyncio.subprocess.PIPE,
    )
    col = Collector(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(col.run(stop))
    await asyncio.sleep(seconds + 0.5)
    rate = sum(col.stats.messages_in.values()) / (seconds + 0.5)
    out, _ = await reader.communicate()
    stop.set()
    await task
    procs.stop(sim)
    result: dict[str, float] = json.loads(out)
    result["rate"] = rate
    return result


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--latency-seconds", type=float, default=8.0)
    args = ap.parse_args()
    files = [args.data / f for f in FILES]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise SystemExit(f"recorded data not found: {missing}")

    messages = [r for f in files for r in read_recording(f) if not r.is_snapshot]
    n = len(messages)
    raw_bytes = sum(len(r.raw) for r in messages)
    futures_file = args.data / FUTURES_FILE
    if not futures_file.exists():
        raise SystemExit(f"recorded data not found: {futures_file}")
    f_messages = [r for r in read_recording(futures_file) if not r.is_snapshot]
    f_n = len(f_messages)
    f_raw_bytes = sum(len(r.raw) for r in f_messages)

    procs = Procs()
    workdir = Path(tempfile.mkdtemp(prefix="bench-collector-"))
    try:
        redis_port = start_redis(procs, workdir)
        replay = [a for f in files for a in ("--replay", str(f))] + ["--speed", "0"]

        sim, sim_port = start_sim(procs, replay)
        t_col, cpu_col = await run_collector(
            collector_settings(redis_port, sim_port, workdir / "spool", "binance"), n
        )
        procs.stop(sim)

        sim, sim_port = start_sim(procs, replay)
        t_base, cpu_base = await run_baseline(redis_port, sim_port, n)
        procs.stop(sim)

        sim, sim_port = start_sim(
            procs, ["--venue", "usdm", "--replay", str(futures_file), "--speed", "0"]
        )
        futures = collector_settings(
            redis_port,
            sim_port,
            workdir / "spool-usdm",
            "binance-usdm",
            venue="usdm",
            channels=("trade", "depth@0ms", "bookTicker"),
        )
        t_fut, cpu_fut = await run_collector(futures, f_n)
        procs.stop(sim)

        col_stored = stored_bytes(redis_port, "md:binance:*")
        fut_stored = stored_bytes(redis_port, "md:binance-usdm:*")
        base_stored = stored_bytes(redis_port, "seed:*")
        lat = await latency(procs, redis_port, workdir / "spool-lat", args.latency_seconds)
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)

    col_rate = n / t_col
    base_rate = n / t_base
    rows = [
        ("input", f"{n:,} messages, {raw_bytes / 1e6:.1f} MB raw (ETHUSDT 2024-08-08/09)"),
        (
            "collector",
            f"{col_rate:>10,.0f} msg/s   ({t_col:.2f} s wall; {n / cpu_col:,.0f} msg per CPU-s)",
        ),
        (
            "seed baseline",
            f"{base_rate:>10,.0f} msg/s   ({t_base:.2f} s wall; {n / cpu_base:,.0f} msg per CPU-s)",
        ),
        ("ratio", f"{col_rate / base_rate:>10.1f} x     (target >= 3x; >= 50,000 msg/s)"),
        ("raw / stored", f"{raw_bytes / col_stored:>10.1f} x     (collector, target >= 7x)"),
        ("raw / stored", f"{raw_bytes / base_stored:>10.2f} x     (baseline)"),
        ("futures input", f"{f_n:,} messages, {f_raw_bytes / 1e6:.1f} MB raw (USD-M ETHUSDT)"),
        (
            "collector usdm",
            f"{f_n / t_fut:>10,.0f} msg/s   ({t_fut:.2f} s wall; {f_n / cpu_fut:,.0f} msg per "
            f"CPU-s; {f_n / t_fut / col_rate:.2f} x spot's rate)",
        ),
        ("raw / stored", f"{f_raw_bytes / fut_stored:>10.1f} x     (collector, usdm)"),
        (
            "latency @5k/s",
            f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms "
            f"({lat['n']:,} records at {lat['rate']:,.0f} msg/s; target p99 <= 20 ms)",
        ),
    ]
    load = os.getloadavg()[0]
    rows.append(
        ("host load", f"{load:.1f} on {os.cpu_count()} CPUs (shared machine: wall rates vary)")
    )
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main())
