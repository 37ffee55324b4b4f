"""Whole-market start-up and connections (issue 15 items 2, 3): simulator + real redis.

The simulator enforces Binance's REST weight per fixed window and its connection-attempt limit,
shrunk so that the tests run in seconds; the collector is set to the same figures.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import aiohttp
import orjson
import pytest
from conftest import RedisServer
from harness import (
    SPOT,
    check_sequences,
    generated,
    messages_by_stream,
    read_stream,
    received,
    running_collector,
    settings_for,
    wait_until,
)

from vps_brain.collect.service import Collector
from vps_brain.collect.ws import group_streams, url_prefix_bytes
from vps_brain.config import ConfigError, Settings
from vps_brain.frame import Kind, stream_key
from vps_brain.sim import Simulator
from vps_brain.venues import VENUES


def sample(col: Collector, name: str) -> float | None:
    value = col.stats.registry.get_sample_value(f"vps_brain_collector_{name}", {"exchange": SPOT})
    return value


def with_market(settings: Settings, **fields: object) -> Settings:
    """``settings`` with ``fields`` set on its one market (validated again)."""
    data = settings.model_dump(mode="json")
    data["collector"]["markets"][0].update(fields)
    return Settings.model_validate(data)


def symbols(n: int) -> list[str]:
    return [f"s{i:03d}usdt" for i in range(n)]


async def test_two_hundred_books_sync_in_priority_order_with_no_429(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # 200 books x weight 5 (limit 100) = 1,000 weight at 300 a 1-second window: 4 windows at
    # least. 600 streams make a URL of ~14 KB: over two connections, or the simulator says 400.
    names = symbols(200)
    priority = names[-5:][::-1]
    sim_cfg = generated(
        symbols=names,
        depth_rate=5,
        trade_rate=1,
        ticker_rate=1,
        faults={"rest_weight_limit": 300, "rest_window_s": 1.0},
    )
    async with Simulator(sim_cfg) as sim:
        settings = settings_for(
            sim,
            redis_server.url,
            tmp_path / "spool",
            snapshot_limit=100,
            rest_weight_per_minute=300,
            rest_weight_window_s=1.0,
        )
        settings = with_market(settings, snapshot_priority=priority)
        async with running_collector(settings) as col:
            assert len(col.slots) >= 2
            assert sample(col, "books") == 200
            assert sample(col, "all_books_synced_seconds") == -1
            await wait_until(lambda: sample(col, "books_synced") == 200, 60, "every book in sync")
            synced_s = sample(col, "all_books_synced_seconds")
            assert synced_s is not None and synced_s > 0
            assert col.stats.rest_429[SPOT] == 0
        assert sim.rest_over_limit == 0
        assert sim.stats()["rest_429_sent"] == 0
        served = [s for s, _limit in sim.snapshot_log]
        assert served[: len(priority)] == priority
        assert sorted(set(served)) == sorted(names)


async def test_per_symbol_snapshot_limits_reach_the_exchange_at_their_weights(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with Simulator(generated(symbols=["ethusdt", "btcusdt", "solusdt"])) as sim:
        settings = settings_for(
            sim,
            redis_server.url,
            tmp_path / "spool",
            snapshot_limit=100,
            symbols=sim.market.symbols,
            channels=["depth@100ms"],
        )
        settings = with_market(settings, snapshot_limits={"BTCUSDT": 5000, "ethusdt": 10})
        async with running_collector(settings) as col:
            await wait_until(lambda: sample(col, "books_synced") == 3, what="three books in sync")
        limits = {s: lim for s, lim in sim.snapshot_log}
        assert limits == {"ethusdt": 10, "btcusdt": 5000, "solusdt": 100}
        spot = VENUES["spot"]
        assert sim.rest_weight == sum(spot.depth_weight(lim) for _s, lim in sim.snapshot_log)
        body = orjson.loads(sim.market.snapshot("ethusdt").body(10))  # type: ignore[union-attr]
        assert len(body["bids"]) <= 10


def test_snapshot_limits_and_priority_name_only_the_markets_symbols() -> None:
    def load(market: dict[str, object]) -> Settings:
        return Settings.model_validate({"collector": {"markets": [market]}})

    ok = load({"symbols": ["ethusdt"], "snapshot_limits": {"ETHUSDT": 20}})
    assert ok.collector.markets[0].snapshot_limit_of("ethusdt", 1000) == 20
    with pytest.raises(ValueError, match="snapshot_limits names btcusdt"):
        load({"symbols": ["ethusdt"], "snapshot_limits": {"btcusdt": 20}})
    with pytest.raises(ValueError, match="snapshot_priority names btcusdt"):
        load({"symbols": ["ethusdt"], "snapshot_priority": ["btcusdt"]})
    with pytest.raises(ValueError, match="takes depth limits"):
        load({"venue": "usdm", "symbols": ["ethusdt"], "snapshot_limits": {"ethusdt": 7}})


def test_whole_market_streams_fit_short_urls_and_keep_each_symbol_on_one_connection() -> None:
    streams = [f"{s}@{ch}" for s in symbols(1500) for ch in ("trade", "depth@100ms", "bookTicker")]
    prefix = url_prefix_bytes("wss://data-stream.binance.vision/stream?streams=")
    groups = group_streams(streams, per_connection=1024, prefix_bytes=prefix, max_url_bytes=8000)
    assert [s for g in groups for s in g] == streams
    for g in groups:
        assert len(g) <= 1024
        assert prefix + len("/".join(g)) <= 8000
    owner = {s.split("@")[0]: i for i, g in enumerate(groups) for s in g}
    assert all(owner[s.split("@")[0]] == i for i, g in enumerate(groups) for s in g)
    assert len(groups) <= 16  # about 350 streams a connection


def test_a_stagger_that_does_not_fit_in_renew_after_is_refused(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {
            "collector": {
                "symbols": symbols(3),
                "max_streams_per_connection": 3,
                "renew_after_s": 100,
                "spool_dir": str(tmp_path),
            }
        }
    )
    with pytest.raises(ConfigError, match="renew_stagger_s"):
        Collector(settings)


async def test_renewals_of_different_connections_never_start_within_the_stagger(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    sim_cfg = generated(symbols=symbols(3), depth_rate=20, trade_rate=20, ticker_rate=20)
    async with Simulator(sim_cfg) as sim:
        settings = settings_for(
            sim,
            redis_server.url,
            tmp_path / "spool",
            max_streams_per_connection=3,  # one symbol a connection: 3 connections
            renew_after_s=1.5,
            renew_stagger_s=0.4,
            renew_overlap_s=0.2,
        )
        async with running_collector(settings) as col:
            assert len(col.slots) == 3
            await wait_until(
                lambda: all(len(s.renewals_planned_at) >= 2 for s in col.slots),
                30,
                "two renewals of every connection",
            )
            assert col.stats.reconnects == 0
        starts = sorted(t for s in col.slots for t in s.renewals_planned_at)
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert min(gaps) >= 0.4 - 1e-9
        spread = 2 * 0.4  # (3 connections - 1) x the stagger
        for slot in col.slots:  # a renewal comes within renew_after_s +- the spread
            first, *_ = slot.renewals_planned_at
            assert first <= col.stats.started_at + 1.5 + spread + 0.5  # (+ the time to open)
            for a, b in itertools.pairwise(slot.renewals_planned_at):
                assert b - a >= 1.5 - spread - 1e-6


async def test_connection_attempts_stay_within_the_exchanges_rate_limit(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    limits = {"connection_limit": 3, "connection_window_s": 1.0}
    async with Simulator(generated(symbols=symbols(1), faults=limits)) as sim:
        # the simulator does refuse one attempt too many
        async with aiohttp.ClientSession() as http:
            url = f"{sim.ws_url}/stream?streams={symbols(1)[0]}@trade"
            for _ in range(3):
                async with http.ws_connect(url) as ws:
                    await ws.close()
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url)
            assert refused.value.status == 429
        assert sim.connections_refused == 1
    async with Simulator(generated(symbols=symbols(6), faults=limits)) as sim:
        settings = settings_for(
            sim,
            redis_server.url,
            tmp_path / "spool",
            max_streams_per_connection=3,  # 6 connections at 3 a second
            connection_attempts=3,
            connection_window_s=1.0,
        )
        async with running_collector(settings) as col:
            assert len(col.slots) == 6
            await wait_until(lambda: all(s.current for s in col.slots), 30, "six connections")
            sim.drop_all()
            await wait_until(lambda: col.stats.reconnects >= 6, 30, "six reconnects")
            await wait_until(lambda: all(s.current for s in col.slots), 30, "six again")
            pacer = col.pacers["spot"]
            assert pacer.delayed > 0  # the pacer did hold some attempts back
        assert sim.connections_refused == 0


async def test_one_dropped_connection_touches_only_its_own_streams(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    sim_cfg = generated(symbols=symbols(6), depth_rate=50, trade_rate=50, ticker_rate=50)
    async with Simulator(sim_cfg) as sim:
        settings = settings_for(
            sim,
            redis_server.url,
            tmp_path / "spool",
            max_streams_per_connection=6,  # two symbols a connection: 3 connections
            reconnect_min_s=0.2,
            reconnect_max_s=0.3,
        )
        async with running_collector(settings) as col:
            assert len(col.slots) == 3
            await wait_until(lambda: sample(col, "books_synced") == 6, what="every book in sync")
            victim = col.slots[1]
            hit = set(victim.symbols)
            conn = next(c for c in sim.connections.values() if c.stats.streams == victim.streams)
            sim.drop_connection(conn.stats.id)
            await wait_until(lambda: col.stats.reconnects >= 1, what="the reconnect")
            before = received(col)
            await wait_until(lambda: received(col) > before + 600, what="messages after it")
            await wait_until(lambda: sample(col, "books_synced") == 6, what="resynced")
            await col.flushed()
            assert col.stats.reconnects == 1
            gapped = {sym for (_e, sym, _ch) in col.stats.gaps}
            resynced = {sym for (_e, sym), n in col.stats.resyncs.items() if n > 1}
        # (the reconnect is immediate: whether it missed a message is luck, so gaps may be none)
        assert gapped <= hit
        assert resynced <= hit
        dropped = [c for c in sim.stats()["connections"] if c["closed_reason"] == "drop fault"]
        assert [c["streams"] for c in dropped] == [victim.streams]
        for sym in sim.market.symbols:
            records = read_stream(redis_server.url, stream_key(SPOT, sym))
            events = [orjson.loads(r.payload)["event"] for r in records if r.kind is Kind.CONTROL]
            assert ("connection_closed" in events) == (sym in hit), sym
            if sym not in hit:
                # the other connections' streams: in sequence, no gap, no resync
                assert set(check_sequences(messages_by_stream(records)).values()) == {0}, sym
                assert not any(r.kind is Kind.GAP for r in records), sym
                assert [r.kind for r in records].count(Kind.SNAPSHOT) == 1, sym
