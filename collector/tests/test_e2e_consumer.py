"""Fault test of the consumer as a real process: kill -9, Redis restart (AOF), connection cut.

A producer thread writes both ETHUSDT recordings as batched frames (vps_brain.frame) into a real
redis-server (AOF on, appendfsync always); the consumer (``python -m vps_brain.cli consume``)
reads them through a TCP proxy as the read-only ACL user. Along the way the consumer is killed
with SIGKILL ``VPS_BRAIN_E2E_KILLS`` times (default 10; test_e2e_chain does the issue's 20 on the
whole chain) at random moments (restarting under a changing consumer name, so pending
entries are also claimed with XAUTOCLAIM), Redis is restarted, and the proxy black-holes the
connection (packets stop, sockets stay open, as when the tunnel drops) for
``VPS_BRAIN_E2E_CUT_S`` seconds (default 3; the issue's 60 s with VPS_BRAIN_E2E_CUT_S=60).
At the end the store must hold every record exactly once, in order, and the replayed book must
match every comparable bookTicker.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from conftest import RedisServer, make_redis

from vps_brain.consume.reader import READER_ACL
from vps_brain.consume.replay import iter_store
from vps_brain.frame import BatchEncoder, Kind, Record
from vps_brain.orderbook import check_against_tickers
from vps_brain.recordings import read_recording

STREAM = "md:binance:ethusdt"
GROUP = "brain"
PASSWORD = "e2e-secret"
CUT_S = float(os.environ.get("VPS_BRAIN_E2E_CUT_S", "3"))
KILLS = int(os.environ.get("VPS_BRAIN_E2E_KILLS", "10"))


class BlackholeProxy:
    """A TCP proxy on loopback whose ``cut()`` stops all forwarding without closing sockets."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.closing = False
        self.socks: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                self.open.wait()
                data = src.recv(65536)
                if not data:
                    break
                self.open.wait()  # data received during a cut is held, as in a dead tunnel
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open.clear()

    def heal(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.closing = True
        self.open.set()
        self.listener.close()
        with self.lock:
            for s in self.socks:
                with contextlib.suppress(OSError):
                    s.close()


def recordings(data: Path) -> list[Record]:
    out = []
    for name in ("spot_ethusdt_20240808.gz", "spot_ethusdt_20240809.gz"):
        for rec in read_recording(data / name):
            kind = Kind.SNAPSHOT if rec.is_snapshot else Kind.MESSAGE
            out.append(Record(rec.recv_ns, kind, rec.raw))
    return out


class Producer(threading.Thread):
    """Writes the records as batched entries at a steady pace; pauses while Redis restarts."""

    def __init__(self, port: int, records: list[Record], per_entry: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.records = records
        self.per_entry = per_entry
        self.interval = 1 / rate
        self.running = threading.Event()
        self.running.set()
        self.error: BaseException | None = None

    def run(self) -> None:
        enc = BatchEncoder()
        r = redis.Redis(port=self.port)
        try:
            for i in range(0, len(self.records), self.per_entry):
                fields = enc.encode(self.records[i : i + self.per_entry])
                while True:
                    self.running.wait()
                    try:
                        r.xadd(STREAM, fields)  # type: ignore[arg-type]
                        break
                    except redis.ConnectionError:
                        time.sleep(0.05)
                time.sleep(self.interval)
        except BaseException as exc:
            self.error = exc


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    yield from make_redis(
        tmp_path,
        "--appendonly", "yes", "--appendfsync", "always",
        "--user", "brain", "on", f">{PASSWORD}", *READER_ACL,
    )  # fmt: skip


def consumer_config(tmp_path: Path, port: int) -> Path:
    cfg = {
        "redis": {
            "url": f"redis://127.0.0.1:{port}/0",
            "username": "brain",
            "password": PASSWORD,
            "socket_timeout_s": 1.0,
            "connect_timeout_s": 1.0,
        },
        "consumer": {
            "store_dir": str(tmp_path / "store"),
            "streams": [STREAM],
            "flush_interval_s": 0.2,
            "block_ms": 100,
            "read_count": 200,
            "claim_min_idle_ms": 100,
            # The records are from 2024: closed days, so kills also land in compactions.
            "compact_interval_s": 0.5,
            "retry_min_s": 0.05,
            "retry_max_s": 0.5,
            "metrics_port": 0,
            "log_format": "text",
        },
    }
    path = tmp_path / "consumer.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_consumer(config: Path, name: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "vps_brain.cli", "consume", "--config", str(config),
             "--name", name],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def wait_for_log(log: Path, text: str, count: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while log.read_text().count(text) < count:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.01)


def group_done(r: redis.Redis) -> bool:
    try:
        groups = r.xinfo_groups(STREAM)
    except (redis.ResponseError, redis.ConnectionError):
        return False
    g = next((g for g in groups if g["name"] == GROUP.encode()), None)  # type: ignore[union-attr]
    return g is not None and g["lag"] == 0 and g["pending"] == 0


def test_store_is_exactly_once_and_in_order_across_kills_restart_and_cut(
    tmp_path: Path, aof_redis: RedisServer, binance_data: Path
) -> None:
    rng = random.Random(int(os.environ.get("VPS_BRAIN_E2E_SEED", "4")))
    records = recordings(binance_data)
    proxy = BlackholeProxy(aof_redis.port)
    config = consumer_config(tmp_path, proxy.port)
    log = tmp_path / "consumer.log"
    producer = Producer(aof_redis.port, records, per_entry=50, rate=1200 / KILLS)
    producer.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        kills = 0
        for kills in range(1, KILLS + 1):
            proc = start_consumer(config, f"brain-{kills % 3}", log)
            wait_for_log(log, "consumer started", kills, proc)
            time.sleep(rng.uniform(0.0, 1.2))  # in recovery, reading, or mid-flush
            if kills == KILLS // 3:
                producer.running.clear()
                aof_redis.restart()  # AOF on: stream, group and pending list survive
                producer.running.set()
            if kills == 2 * KILLS // 3:
                proxy.cut()
                time.sleep(CUT_S)
                proxy.heal()
                time.sleep(rng.uniform(0.2, 1.0))
            assert proc.poll() is None, log.read_text()[-3000:]
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert kills == KILLS
        producer.join(120)
        assert producer.error is None and not producer.is_alive()
        proc = start_consumer(config, "brain-final", log)
        wait_for_log(log, "consumer started", KILLS + 1, proc)  # its SIGTERM handler is in place
        r = aof_redis.client()
        deadline = time.monotonic() + 90
        while not group_done(r):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        proc = None
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        producer.running.set()
        proxy.close()

    stored = list(iter_store(tmp_path / "store"))
    assert len(stored) == len(records)
    assert [(s.recv_ns, s.kind, s.payload) for s in stored] == [
        (x.recv_ns, int(x.kind), x.payload) for x in records
    ]
    keys = [(s.entry_id, s.rec) for s in stored]
    assert keys == sorted(set(keys))  # strictly increasing: no duplicate, no reordering

    result = check_against_tickers(((s.kind, s.payload) for s in stored), "ETHUSDT")
    assert result.mismatches == 0, result.examples
    assert result.compared > 1000
