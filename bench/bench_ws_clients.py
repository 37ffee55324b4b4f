#!/usr/bin/env python
"""Websocket clients for the collector: aiohttp (what it uses) against ``websockets``, same run.

The design card this project started from names ``websockets``; the collector and the simulator
use aiohttp. This measures both clients on the collector's workload, each in its own process
against the same simulator process (``vps-brain simulate``, generated market):

1. throughput: one connection on the streams of ``--symbols`` hot symbols (trade, depth@100ms,
   bookTicker) for ``--seconds``; messages received per CPU-second of the client process (the
   simulator sets the pace, so the client's CPU per message is the figure that compares), and the
   latency from the event's ``E`` (the simulator's clock, ms) to the receive time, p50 and p99;
2. memory: ``--wide-symbols`` quiet symbols (3 streams each, so 3,000 streams at 1,000 symbols,
   ``--wide-per-connection`` streams a connection), the client's RSS after ``--wide-seconds`` of
   receiving minus its RSS before connecting, per connection.

Each client does the same per message: take the receive time, find ``"E":`` and read the
number (no JSON parse), as the collector's hot path does little more before batching.

Usage: ``.venv/bin/python bench/bench_ws_clients.py [--seconds 10] [--wide-symbols 1000]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

CHANNELS = ("trade", "depth@100ms", "bookTicker")
PER_CONNECTION = 1024
CLIENTS = ("aiohttp", "websockets")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def event_ms(frame: bytes | str) -> int:
    raw = frame.encode() if isinstance(frame, str) else frame
    i = raw.find(b'"E":')
    if i < 0:
        return -1
    j = i + 4
    k = j
    while k < len(raw) and 48 <= raw[k] <= 57:
        k += 1
    return int(raw[j:k]) if k > j else -1


# ------------------------------------------------------------------------------------ clients


class Tally:
    """What every client does per message, the same for both: receive time, event time."""

    def __init__(self) -> None:
        self.count = 0
        self.lat: list[int] = []

    def add(self, frame: bytes | str) -> None:
        now = time.time_ns() // 1_000_000
        e = event_ms(frame)
        self.count += 1
        if e > 0:
            self.lat.append(now - e)


async def receive_for(
    seconds: float, loops: list[Awaitable[None]], tally: Tally, out: dict[str, Any]
) -> None:
    """Run one receive loop per connection for ``seconds``; then the RSS and the tally."""
    out["connected_rss"] = rss_bytes()
    tasks = [asyncio.ensure_future(loop) for loop in loops]
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    out["rss"] = rss_bytes()
    out["count"] = tally.count
    out["lat"] = tally.lat


async def read_aiohttp(urls: list[str], seconds: float, out: dict[str, Any]) -> None:
    import aiohttp

    tally = Tally()

    async def one(ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            msg = await ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                return
            tally.add(msg.data)

    async with aiohttp.ClientSession() as session:
        conns = [await session.ws_connect(u, max_msg_size=1 << 22) for u in urls]
        await receive_for(seconds, [one(ws) for ws in conns], tally, out)
        for ws in conns:
            await ws.close()


async def read_websockets(urls: list[str], seconds: float, out: dict[str, Any]) -> None:
    from websockets.asyncio.client import ClientConnection, connect

    tally = Tally()

    async def one(ws: ClientConnection) -> None:
        async for data in ws:
            tally.add(data)

    conns = [await connect(u, max_size=1 << 22, compression=None) for u in urls]
    await receive_for(seconds, [one(ws) for ws in conns], tally, out)
    for ws in conns:
        await ws.close()


def client_main(kind: str, urls: list[str], seconds: float) -> None:
    """One measurement in this process; prints a JSON line."""
    out: dict[str, Any] = {"start_rss": rss_bytes()}
    c0 = time.process_time()
    reader = read_aiohttp if kind == "aiohttp" else read_websockets
    asyncio.run(reader(urls, seconds, out))
    cpu = time.process_time() - c0
    lat = sorted(out.pop("lat"))

    def q(p: float) -> int:
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else -1

    print(
        json.dumps(
            {
                "count": out["count"],
                "cpu_s": cpu,
                "p50_ms": q(0.50),
                "p99_ms": q(0.99),
                "conn_rss": out["connected_rss"] - out["start_rss"],
                "rss": out["rss"] - out["start_rss"],
                "connections": len(urls),
                "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        )
    )


# ------------------------------------------------------------------------------- the harness


def start_sim(
    symbols: list[str], rates: tuple[float, float, float]
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    depth, trade, ticker = rates
    args = [
        sys.executable, "-m", "vps_brain.cli", "simulate", "--port", str(port),
        "--symbols", ",".join(symbols), "--depth-rate", str(depth), "--trade-rate", str(trade),
        "--ticker-rate", str(ticker),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/stats", timeout=0.5).read()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the simulator did not start")


def urls_for(port: int, symbols: list[str], per_connection: int = PER_CONNECTION) -> list[str]:
    streams = [f"{s}@{ch}" for s in symbols for ch in CHANNELS]
    groups = [streams[i : i + per_connection] for i in range(0, len(streams), per_connection)]
    return [f"ws://127.0.0.1:{port}/stream?streams=" + "/".join(g) for g in groups]


def measure(kind: str, urls: list[str], seconds: float) -> dict[str, Any]:
    args = [sys.executable, str(Path(__file__).resolve()), "--client", kind, "--client-seconds",
            str(seconds), *urls]  # fmt: skip
    res = subprocess.run(args, capture_output=True, timeout=seconds + 120, check=False)
    if res.returncode != 0:
        raise SystemExit(f"the {kind} client failed: {res.stderr.decode()[-600:]}")
    result: dict[str, Any] = json.loads(res.stdout.decode().strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--symbols", type=int, default=4, help="hot symbols of the throughput run")
    ap.add_argument("--rate", type=float, default=1500.0, help="messages/s per hot symbol")
    ap.add_argument("--wide-symbols", type=int, default=1000)
    ap.add_argument("--wide-seconds", type=float, default=8.0)
    # The simulator's HTTP server (aiohttp, request line at most 8,190 bytes) refuses the URL of
    # 1,024 streams (about 30 KB): the memory run subscribes this many per connection.
    ap.add_argument("--wide-per-connection", type=int, default=200)
    ap.add_argument("--client", choices=CLIENTS, help=argparse.SUPPRESS)
    ap.add_argument("--client-seconds", type=float, help=argparse.SUPPRESS)
    ap.add_argument("urls", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        client_main(args.client, args.urls, args.client_seconds)
        return

    hot = [f"hot{i:02d}usdt" for i in range(args.symbols)]
    # The lab's proportions: 10 depth, 50 trades, 50 tickers per second per symbol.
    unit = args.rate / 110
    rows: dict[str, dict[str, Any]] = {}
    for kind in CLIENTS:  # a fresh simulator each: the same market for both
        sim, port = start_sim(hot, (10 * unit, 50 * unit, 50 * unit))
        try:
            rows[kind] = measure(kind, urls_for(port, hot), args.seconds)
        finally:
            sim.kill()
            sim.wait()
    wide = [f"w{i:04d}usdt" for i in range(args.wide_symbols)]
    for kind in CLIENTS:
        sim, port = start_sim(wide, (1.0, 1.0, 1.0))
        try:
            urls = urls_for(port, wide, args.wide_per_connection)
            rows[kind]["wide"] = measure(kind, urls, args.wide_seconds)
        finally:
            sim.kill()
            sim.wait()

    def per_cpu(r: dict[str, Any]) -> float:
        return float(r["count"]) / max(r["cpu_s"], 1e-9)

    print(f"throughput: {args.symbols} symbols x {len(CHANNELS)} streams on one connection, "
          f"{args.seconds:.0f} s; memory: {args.wide_symbols} symbols "
          f"({args.wide_symbols * len(CHANNELS)} streams), {args.wide_seconds:.0f} s")  # fmt: skip
    print(f"{'client':<11} {'msg/s':>9} {'msg/CPU-s':>10} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'conns':>6} {'RSS/conn':>10}")  # fmt: skip
    for kind, r in rows.items():
        w = r["wide"]
        print(
            f"{kind:<11} {r['count'] / args.seconds:>9,.0f} {per_cpu(r):>10,.0f} "
            f"{r['p50_ms']:>7} {r['p99_ms']:>7} {w['connections']:>6} "
            f"{w['rss'] / w['connections'] / 1024:>8,.0f} KiB"
        )
    a, b = rows["aiohttp"], rows["websockets"]
    print(f"websockets / aiohttp: {per_cpu(b) / per_cpu(a):.2f} x msg per CPU-second, "
          f"p99 {b['p99_ms']} vs {a['p99_ms']} ms, memory per connection "
          f"{b['wide']['rss'] / max(a['wide']['rss'], 1):.2f} x")  # fmt: skip
    load = os.getloadavg()[0]
    print(f"host load {load:.1f} on {os.cpu_count()} CPUs (shared machine: wall rates vary)")


if __name__ == "__main__":
    main()
