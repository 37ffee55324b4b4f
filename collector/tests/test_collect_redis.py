"""Redis-side faults: restart and a full Redis send batches to the spool, drained back in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from conftest import RedisServer, make_redis
from harness import (
    check_sequences,
    generated,
    messages_by_stream,
    read_stream,
    received,
    running_collector,
    settings_for,
    wait_until,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from vps_brain.config import SimulatorSettings
from vps_brain.frame import Kind, Record, decode_entry, stream_key
from vps_brain.sim import Simulator

# Draining a full spool into a Redis the Brain empties takes seconds; a bound turns a stall into
# a failure that names it.
FLUSH_TIMEOUT_S = 120


# The traffic of this file's simulator (harness.generated adds a free port and ethusdt).
RATES: dict[str, object] = {
    "trade_rate": 1000,
    "depth_rate": 200,
    "ticker_rate": 1000,
    "ping_interval_s": 1.0,
}


def sim_settings(**kw: object) -> SimulatorSettings:
    return generated(**{**RATES, **kw})


def assert_exactly_once(url: str, published: dict[str, int]) -> None:
    records = read_stream(url, stream_key("binance", "ethusdt"))
    by_stream = messages_by_stream(records)
    for name, msgs in by_stream.items():
        assert len(msgs) == published[name], name
    assert set(check_sequences(by_stream).values()) == {0}
    assert Kind.GAP not in [r.kind for r in records]
    recv = [r.recv_ns for r in records if r.kind is Kind.MESSAGE]
    assert recv == sorted(recv)


async def test_redis_restart_spools_and_drains_without_loss(tmp_path: Path) -> None:
    gen = make_redis(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    server: RedisServer = next(gen)
    try:
        async with Simulator(sim_settings(max_messages=5000)) as sim:
            settings = settings_for(sim, server.url, tmp_path / "spool")
            async with running_collector(settings) as col:
                await wait_until(lambda: received(col) > 500, what="first messages")
                await asyncio.to_thread(server.stop)
                before = received(col)
                await wait_until(lambda: received(col) > before + 1000, what="collect while down")
                await wait_until(lambda: col.stats.spooled_batches > 0, what="spooled")
                await asyncio.to_thread(server.start)
                await wait_until(lambda: sim.market.finished.is_set(), what="simulator done")
                await wait_until(lambda: col.stats.drained_batches > 0, what="drained")
                await col.flushed()
                assert len(col.writer.spool) == 0  # type: ignore[union-attr]
            published = sim.stats()["published"]
        assert_exactly_once(server.url, published)
    finally:
        gen.close()


@pytest.mark.parametrize("high_watermark", [0.6, 1.0], ids=["watermark", "oom"])
async def test_full_redis_spills_to_disk_and_drains_when_room_returns(
    tmp_path: Path, high_watermark: float
) -> None:
    gen = make_redis(tmp_path, "--maxmemory", "3mb", "--maxmemory-policy", "noeviction")
    server: RedisServer = next(gen)
    try:
        async with Simulator(
            sim_settings(max_messages=20000, trade_rate=4000, ticker_rate=4000)
        ) as sim:
            settings = settings_for(
                sim,
                server.url,
                tmp_path / "spool",
                codec="none",
                redis_high_watermark=high_watermark,
                redis_low_watermark=min(high_watermark, 0.5),
            )
            async with running_collector(settings) as col:
                await wait_until(lambda: col.stats.spooled_batches > 0, what="spilling")
                assert col.stats.spilling == 1
                r = server.client()
                await asyncio.to_thread(r.config_set, "maxmemory", "200mb")
                await wait_until(lambda: sim.market.finished.is_set(), what="simulator done")
                await wait_until(lambda: col.stats.spilling == 0, what="spill over")
                await col.flushed()
                assert len(col.writer.spool) == 0  # type: ignore[union-attr]
                assert col.stats.drained_batches > 0
            published = sim.stats()["published"]
        assert_exactly_once(server.url, published)
    finally:
        gen.close()


async def test_brain_offline_fills_redis_then_acks_and_trimming_let_the_spool_drain(
    tmp_path: Path,
) -> None:
    """The Brain is away: Redis fills, batches spill to disk; it comes back and acks, the
    collector trims what was acknowledged, memory returns and the spool drains, in order."""
    gen = make_redis(tmp_path, "--maxmemory", "3mb", "--maxmemory-policy", "noeviction")
    server: RedisServer = next(gen)
    key = stream_key("binance", "ethusdt")
    r = aioredis.Redis.from_url(server.url)
    await r.xgroup_create(key, "brain", id="0", mkstream=True)
    consumed: list[Record] = []

    # The reader stops between commands: a task cancelled inside redis-py's blocking XREADGROUP
    # can hang on a loaded machine (seen), and so can closing the client it was using.
    stop = asyncio.Event()

    async def brain() -> None:
        # A real reader rides out a dropped connection; this one must too, or nobody acks, Redis
        # stays full and the spool never drains.
        while not stop.is_set():
            try:
                got = await r.xreadgroup("brain", "b1", {key: ">"}, count=50, block=100)
                for _key, entries in got or []:
                    for eid, fields in entries:
                        await r.xack(key, "brain", eid)
                        consumed.extend(decode_entry(fields))
            except (RedisConnectionError, RedisTimeoutError):
                await asyncio.sleep(0.1)

    try:
        cfg = sim_settings(max_messages=20000, trade_rate=4000, ticker_rate=4000)
        async with Simulator(cfg) as sim:
            settings = settings_for(
                sim,
                server.url,
                tmp_path / "spool",
                codec="none",
                redis_high_watermark=0.8,
                redis_low_watermark=0.6,
                trim_interval_s=0.1,
            )
            async with running_collector(settings) as col:
                await wait_until(lambda: col.stats.spooled_batches > 0, what="spilling")
                reader = asyncio.create_task(brain())
                await wait_until(lambda: sim.market.finished.is_set(), what="simulator done")
                await asyncio.wait_for(col.flushed(), FLUSH_TIMEOUT_S)
                assert col.stats.trimmed_entries > 0
                assert col.stats.drained_batches > 0
                expected = sum(col.stats.records_out.values())
                await wait_until(lambda: len(consumed) >= expected, what="brain consumed all")
                stop.set()
                await asyncio.wait_for(reader, 10)
            published = sim.stats()["published"]
        by_stream = messages_by_stream(consumed)
        for name, msgs in by_stream.items():
            assert len(msgs) == published[name], name
        assert set(check_sequences(by_stream).values()) == {0}
        assert Kind.GAP not in [rec.kind for rec in consumed]
    finally:
        await r.aclose()
        gen.close()
