"""The whole chain as separate processes: simulate -> collect -> Redis (AOF) -> consume -> store.

Every fault of issue 4 in one run. The simulator replays both ETHUSDT recordings (20x speed); the
collector writes them to a real redis-server (AOF, appendfsync always); the consumer reads through
a TCP proxy as the read-only ACL user. Meanwhile: the consumer is killed with SIGKILL 20 times at
random moments (restarting under rotating names, so pending entries are also claimed); the
collector is killed with SIGKILL once and restarted with its spool (it resynchronises with a fresh
snapshot; what the exchange sent while it was down is gone, as with the real exchange); Redis is
restarted; the proxy black-holes the consumer's connection for ``VPS_BRAIN_E2E_CUT_S`` seconds
(default 3; the issue's 60 s with VPS_BRAIN_E2E_CUT_S=60). At the end the store must equal the VPS
stream exactly: every record once, in order; and the order book replayed from the store must
match every comparable bookTicker.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from conftest import RedisServer, free_port, make_redis
from test_e2e_consumer import BlackholeProxy

from vps_brain.consume.reader import READER_ACL
from vps_brain.consume.replay import iter_store
from vps_brain.frame import decode_entry, stream_key
from vps_brain.orderbook import check_against_tickers

STREAM = stream_key("binance", "ethusdt")
PASSWORD = "chain-secret"
SPEED = 20
CUT_S = float(os.environ.get("VPS_BRAIN_E2E_CUT_S", "3"))


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    yield from make_redis(
        tmp_path,
        "--appendonly", "yes", "--appendfsync", "always",
        "--user", "brain", "on", f">{PASSWORD}", *READER_ACL,
    )  # fmt: skip


def cli(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    # The collector must not trim: the test compares the store with the whole VPS stream.
    env = {**os.environ, "VPS_BRAIN__COLLECTOR__TRIM_INTERVAL_S": "0"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "vps_brain.cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def wait_for_log(log: Path, text: str, count: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not log.exists() or log.read_text().count(text) < count:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {text!r} in {log}"
        time.sleep(0.02)


def stream_added(r: redis.Redis) -> int:
    try:
        info = r.xinfo_stream(STREAM)
    except redis.ResponseError:
        return 0
    return int(info["entries-added"])  # type: ignore[index]


def group_done(r: redis.Redis) -> bool:
    try:
        groups = r.xinfo_groups(STREAM)
    except redis.ResponseError:
        return False
    g = next((g for g in groups if g["name"] == b"brain"), None)  # type: ignore[union-attr]
    return g is not None and g["lag"] == 0 and g["pending"] == 0


def stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_chain_stores_exactly_once_across_kills_redis_restart_and_cut(
    tmp_path: Path, aof_redis: RedisServer, binance_data: Path
) -> None:
    rng = random.Random(7)
    proxy = BlackholeProxy(aof_redis.port)
    sim_port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = tmp_path / "brain.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "redis": {
                    "url": f"redis://127.0.0.1:{proxy.port}/0",
                    "username": "brain",
                    "password": PASSWORD,
                    "socket_timeout_s": 1.0,
                },
                "consumer": {
                    "store_dir": str(tmp_path / "store"),
                    "flush_interval_s": 0.2,
                    "block_ms": 100,
                    "claim_min_idle_ms": 100,
                    "discover_interval_s": 0.5,
                    "retry_min_s": 0.05,
                    "retry_max_s": 0.5,
                    "metrics_port": 0,
                    "log_format": "text",
                },
            }
        )
    )
    collect_args = [
        "collect", "--redis-url", aof_redis.url, "--ws-url", f"ws://127.0.0.1:{sim_port}",
        "--rest-url", f"http://127.0.0.1:{sim_port}", "--symbols", "ethusdt",
        "--spool-dir", str(tmp_path / "spool"), "--metrics-port", "0",
    ]  # fmt: skip
    sim = cli(
        ["simulate", "--port", str(sim_port), "--speed", str(SPEED),
         "--replay", str(binance_data / "spot_ethusdt_20240808.gz"),
         "--replay", str(binance_data / "spot_ethusdt_20240809.gz")],
        logs / "sim.log",
    )  # fmt: skip
    collector: subprocess.Popen[bytes] | None = None
    consumer: subprocess.Popen[bytes] | None = None
    r = aof_redis.client()
    try:
        wait_for_log(logs / "sim.log", "simulator listening", 1, sim)
        collector = cli(collect_args, logs / "collect.log")
        deadline = time.monotonic() + 30
        while stream_added(r) == 0:  # the consumer only reads streams that exist
            assert time.monotonic() < deadline and collector.poll() is None
            time.sleep(0.05)
        for k in range(1, 21):
            consumer = cli(["consume", "--config", str(cfg), "--name", f"b{k % 3}"],
                           logs / "consume.log")  # fmt: skip
            wait_for_log(logs / "consume.log", "consumer started", k, consumer)
            time.sleep(rng.uniform(0.0, 1.0))
            if k == 5:  # the collector dies too, and comes back with its spool
                collector.send_signal(signal.SIGKILL)
                collector.wait(10)
                time.sleep(0.3)
                collector = cli(collect_args, logs / "collect.log")
            if k == 10:  # AOF on: stream, group and pending lists survive
                aof_redis.restart()
            if k == 15:  # the tunnel drops: packets stop, sockets stay open
                proxy.cut()
                time.sleep(CUT_S)
                proxy.heal()
                time.sleep(rng.uniform(0.2, 1.0))
            assert consumer.poll() is None, (logs / "consume.log").read_text()[-3000:]
            consumer.send_signal(signal.SIGKILL)
            consumer.wait(10)
        consumer = cli(["consume", "--config", str(cfg), "--name", "final"], logs / "consume.log")
        wait_for_log(logs / "consume.log", "consumer started", 21, consumer)
        # The replay lasts ~(346 + 305) s / SPEED; wait for the stream to stop growing.
        last, still_since = -1, time.monotonic()
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, "the replay did not finish"
            n = stream_added(r)
            if n != last:
                last, still_since = n, time.monotonic()
            elif time.monotonic() - still_since > 3 and group_done(r):
                break
            time.sleep(0.1)
        stop(collector)
        collector = None
        deadline = time.monotonic() + 30
        while not group_done(r):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(20) == 0
        consumer = None
    finally:
        stop(consumer, signal.SIGKILL)
        stop(collector)
        stop(sim)
        proxy.close()

    vps: list[tuple[int, int, bytes]] = []
    for _id, fields in r.xrange(STREAM):  # type: ignore[union-attr]
        vps.extend((x.recv_ns, int(x.kind), x.payload) for x in decode_entry(fields))
    stored = [(s.recv_ns, s.kind, s.payload) for s in iter_store(tmp_path / "store")]
    assert len(vps) > 50_000
    assert stored == vps  # exactly once, in order

    result = check_against_tickers(((kind, payload) for _, kind, payload in stored), "ethusdt")
    assert result.mismatches == 0, result.examples
    assert result.compared > 500
    with contextlib.suppress(FileNotFoundError):
        assert "Traceback" not in (logs / "consume.log").read_text()
