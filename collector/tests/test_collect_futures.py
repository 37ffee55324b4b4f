"""USD-M and COIN-M futures through the real chain: simulator -> collector -> Redis -> consumer ->
store, beside spot in one collector.

The simulator serves each venue's own paths (USD-M's /public and /market routes, /fapi/v1/depth,
/dapi/v1/depth), so a collector that routed a stream to the wrong path, or used spot's sequence
rule, would miss data or see false gaps here.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from conftest import RedisServer
from harness import (
    SPOT,
    generated,
    messages_by_stream,
    read_stream,
    running_collector,
    settings_for,
    wait_until,
)
from test_consume import running
from test_consume import settings as consumer_settings

from vps_brain.cli import main
from vps_brain.config import RedisSettings, Settings, SimulatorSettings
from vps_brain.consume.reader import Consumer
from vps_brain.consume.replay import iter_store
from vps_brain.frame import Kind, stream_key
from vps_brain.orderbook import check_against_tickers
from vps_brain.recordings import read_recording
from vps_brain.sim import Simulator
from vps_brain.venues import VENUES, SequenceRule

FUTURES = SequenceRule.FUTURES


def spot_and_usdm(spot: Simulator, usdm: Simulator, redis_url: str, spool: Path) -> Settings:
    """One collector on both simulators: ``spot``'s market, then ethusdt on ``usdm``."""
    base = settings_for(spot, redis_url, spool)
    futures = {"venue": "usdm", "symbols": ["ethusdt"], "ws_url": usdm.ws_url}
    markets = [*base.collector.model_dump()["markets"], futures | {"rest_url": usdm.base_url}]
    collector = base.collector.model_dump() | {"markets": markets}
    return Settings.model_validate(base.model_dump() | {"collector": collector})


def stored_messages(store: Path, exchange: str) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for r in iter_store(store, exchanges=[exchange]):
        if r.kind == Kind.MESSAGE:
            out.setdefault(orjson.loads(r.payload)["stream"], []).append(r.payload)
    return out


@pytest.mark.parametrize(
    ("venue", "recording", "symbol", "comparable"),
    [
        # Of the 551 and 1,345 exact matches in the files: the simulator's snapshot is taken when
        # the collector asks, a little later than the recorded one, so the first diffs are stale.
        ("usdm", "usdm_ethusdt_20240808.gz", "ethusdt", 450),
        ("coinm", "coinm_ethusd_perp_20240808.gz", "ethusd_perp", 1000),
    ],
)
async def test_a_futures_recording_is_stored_once_and_its_book_matches_every_ticker(
    venue: str,
    recording: str,
    symbol: str,
    comparable: int,
    redis_server: RedisServer,
    tmp_path: Path,
    binance_data: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = binance_data / recording
    expected: dict[str, list[bytes]] = {}
    for rec in read_recording(path):
        if rec.stream:
            expected.setdefault(rec.stream, []).append(rec.raw)
    channels = sorted({name.split("@", 1)[1] for name in expected})
    exchange = VENUES[venue].exchange
    key = stream_key(exchange, symbol)
    sim_cfg = SimulatorSettings.model_validate(
        {"port": 0, "venue": venue, "mode": "replay", "replay_files": [path], "replay_speed": 0}
    )
    async with Simulator(sim_cfg) as sim:
        settings = settings_for(sim, redis_server.url, tmp_path / "spool", channels=channels)
        async with running_collector(settings) as col:
            n = sum(len(v) for v in expected.values())
            await wait_until(lambda: sum(col.stats.messages_in.values()) >= n, 60, "the replay")
            await col.flushed()
            assert dict(col.stats.snapshots) == {(exchange, symbol): 1}
            assert not col.stats.gaps  # the pu chain holds: no false gap
    in_redis = read_stream(redis_server.url, key)
    reader = RedisSettings(url=redis_server.url)
    consumer = Consumer(consumer_settings(tmp_path, streams=[key]), reader)
    async with running(consumer):
        await wait_until(
            lambda: (
                sum(len(v) for v in stored_messages(tmp_path / "store", exchange).values()) >= n
            ),
            30,
            "the store",
        )
    assert stored_messages(tmp_path / "store", exchange) == expected  # every record once, in order
    stored = list(iter_store(tmp_path / "store", exchanges=[exchange]))
    assert [(r.kind, r.payload) for r in stored] == [(int(r.kind), r.payload) for r in in_redis]
    assert (tmp_path / "store" / "data" / f"exchange={exchange}" / "channel=depth").is_dir()
    book = check_against_tickers(((r.kind, r.payload) for r in stored), symbol, FUTURES)
    assert (book.mismatches, book.gaps) == (0, 0), book.examples
    assert book.compared >= comparable
    # The command finds the venue from the partition and checks by its rule.
    assert main(["replay", "--store", str(tmp_path / "store"), "--check-book", symbol]) == 0
    assert capsys.readouterr().out.startswith(
        f"{exchange} {symbol}: {book.diffs_applied} diffs applied, {book.compared} bookTickers "
        "compared, 0 mismatches, 0 gaps"
    )
    # Prices and quantities are the exchange's strings (COIN-M quantities are contracts).
    trades = pq.read_table(
        next(
            (tmp_path / "store" / "data" / f"exchange={exchange}" / "channel=trade").rglob(
                "*.parquet"
            )
        )
    ).to_pylist()
    first = orjson.loads(expected[f"{symbol}@trade"][0])["data"]
    assert (trades[0]["price"], trades[0]["qty"]) == (first["p"], first["q"])


async def test_usdm_streams_go_to_their_routes_and_each_route_delivers(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    channels = ["depth@100ms", "trade", "bookTicker", "aggTrade", "markPrice@1s"]
    async with Simulator(generated(venue="usdm")) as sim:
        settings = settings_for(sim, redis_server.url, tmp_path / "spool", channels=channels)
        async with running_collector(settings) as col:
            routes = sorted((s.base_url.split("/", 3)[3], len(s.streams)) for s in col.slots)
            assert routes == [("market/stream?streams=", 2), ("public/stream?streams=", 3)]
            await wait_until(
                lambda: (
                    {name for _e, name in col.stats.messages_in}
                    >= {f"ethusdt@{ch}" for ch in channels}
                ),
                20,
                "a message on every stream",
            )
            await col.flushed()
            assert not col.stats.gaps
    by_stream = messages_by_stream(
        read_stream(redis_server.url, stream_key("binance-usdm", "ethusdt"))
    )
    assert set(by_stream) == {f"ethusdt@{ch}" for ch in channels}


async def test_a_pu_break_is_a_gap_record_and_a_resync_after_which_the_book_is_right(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    exchange = VENUES["usdm"].exchange
    async with Simulator(generated(venue="usdm", depth_rate=50.0)) as sim:
        settings = settings_for(sim, redis_server.url, tmp_path / "spool")
        async with running_collector(settings) as col:
            await wait_until(lambda: col.stats.snapshots[exchange, "ethusdt"] >= 1, what="sync")
            sim.inject_gap("ethusdt@depth@100ms", 3)  # three diffs never sent: pu breaks
            await wait_until(lambda: col.stats.snapshots[exchange, "ethusdt"] >= 2, what="resync")
            await asyncio.sleep(0.5)  # diffs and tickers after the resync
            await col.flushed()
            assert col.stats.gaps == {(exchange, "ethusdt", "depth"): 1}
    records = read_stream(redis_server.url, stream_key(exchange, "ethusdt"))
    gaps = [orjson.loads(r.payload) for r in records if r.kind is Kind.GAP]
    assert [(g["channel"], g["reason"]) for g in gaps] == [("depth", "sequence")]
    book = check_against_tickers(((int(r.kind), r.payload) for r in records), "ethusdt", FUTURES)
    assert (book.mismatches, book.gaps) == (0, 1), book.examples  # the marker resets the book
    after = records[next(i for i, r in enumerate(records) if r.kind is Kind.GAP) :]
    resynced = check_against_tickers(((int(r.kind), r.payload) for r in after), "ethusdt", FUTURES)
    assert (resynced.mismatches, resynced.gaps) == (0, 0), resynced.examples
    assert resynced.compared > 0  # the book rebuilt from the resync snapshot is right


async def test_one_collector_takes_the_same_symbol_on_spot_and_on_futures(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with (
        Simulator(generated()) as spot,
        Simulator(generated(venue="usdm")) as usdm,
    ):
        settings = spot_and_usdm(spot, usdm, redis_server.url, tmp_path / "spool")
        async with running_collector(settings) as col:
            await wait_until(
                lambda: {e for e, _s in col.stats.snapshots} == {SPOT, "binance-usdm"},
                20,
                "a snapshot of each venue",
            )
            await col.flushed()
            metrics = "".join(
                f"{m.name}{s.labels}" for m in col.stats.registry.collect() for s in m.samples
            )
    for exchange in (SPOT, "binance-usdm"):
        by_stream = messages_by_stream(
            read_stream(redis_server.url, stream_key(exchange, "ethusdt"))
        )
        assert set(by_stream) == {"ethusdt@trade", "ethusdt@depth@100ms", "ethusdt@bookTicker"}
        assert f"'exchange': '{exchange}', 'stream': 'ethusdt@trade'" in metrics
    assert spot.rest_requests >= 1 and usdm.rest_requests >= 1  # each venue its own REST host


async def test_a_rest_ban_on_one_venue_never_delays_another_venue_s_snapshots(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """USD-M answers every depth request with 429 and Retry-After 60: only USD-M waits."""
    banned = {"rest_429_count": 1_000, "retry_after_s": 60}
    async with (
        Simulator(generated()) as spot,
        Simulator(generated(venue="usdm", faults=banned)) as usdm,
    ):
        settings = spot_and_usdm(spot, usdm, redis_server.url, tmp_path / "spool")
        async with running_collector(settings) as col:
            await wait_until(lambda: usdm.rest_429_sent >= 1, 10, "the USD-M ban")
            spot.inject_gap("ethusdt@depth@100ms", 3)  # spot resyncs while USD-M is paused
            await wait_until(lambda: col.stats.snapshots[SPOT, "ethusdt"] >= 2, 5, "spot resync")
            assert (SPOT, "ethusdt") in col.stats.snapshots
            assert ("binance-usdm", "ethusdt") not in col.stats.snapshots
            assert usdm.rest_429_sent == 1  # Retry-After honoured: no second request yet
            assert col.stats.rest_429 == {"binance-usdm": 1}
