"""`vps-brain status` and the consumer's Prometheus metrics, against a real redis-server."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from pathlib import Path

import pytest
from conftest import RedisServer

from vps_brain.cli import main
from vps_brain.config import ConsumerSettings, RedisSettings
from vps_brain.consume.metrics import ConsumerMetrics
from vps_brain.consume.reader import Consumer
from vps_brain.consume.status import Sample, StreamInfo, render
from vps_brain.frame import BatchEncoder, Kind, Record

STREAM = "md:binance:ethusdt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape_text(url: str) -> str:
    with urllib.request.urlopen(url) as resp:
        return str(resp.read().decode())


def test_render_shows_rates_lag_and_unreachable_sources() -> None:
    prev = Sample(t=0.0, rtt_ms=1.0, streams={STREAM: StreamInfo(length=10, added=10)})
    cur = Sample(
        t=2.0,
        rtt_ms=5.25,
        used_memory=512 * 1024**2,
        maxmemory=1024**3,
        streams={STREAM: StreamInfo(length=30, added=110, lag=7, pending=3)},
        consumer_error="connection refused",
    )
    frame = render(prev, cur)
    assert "tunnel latency (PING) 5.25 ms" in frame
    assert "512.0 MiB / 1.0 GiB (50%)" in frame
    row = next(line for line in frame.splitlines() if STREAM in line)
    assert row.split()[1:] == ["30", "50", "7", "3"]
    assert "consumer: unreachable (connection refused)" in frame


@pytest.mark.parametrize(
    ("hold", "shown"),
    [(12_300.0, "holds 3h25m"), (299.0, "holds 4m59s"), (float("inf"), "holds unbounded")],
)
def test_render_shows_how_long_the_vps_holds_the_backlog(hold: float, shown: str) -> None:
    metrics = {"vps_brain_collector_hold_seconds": {(): hold}}
    frame = render(Sample(t=0.0), Sample(t=1.0, collector=metrics))
    assert shown in frame


async def test_status_once_reads_vps_redis_and_consumer_metrics(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    r = redis_server.client()
    rec = Record(1, Kind.MESSAGE, b'{"stream":"ethusdt@trade","data":{"p":"1","q":"2"}}')
    for _ in range(5):
        r.xadd(STREAM, BatchEncoder().encode([rec, rec]))  # type: ignore[arg-type]
    port = free_port()
    cfg = ConsumerSettings(
        store_dir=tmp_path / "store", streams=[STREAM], consumer_name="c",
        flush_interval_s=0.05, block_ms=50, metrics_port=port, ping_interval_s=0.05,
    )  # fmt: skip
    metrics = ConsumerMetrics()
    metrics.serve("127.0.0.1", port)
    consumer = Consumer(cfg, RedisSettings(url=redis_server.url), metrics=metrics)
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(200):
            if metrics.acked._value.get() == 5:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        text = await asyncio.to_thread(scrape_text, f"http://127.0.0.1:{port}/metrics")
        assert "vps_brain_tunnel_rtt_seconds" in text
        assert 'vps_brain_consumer_records_total{stream="md:binance:ethusdt"} 10.0' in text
        argv = ["status", "--vps-redis", redis_server.url, "--once", "--interval", "0.1",
                "--consumer-metrics", f"http://127.0.0.1:{port}/metrics",
                "--collector-metrics", f"http://127.0.0.1:{free_port()}/metrics"]  # fmt: skip
        code = await asyncio.to_thread(main, argv)
    finally:
        consumer.stop()
        await task
    out = capsys.readouterr().out
    assert code == 0
    assert "tunnel latency (PING)" in out
    row = next(line for line in out.splitlines() if line.strip().startswith(STREAM))
    assert row.split()[1] == "5"  # length
    assert row.split()[3:] == ["0", "0"]  # lag, pending
    assert "collector: unreachable" in out
    assert "consumer   stored" in out and "disk ok" in out and "connected yes" in out


def test_render_shows_catch_up_progress_after_an_outage() -> None:
    p = "vps_brain_consumer_"
    s = (("stream", STREAM),)

    def consumer(
        lag: float, group: float, tail: float
    ) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        return {
            p + "catching_up": {s: 1.0},
            p + "lag_entries": {s: lag},
            p + "behind_seconds": {s: 600.0},
            p + "read_bytes_total": {(("path", "group"),): group, (("path", "tail"),): tail},
        }

    prev = Sample(t=0.0, consumer=consumer(12_000, 0, 0))
    cur = Sample(t=10.0, consumer=consumer(11_000, 14 * 1024**2, 1024**2))
    frame = render(prev, cur)
    assert "1 stream(s) catching up, live feed on the newest entries   store behind 10m00s" in frame
    assert "backlog 11,000 entries   drain 100 entries/s   caught up in 1m50s" in frame
    assert "reads: backlog 1.4 MiB/s, live 102.4 KiB/s" in frame
    live = {k: v for k, v in consumer(0, 0, 0).items() if k != p + "catching_up"}
    assert "catch-up" not in render(Sample(t=0.0, consumer=live), Sample(t=1.0, consumer=live))
