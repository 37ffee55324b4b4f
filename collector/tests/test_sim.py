"""The simulator behaves like Binance Spot where the collector depends on it."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson
from conftest import RedisServer
from harness import (
    generated,
    messages_by_stream,
    read_stream,
    running_collector,
    settings_for,
    wait_until,
)

from vps_brain.config import SimulatorSettings
from vps_brain.frame import stream_key
from vps_brain.orderbook import check_against_tickers
from vps_brain.recordings import read_recording
from vps_brain.sim import Simulator

# The traffic of this file's simulator (harness.generated adds a free port and ethusdt).
RATES: dict[str, object] = {
    "trade_rate": 300,
    "depth_rate": 100,
    "ticker_rate": 300,
}


def sim_settings(**kw: object) -> SimulatorSettings:
    return generated(**{**RATES, **kw})


async def test_generated_book_is_consistent_with_snapshot_diffs_and_tickers(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with Simulator(sim_settings(max_messages=1500)) as sim:
        settings = settings_for(sim, redis_server.url, tmp_path / "spool")
        async with running_collector(settings) as col:
            await wait_until(lambda: sim.market.finished.is_set(), what="simulator done")
            await wait_until(
                lambda: sum(col.stats.messages_in.values()) >= sum(sim.stats()["sent"].values())
            )
            await col.flushed()
    records = read_stream(redis_server.url, stream_key("binance", "ethusdt"))
    result = check_against_tickers(((int(r.kind), r.payload) for r in records), "ethusdt")
    assert result.compared > 20, result
    assert result.ok, result.examples


async def test_replay_snapshots_follow_the_replayed_diffs(
    redis_server: RedisServer, tmp_path: Path, binance_data: Path
) -> None:
    cfg = sim_settings(
        mode="replay", replay_files=[binance_data / "spot_ethusdt_20240808.gz"], replay_speed=0
    )
    async with Simulator(cfg) as sim:
        settings = settings_for(sim, redis_server.url, tmp_path / "spool")
        async with running_collector(settings) as col:
            await wait_until(lambda: sim.market.finished.is_set(), limit_s=60, what="replay done")
            await wait_until(
                lambda: sum(col.stats.messages_in.values()) >= sum(sim.stats()["sent"].values())
            )
            # a second snapshot, taken mid-replay, must be the recorded one plus the diffs so far
            sim.inject_gap("ethusdt@depth@100ms", 1)
            await col.flushed()
    records = read_stream(redis_server.url, stream_key("binance", "ethusdt"))
    result = check_against_tickers(((int(r.kind), r.payload) for r in records), "ethusdt")
    assert result.compared > 100, result
    assert result.ok, result.examples


async def test_rest_depth_answers_like_binance_and_429_carries_retry_after() -> None:
    async with Simulator(sim_settings(faults={"rest_429_count": 1, "retry_after_s": 7})) as sim:
        url = sim.base_url + "/api/v3/depth"
        async with aiohttp.ClientSession() as s:
            async with s.get(url, params={"symbol": "ETHUSDT", "limit": "5"}) as r:
                assert r.status == 429
                assert r.headers["Retry-After"] == "7"
            async with s.get(url, params={"symbol": "ETHUSDT", "limit": "5"}) as r:
                body = orjson.loads(await r.read())
                assert r.status == 200
                assert set(body) == {"lastUpdateId", "bids", "asks"}
                assert len(body["bids"]) == 5
                assert all(isinstance(p, str) and isinstance(q, str) for p, q in body["bids"])
                prices = [float(p) for p, _ in body["bids"]]
                assert prices == sorted(prices, reverse=True)
            async with s.get(url, params={"symbol": "NOPE", "limit": "5"}) as r:
                assert r.status == 400
            async with s.get(url, params={"symbol": "ETHUSDT", "limit": "6000"}) as r:
                assert r.status == 400


async def test_invalid_stream_requests_are_refused() -> None:
    async with Simulator(sim_settings()) as sim, aiohttp.ClientSession() as s:
        for streams in ("ethusdt@nope", "foousdt@trade", ""):
            async with s.get(sim.base_url + "/stream", params={"streams": streams}) as r:
                assert r.status == 400


async def test_server_pings_and_drops_a_client_that_never_pongs() -> None:
    async with Simulator(sim_settings(ping_interval_s=0.05)) as sim, aiohttp.ClientSession() as s:
        url = sim.ws_url + "/stream?streams=ethusdt@trade"
        async with s.ws_connect(url, autoping=False) as silent:
            saw_ping = False
            async for msg in silent:
                if msg.type is aiohttp.WSMsgType.PING:
                    saw_ping = True  # and never answer
            assert saw_ping
            assert silent.close_code == 1001
        await wait_until(lambda: bool(sim.closed), what="server side closed")
        assert sim.closed[-1].closed_reason == "no pong"


async def test_connections_are_cut_at_the_configured_age() -> None:
    async with Simulator(sim_settings(faults={"close_after_s": 0.3})) as sim:
        url = sim.ws_url + "/stream?streams=ethusdt@trade"
        async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
            n = 0
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    n += 1
            assert n > 0
        await wait_until(lambda: bool(sim.closed), what="server side closed")
        assert sim.closed[-1].closed_reason == "24h cut"


async def test_cryptofeed_recording_replays_several_symbols_with_their_snapshots(
    redis_server: RedisServer, tmp_path: Path, binance_data: Path
) -> None:
    ws_file = binance_data / "cryptofeed" / "BINANCE.ws.1.0"
    expected: dict[str, list[bytes]] = {}
    for rec in read_recording(ws_file):
        if rec.stream:
            expected.setdefault(rec.stream, []).append(rec.raw)
    cfg = sim_settings(mode="replay", replay_files=[ws_file], replay_speed=0)
    async with Simulator(cfg) as sim:
        assert sorted(sim.market.symbols) == ["blzeth", "lrcbtc", "nknusdt", "runeeur"]
        settings = settings_for(
            sim,
            redis_server.url,
            tmp_path / "spool",
            channels=["depth@100ms", "bookTicker", "kline_1m", "aggTrade"],
        )
        async with running_collector(settings) as col:
            n = sum(len(v) for v in expected.values())
            await wait_until(lambda: sum(col.stats.messages_in.values()) >= n, what="replay")
            await wait_until(lambda: sum(col.stats.snapshots.values()) >= 3, what="snapshots")
            await col.flushed()
    got: dict[str, list[bytes]] = {}
    for sym in sim.market.symbols:
        records = read_stream(redis_server.url, stream_key("binance", sym))
        got.update(messages_by_stream(records))
    assert got == expected
