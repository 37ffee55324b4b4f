"""The collector against the simulator and a real redis-server: exactly once, in order."""

from __future__ import annotations

from pathlib import Path

import orjson
from conftest import RedisServer
from harness import (
    check_sequences,
    messages_by_stream,
    read_stream,
    running_collector,
    settings_for,
    wait_until,
)

from vps_brain.config import SimulatorSettings
from vps_brain.frame import Kind, quarantine_key, stream_key
from vps_brain.recordings import read_recording
from vps_brain.sim import Simulator

STREAMS = ("trade", "depth@100ms", "bookTicker")


def generated(**kw: object) -> SimulatorSettings:
    base: dict[str, object] = {
        "port": 0,
        "symbols": ["ethusdt", "btcusdt"],
        "trade_rate": 1500,
        "depth_rate": 300,
        "ticker_rate": 1500,
        "max_messages": 1500,
        "ping_interval_s": 0.2,
    }
    base.update(kw)
    return SimulatorSettings.model_validate(base)


def total_sent(sim: Simulator) -> int:
    return sum(sim.stats()["sent"].values())


async def test_generated_run_lands_in_redis_exactly_once_in_order(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with Simulator(generated()) as sim:
        settings = settings_for(sim, redis_server.url, tmp_path / "spool")
        async with running_collector(settings) as col:
            await wait_until(lambda: sim.market.finished.is_set(), what="simulator done")
            await wait_until(
                lambda: sum(col.stats.messages_in.values()) >= total_sent(sim),
                what="collector received everything",
            )
            await col.flushed()
        sent = sim.stats()["sent"]
        published = sim.stats()["published"]
    for sym in ("ethusdt", "btcusdt"):
        records = read_stream(redis_server.url, stream_key("binance", sym))
        by_stream = messages_by_stream(records)
        for ch in STREAMS:
            name = f"{sym}@{ch}"
            assert len(by_stream[name]) == sent[name] == published[name], name
        assert set(check_sequences(by_stream).values()) == {0}
        kinds = [r.kind for r in records]
        assert Kind.GAP not in kinds
        assert kinds.count(Kind.SNAPSHOT) == 1
        recv = [r.recv_ns for r in records if r.kind is Kind.MESSAGE]
        assert recv == sorted(recv)
    assert read_stream(redis_server.url, quarantine_key("binance")) == []


async def test_replayed_recording_is_stored_byte_for_byte(
    redis_server: RedisServer, tmp_path: Path, binance_data: Path
) -> None:
    path = binance_data / "spot_ethusdt_20240808.gz"
    expected: dict[str, list[bytes]] = {}
    for rec in read_recording(path):
        if not rec.is_snapshot and rec.stream:
            expected.setdefault(rec.stream, []).append(rec.raw)
    sim_settings = SimulatorSettings(
        port=0, mode="replay", replay_files=[path], replay_speed=0, ping_interval_s=1
    )
    async with Simulator(sim_settings) as sim:
        settings = settings_for(
            sim,
            redis_server.url,
            tmp_path / "spool",
            channels=["trade", "depth@100ms", "bookTicker"],
        )
        async with running_collector(settings) as col:
            n = sum(len(v) for v in expected.values())
            await wait_until(
                lambda: sum(col.stats.messages_in.values()) >= n, limit_s=60, what="replay"
            )
            await col.flushed()
    records = read_stream(redis_server.url, stream_key("binance", "ethusdt"))
    assert messages_by_stream(records) == expected
    snaps = [r for r in records if r.kind is Kind.SNAPSHOT]
    assert len(snaps) == 1
    first_u = orjson.loads(expected["ethusdt@depth@100ms"][0])["data"]["U"]
    assert orjson.loads(snaps[0].payload)["lastUpdateId"] >= first_u


async def test_plain_framing_and_streams_split_over_connections(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with Simulator(generated(max_messages=600)) as sim:
        settings = settings_for(
            sim,
            redis_server.url,
            tmp_path / "spool",
            framing="plain",
            max_streams_per_connection=2,  # 6 streams -> 3 connections
        )
        async with running_collector(settings) as col:
            assert len(col.slots) == 3
            await wait_until(lambda: sim.market.finished.is_set(), what="simulator done")
            await wait_until(
                lambda: sum(col.stats.messages_in.values()) >= total_sent(sim),
                what="collector received everything",
            )
            await col.flushed()
        assert sim.stats()["open_connections"] == 0
        assert len(sim.stats()["connections"]) == 3
        published = sim.stats()["published"]
    r = redis_server.client()
    for sym in ("ethusdt", "btcusdt"):
        key = stream_key("binance", sym)
        entries = r.xrange(key)
        assert all(set(fields) == {b"v", b"k", b"t", b"p"} for _id, fields in entries)
        records = read_stream(redis_server.url, key)
        assert len(entries) == len(records)
        by_stream = messages_by_stream(records)
        for ch in STREAMS:
            assert len(by_stream[f"{sym}@{ch}"]) == published[f"{sym}@{ch}"]
        assert set(check_sequences(by_stream).values()) == {0}
