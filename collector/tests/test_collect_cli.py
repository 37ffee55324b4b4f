"""The CLI: bad config fails at start naming the field; simulate + collect as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import RedisServer, free_port
from harness import messages_by_stream, read_stream

from vps_brain.frame import Kind, stream_key

# The commands the collector's ACL user needs (the redis role grants the same).
COLLECTOR_ACL = (
    "on >s3cret resetkeys ~md:* resetchannels -@all +xadd +xinfo +xpending +xtrim +xrange "
    "+info +ping +multi +exec +discard"
)


def cli(*args: str, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "vps_brain.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


def test_bad_config_fails_at_start_and_names_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("collector:\n  batch_max_records: 0\n")
    p = cli("collect", "--config", str(cfg), "--check-config")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2
    assert b"collector.batch_max_records" in err
    env = {**os.environ, "VPS_BRAIN__REDIS__URL": "http://nope"}
    p = cli("collect", "--check-config", env=env)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2
    assert b"redis" in err and b"VPS_BRAIN__REDIS__URL" in err


def test_check_config_refuses_renewals_that_cannot_be_staggered(tmp_path: Path) -> None:
    # 3 connections (one stream each) cannot renew 60 s apart within renew_after_s = 100 s:
    # the plan is checked by --check-config (the role's validate step), not first at start.
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "collector:\n  symbols: [a1usdt, a2usdt, a3usdt]\n  channels: [trade]\n"
        "  max_streams_per_connection: 1\n  renew_after_s: 100\n"
    )
    p = cli("collect", "--config", str(cfg), "--check-config")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2
    assert b"renew_stagger_s" in err
    cfg.write_text("collector:\n  symbols: [a1usdt, a2usdt, a3usdt]\n  channels: [trade]\n")
    p = cli("collect", "--config", str(cfg), "--check-config")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert b"configuration OK (1 connection(s))" in out


def test_simulate_and_collect_processes_with_an_acl_user(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    admin = redis_server.client()
    admin.execute_command("ACL", "SETUSER", "collector", *COLLECTOR_ACL.split())
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    sim_port, metrics_port = free_port(), free_port()
    sim = cli(
        "simulate",
        "--port",
        str(sim_port),
        "--symbols",
        "ethusdt",
        "--trade-rate",
        "200",
        "--max-messages",
        "600",
    )
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(
        f"redis:\n  url: {redis_server.url}\n  username: collector\n  password_file: {pw}\n"
        f"collector:\n  symbols: [ethusdt]\n  ws_url: ws://127.0.0.1:{sim_port}\n"
        f"  rest_url: http://127.0.0.1:{sim_port}\n  spool_dir: {tmp_path / 'spool'}\n"
        f"  metrics_port: {metrics_port}\n  trim_interval_s: 0.2\n"
    )
    col = None
    try:
        deadline = time.monotonic() + 30
        while True:  # wait for the simulator to listen
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{sim_port}/api/v3/ping", timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline, "simulator did not start"
                time.sleep(0.05)
        col = cli("collect", "--config", str(cfg))
        key = stream_key("binance", "ethusdt")
        deadline = time.monotonic() + 60
        while True:
            records = read_stream(redis_server.url, key)
            if sum(len(v) for v in messages_by_stream(records).values()) >= 600:
                break
            assert col.poll() is None, col.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "collector did not store the run"
            time.sleep(0.1)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read()
        for name in (
            b"vps_brain_collector_messages_in_total",
            b"vps_brain_collector_batch_latency_seconds_bucket",
            b"vps_brain_collector_spool_bytes",
            b"vps_brain_collector_gaps_total",
        ):
            assert name in metrics
        col.send_signal(signal.SIGTERM)
        _, err = col.communicate(timeout=30)
        assert col.returncode == 0, err.decode()[-2000:]
        assert b'"msg": "collector stopped"' in err
    finally:
        for p in (sim, col):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
    records = read_stream(redis_server.url, stream_key("binance", "ethusdt"))
    assert Kind.SNAPSHOT in [r.kind for r in records]
    by_stream = messages_by_stream(records)
    assert len(by_stream["ethusdt@trade"]) > 0
