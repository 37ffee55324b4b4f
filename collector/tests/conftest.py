"""Shared fixtures: a real redis-server on loopback, started per test (never a mock)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server process owned by one test. ``restart()`` keeps its data dir (AOF/RDB)."""

    port: int
    dir: Path
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run scripts/bootstrap.sh")
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            "redis.log",
            *self.extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_timeout=0.2).ping()
                return
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.02)
        pytest.fail(f"redis-server on port {self.port} did not start; see {self.dir}/redis.log")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


def make_redis(tmp_path: Path, *extra: str) -> Iterator[RedisServer]:
    d = tmp_path / "redis"
    d.mkdir(exist_ok=True)
    server = RedisServer(port=free_port(), dir=d, extra=extra)
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server on loopback. Use ``make_redis`` for custom options (AOF, maxmemory)."""
    yield from make_redis(tmp_path)


# ../shared/data/binance beside the project; VPS_BRAIN_BINANCE_DATA points elsewhere.
SHARED_DATA = Path(
    os.environ.get(
        "VPS_BRAIN_BINANCE_DATA",
        Path(__file__).resolve().parents[3] / "shared" / "data" / "binance",
    )
)


@pytest.fixture(scope="session")
def binance_data() -> Path:
    """The recorded Binance data in ../shared/data/binance; fails clearly when it is missing."""
    if not (SHARED_DATA / "spot_ethusdt_20240808.gz").exists():
        pytest.fail(
            f"recorded Binance data not found at {SHARED_DATA} "
            "(shared/ must sit beside the project, or set VPS_BRAIN_BINANCE_DATA)"
        )
    return SHARED_DATA
