"""Consumer benchmarks, each printed next to a baseline measured in the same run.

1. Decode + durable store on one core: batched zstd frames of the real ETHUSDT recordings ->
   vps_brain.frame -> rows -> Parquet parts (fsync, rename, checkpoint). Baseline: the obvious
   implementation (stdlib json per message, ``pa.Table.from_pylist`` of dicts, one write).
   Target: >= 100,000 msg/s.
2. The whole consumer reading a pre-filled stream from a real redis-server (XREADGROUP, decode,
   store, XACK), for reference.
3. End-to-end latency, collector receive (``recv_ns``) -> strategy on the Brain's live feed, at
   5,000 msg/s on loopback. A producer process plays the collector (records stamped at receive,
   batched up to 5 ms like ``collector.batch_max_delay_ms``); the consumer runs as its own
   process (``vps-brain consume --live-url``); the strategy reads ``live:*`` from the Brain's
   Redis. Baseline: the same strategy reading the VPS stream directly (no consumer hop).
   Target: end-to-end p99 <= 20 ms.
4. The same latency through the real chain: ``vps-brain simulate`` (generated, 5,000 msg/s) ->
   ``vps-brain collect`` (recv_ns stamped by the collector) -> Redis -> consumer -> live feed;
   baseline: the VPS stream read directly, at the same time. Five processes on the machine: on a
   busy 2-CPU host this measures the scheduler as much as the code.

Run: ``.venv/bin/python bench/bench_consumer.py`` (``--quick`` for a short run). Needs
redis-server and ../shared/data/binance.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import redis
import redis.asyncio as aioredis

from vps_brain.consume.live import live_records
from vps_brain.consume.reader import tune_gc
from vps_brain.consume.store import ParquetStore
from vps_brain.frame import BatchEncoder, Decoder, Kind, Record
from vps_brain.recordings import read_recording

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "binance"
STREAM = "md:binance:ethusdt"


def load_records(limit: int) -> list[Record]:
    files = ["spot_ethusdt_20240808.gz", "spot_ethusdt_20240809.gz"]
    base: list[Record] = []
    for name in files:
        path = DATA / name
        if not path.exists():
            sys.exit(f"recorded data not found: {path}")
        for rec in read_recording(path):
            kind = Kind.SNAPSHOT if rec.is_snapshot else Kind.MESSAGE
            base.append(Record(rec.recv_ns, kind, rec.raw))
    out: list[Record] = []
    shift = 0
    while len(out) < limit:  # repeat the recordings, later in time, until there are enough
        out.extend(Record(r.recv_ns + shift, r.kind, r.payload) for r in base[: limit - len(out)])
        shift += base[-1].recv_ns - base[0].recv_ns + 1
    return out


def make_entries(records: list[Record], per_entry: int) -> list[dict[bytes, bytes]]:
    enc = BatchEncoder()
    return [enc.encode(records[i : i + per_entry]) for i in range(0, len(records), per_entry)]


# --------------------------------------------------------------------------- 1. one core


def ours(entries: list[dict[bytes, bytes]], root: Path) -> int:
    dec = Decoder()
    n = 0
    with ParquetStore(root, max_records=10**9, max_bytes=10**12) as st:
        for i, fields in enumerate(entries):
            n += st.add(STREAM, b"%d-0" % (i + 1), dec.decode(fields))
            if st.full:
                st.flush()
        st.flush()
    return n


def baseline(entries: list[dict[bytes, bytes]], root: Path) -> int:
    dec = Decoder()
    rows: list[dict[str, Any]] = []
    for i, fields in enumerate(entries):
        for j, rec in enumerate(dec.decode(fields)):
            doc = json.loads(rec.payload)
            data = doc.get("data", doc)
            rows.append(
                {
                    "id": f"{i + 1}-0",
                    "rec": j,
                    "recv_ns": rec.recv_ns,
                    "stream": doc.get("stream"),
                    "E": data.get("E"),
                    "u": data.get("u"),
                    "p": data.get("p"),
                    "q": data.get("q"),
                    "payload": rec.payload,
                }
            )
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "all.parquet")
    return len(rows)


def timed(fn: Any, *args: Any) -> tuple[int, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    n = fn(*args)
    return n, time.perf_counter() - wall, time.process_time() - cpu


def bench_core(n_records: int, tmp: Path, repeat: int) -> None:
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    records = load_records(n_records)
    entries = make_entries(records, 200)
    print(f"\n[1] decode + durable store, one core: {len(records):,} records, {len(entries):,} "
          f"entries of 200 (zstd); best of {repeat}; GC tuned as in vps-brain consume")  # fmt: skip
    tune_gc()
    results = {}
    for name, fn in (
        ("baseline (stdlib json, from_pylist)", baseline),
        ("vps_brain consumer", ours),
    ):
        best_wall = best_cpu = 0.0
        for i in range(repeat):
            d = tmp / f"{name.split()[0]}-{i}"
            n, wall, cpu = timed(fn, entries, d)
            best_wall, best_cpu = max(best_wall, n / wall), max(best_cpu, n / cpu)
            shutil.rmtree(d, ignore_errors=True)
        results[name] = best_cpu
        print(f"    {name:38s} {best_cpu:>10,.0f} msg/s per CPU-second  ({best_wall:,.0f} wall)")
    a, b = results.values()
    print(f"    ratio vs baseline: {b / a:.2f}x   target >= 100,000 msg/s on one core: "
          f"{'MET' if b >= 100_000 else 'NOT MET'}")  # fmt: skip


# --------------------------------------------------------------------- redis-server helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(d: Path) -> tuple[subprocess.Popen[bytes], int]:
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
         "--save", "", "--appendonly", "no", "--logfile", "redis.log"],
    )  # fmt: skip
    for _ in range(200):
        try:
            redis.Redis(port=port).ping()
            return proc, port
        except redis.ConnectionError:
            time.sleep(0.02)
    raise RuntimeError("redis-server did not start")


def bench_full_consumer(n_records: int, tmp: Path) -> None:
    from vps_brain.config import ConsumerSettings, RedisSettings
    from vps_brain.consume.reader import Consumer

    proc, port = start_redis(tmp / "redis-full")
    try:
        r = redis.Redis(port=port)
        records = load_records(n_records)
        for fields in make_entries(records, 200):
            r.xadd(STREAM, fields)  # type: ignore[arg-type]
        cfg = ConsumerSettings(
            store_dir=tmp / "store-full", streams=[STREAM], consumer_name="bench",
            flush_interval_s=0.25, flush_max_records=100_000, metrics_port=0, read_count=100,
        )  # fmt: skip
        consumer = Consumer(cfg, RedisSettings(url=f"redis://127.0.0.1:{port}/0"))

        async def go() -> float:
            task = asyncio.create_task(consumer.run())
            t0 = time.perf_counter()
            while True:
                await asyncio.sleep(0.05)
                g = r.xinfo_groups(STREAM)
                if g and g[0]["lag"] == 0 and g[0]["pending"] == 0:  # type: ignore[index]
                    break
            wall = time.perf_counter() - t0
            consumer.stop()
            await task
            return wall

        tune_gc()
        wall = asyncio.run(go())
        rate = len(records) / wall
        print(f"\n[2] whole consumer from redis-server (XREADGROUP, decode, store, XACK): "
              f"{rate:,.0f} msg/s ({len(records):,} records in {wall:.2f} s)")  # fmt: skip
    finally:
        proc.terminate()
        proc.wait()


# ---------------------------------------------------------------------------- 3. latency


def producer(port: int, rate: float, seconds: float, delay_ms: float) -> None:
    """Plays the collector: stamps each message at 'receive', batches up to ``delay_ms``."""
    records = load_records(60_000)
    r = redis.Redis(port=port)
    enc = BatchEncoder()
    interval = 1 / rate
    start = time.perf_counter()
    total = int(rate * seconds)
    batch: list[Record] = []
    batch_started = 0.0
    for i in range(total):
        due = start + i * interval
        now = time.perf_counter()
        if batch and now - batch_started >= delay_ms / 1000:
            r.xadd(STREAM, enc.encode(batch))  # type: ignore[arg-type]
            batch = []
        if due > now:
            time.sleep(due - now)
        if not batch:
            batch_started = time.perf_counter()
        batch.append(Record(time.time_ns(), Kind.MESSAGE, records[i % len(records)].payload))
    if batch:
        r.xadd(STREAM, enc.encode(batch))  # type: ignore[arg-type]


async def measure(
    url: str, key_prefix: str, expected: int, seconds: float, warmup_s: float = 0.0
) -> list[float]:
    lat: list[float] = []
    deadline = time.monotonic() + seconds + 15

    async def read() -> None:
        started = 0.0
        async for item in live_records(url, [STREAM], prefix=key_prefix, start="$", block_ms=100):
            now = time.time_ns()
            if not started:
                started = time.monotonic()
            if time.monotonic() - started < warmup_s:
                continue  # a backlog from before the measurement is not latency
            lat.append((now - item.record.recv_ns) / 1e6)
            if len(lat) >= expected:
                return

    probe = aioredis.Redis.from_url(url)
    for _ in range(int(15 / 0.01)):  # wait for the stream to exist
        if await probe.exists(key_prefix + STREAM):
            break
        await asyncio.sleep(0.01)
    await probe.aclose()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(read(), max(1.0, deadline - time.monotonic()))
    return lat


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 10) - 1] if len(values) > 10 else 0.0


def run_latency(vps_port: int, brain_url: str | None, rate: float, seconds: float) -> list[float]:
    r = redis.Redis(port=vps_port)
    r.xadd(STREAM, {"v": "1", "k": "5", "t": str(time.time_ns()), "p": "{}"})
    ctx = mp.get_context("fork")
    prod = ctx.Process(target=producer, args=(vps_port, rate, seconds, 5.0), daemon=True)
    expected = int(rate * (seconds - 0.5))
    if brain_url is None:
        url, prefix = f"redis://127.0.0.1:{vps_port}/0", ""
    else:
        url, prefix = brain_url, "live:"

    async def go() -> list[float]:
        task = asyncio.create_task(measure(url, prefix, expected, seconds, warmup_s=0.5))
        await asyncio.sleep(0.3)
        prod.start()
        return await task

    lat = asyncio.run(go())
    prod.join(30)
    return lat


def wait_consumer_ready(
    vps_port: int, consumer: subprocess.Popen[bytes], live_stream: bool = False
) -> None:
    """Until the consumer has caught up with the stream, so no start-up time counts as latency.

    On an idle stream it must have read and acknowledged everything. On a stream that a live
    collector keeps feeding, entries are always pending (acks follow the durable store) and the
    lag is rarely exactly 0: there it is enough that it reads and is at most a few entries behind.
    """
    r = redis.Redis(port=vps_port)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and consumer.poll() is None:
        with contextlib.suppress(redis.ResponseError):
            groups: Any = r.xinfo_groups(STREAM)
            if groups:
                g = groups[0]
                caught_up = (
                    (g["entries-read"] or 0) > 0 and (g["lag"] or 0) <= 5
                    if live_stream
                    else g["lag"] == 0 and g["pending"] == 0
                )
                if caught_up:
                    time.sleep(0.5)
                    return
        time.sleep(0.05)
    state = "exited" if consumer.poll() is not None else "still behind"
    raise RuntimeError(f"the consumer did not catch up within 60 s ({state})")


def bench_latency(rate: float, seconds: float, tmp: Path) -> None:
    print(f"\n[3] end-to-end latency, collector receive -> strategy, {rate:,.0f} msg/s for "
          f"{seconds:.0f} s, loopback")  # fmt: skip
    vps, vps_port = start_redis(tmp / "redis-vps")
    brain, brain_port = start_redis(tmp / "redis-brain")
    consumer: subprocess.Popen[bytes] | None = None
    try:
        base = run_latency(vps_port, None, rate, seconds)
        redis.Redis(port=vps_port).delete(STREAM)
        cfg = tmp / "consumer.yaml"
        cfg.write_text(
            json.dumps(
                {
                    "redis": {"url": f"redis://127.0.0.1:{vps_port}/0"},
                    "consumer": {
                        "store_dir": str(tmp / "store-lat"),
                        "streams": [STREAM],
                        "consumer_name": "bench",
                        "flush_interval_s": 1.0,
                        "block_ms": 1000,
                        "metrics_port": 0,
                        "log_level": "WARNING",
                    },
                }
            )
        )
        redis.Redis(port=vps_port).xadd(STREAM, {"v": "1", "k": "5", "t": "1", "p": "{}"})
        consumer = subprocess.Popen(
            [sys.executable, "-m", "vps_brain.cli", "consume", "--config", str(cfg),
             "--live-url", f"redis://127.0.0.1:{brain_port}/0"],
        )  # fmt: skip
        wait_consumer_ready(vps_port, consumer)
        via = run_latency(vps_port, f"redis://127.0.0.1:{brain_port}/0", rate, seconds)
    finally:
        if consumer is not None:
            consumer.send_signal(signal.SIGTERM)
            consumer.wait(30)
        for p in (vps, brain):
            p.terminate()
            p.wait()
    report(base, via, "baseline: read the VPS stream directly")


def bench_chain_latency(rate: float, seconds: float, tmp: Path) -> None:
    """[4] the same with the real simulator and collector (recv_ns stamped by the collector)."""
    print(f"\n[4] end-to-end latency with the real chain: vps-brain simulate ({rate:,.0f} msg/s) "
          f"-> collect -> Redis -> consume -> live, {seconds:.0f} s")  # fmt: skip
    vps, vps_port = start_redis(tmp / "redis-vps4")
    brain, brain_port = start_redis(tmp / "redis-brain4")
    sim_port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    vps_url, brain_url = f"redis://127.0.0.1:{vps_port}/0", f"redis://127.0.0.1:{brain_port}/0"
    env = {**os.environ, "VPS_BRAIN__COLLECTOR__LOG_LEVEL": "WARNING"}
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "vps_brain.cli", "simulate", "--port", str(sim_port),
             "--symbols", "ethusdt", "--trade-rate", str(rate * 0.4),
             "--ticker-rate", str(rate * 0.5), "--depth-rate", str(rate * 0.1)],
            stderr=subprocess.DEVNULL,
        ))  # fmt: skip
        time.sleep(1.5)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "vps_brain.cli", "collect", "--redis-url", vps_url,
             "--ws-url", f"ws://127.0.0.1:{sim_port}", "--rest-url", f"http://127.0.0.1:{sim_port}",
             "--symbols", "ethusdt", "--spool-dir", str(tmp / "spool4"), "--metrics-port", "0"],
            stderr=subprocess.DEVNULL, env=env,
        ))  # fmt: skip
        r = redis.Redis(port=vps_port)
        deadline = time.monotonic() + 20
        while not r.exists(STREAM) and time.monotonic() < deadline:
            time.sleep(0.05)
        cfg = tmp / "consumer4.json"
        cfg.write_text(json.dumps({
            "redis": {"url": vps_url},
            "consumer": {"store_dir": str(tmp / "store4"), "streams": [STREAM],
                         "consumer_name": "bench", "flush_interval_s": 1.0, "metrics_port": 0,
                         "log_level": "WARNING"},
        }))  # fmt: skip
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "vps_brain.cli", "consume", "--config", str(cfg),
             "--live-url", brain_url],
        ))  # fmt: skip
        wait_consumer_ready(vps_port, procs[-1], live_stream=True)
        expected = int(rate * seconds)

        async def both() -> tuple[list[float], list[float]]:
            a = asyncio.create_task(measure(vps_url, "", expected, seconds, warmup_s=1.0))
            b = asyncio.create_task(measure(brain_url, "live:", expected, seconds, warmup_s=1.0))
            return await a, await b

        base, via = asyncio.run(both())
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        for p in (vps, brain):
            p.terminate()
            p.wait()
    report(base, via, "baseline: read the VPS stream directly")


def report(base: list[float], via: list[float], base_name: str) -> None:
    rows = ((base_name, base), ("through the consumer (live)", via))
    for name, lat in rows:
        if not lat:
            print(f"    {name:40s} no samples")
            continue
        print(f"    {name:40s} n={len(lat):>7,}  p50 {pct(lat, 50):6.2f} ms  "
              f"p99 {pct(lat, 99):6.2f} ms  max {max(lat):7.2f} ms")  # fmt: skip
    if base and via:
        added = pct(via, 99) - pct(base, 99)
        print(f"    added by the consumer at p99: {added:.2f} ms; end-to-end p99 "
              f"{pct(via, 99):.2f} ms, target <= 20 ms: "
              f"{'MET' if pct(via, 99) <= 20 else 'NOT MET'}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--repeat", type=int, default=3, help="runs of [1]; the best counts")
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--only", choices=["core", "full", "latency", "chain"])
    args = ap.parse_args()
    if args.quick:
        args.records, args.seconds = 50_000, 3
    if shutil.which("redis-server") is None and args.only != "core":
        sys.exit("redis-server not found")
    print(f"vps_brain consumer bench: python {sys.version.split()[0]}, pyarrow {pa.__version__}, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-consumer-") as d:
        tmp = Path(d)
        if args.only in (None, "core"):
            bench_core(args.records, tmp, args.repeat)
        if args.only in (None, "full"):
            bench_full_consumer(min(args.records, 200_000), tmp)
        if args.only in (None, "latency"):
            bench_latency(args.rate, args.seconds, tmp)
        if args.only in (None, "chain"):
            bench_chain_latency(args.rate, args.seconds, tmp)


if __name__ == "__main__":
    main()
