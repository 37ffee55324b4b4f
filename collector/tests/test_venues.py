"""The venues as data (vps_brain.venues), the markets of the settings, and the futures rules of the
router and the order book, without a network."""

from __future__ import annotations

import orjson
import pytest
from harness import SPOT
from test_collect_router import Sink

from vps_brain.collect.router import Router
from vps_brain.collect.stats import CollectorStats
from vps_brain.config import ConfigError, Settings, load_settings
from vps_brain.frame import Kind
from vps_brain.orderbook import Diff, DiffResult, SyncedBook
from vps_brain.venues import VENUES, SequenceRule, VenueError, venue_of_exchange

USDM = VENUES["usdm"]
COINM = VENUES["coinm"]


def test_depth_weights_and_limits_follow_each_venue() -> None:
    spot = VENUES["spot"]
    assert [spot.depth_weight(n) for n in (5, 100, 101, 500, 1000, 5000)] == [5, 5, 25, 25, 50, 250]
    for futures in (USDM, COINM):
        assert [futures.depth_weight(n) for n in (5, 50, 100, 500, 1000)] == [2, 2, 5, 10, 20]
        futures.check_depth_limit(1000)
        with pytest.raises(VenueError, match="5, 10, 20, 50, 100, 500, 1000, not 200"):
            futures.check_depth_limit(200)
    spot.check_depth_limit(200)
    assert (spot.weight_per_minute, USDM.weight_per_minute) == (6000, 2400)


def test_usdm_routes_every_channel_it_has_and_the_others_need_no_route() -> None:
    assert USDM.route_of("depth@0ms") == USDM.route_of("bookTicker") == "/public"
    assert USDM.route_of("trade") == USDM.route_of("depth20@100ms") == "/public"
    assert USDM.route_of("aggTrade") == USDM.route_of("markPrice@1s") == "/market"
    assert USDM.route_of("forceOrder") == USDM.route_of("kline_1h") == "/market"
    for venue in VENUES.values():
        for channel in venue.channels:
            venue.check_channel(channel)  # every channel has a path
    assert COINM.route_of("aggTrade") == VENUES["spot"].route_of("trade") == ""
    with pytest.raises(VenueError, match="routes no path for channel 'openInterest'"):
        USDM.route_of("openInterest")


def test_each_exchange_name_belongs_to_one_venue() -> None:
    assert [venue_of_exchange(v.exchange).name for v in VENUES.values()] == list(VENUES)
    assert venue_of_exchange(SPOT).sequence is SequenceRule.SPOT
    assert venue_of_exchange("binance-coinm").sequence is SequenceRule.FUTURES
    with pytest.raises(VenueError, match="no venue writes exchange 'kraken'"):
        venue_of_exchange("kraken")


def collector(**cfg: object) -> Settings:
    return Settings.model_validate({"collector": cfg})


def test_markets_take_spot_and_futures_at_once_with_the_venue_defaults() -> None:
    c = collector(
        markets=[
            {"venue": "spot", "symbols": ["ETHUSDT"]},
            {"venue": "usdm", "symbols": ["ethusdt"], "channels": ["depth@0ms", "aggTrade"]},
            {"venue": "coinm", "symbols": ["ethusd_perp"]},
        ]
    ).collector
    assert [(m.exchange_name, m.symbols, m.stream_channels) for m in c.markets] == [
        ("binance", ["ethusdt"], ["trade", "depth@100ms", "bookTicker"]),
        ("binance-usdm", ["ethusdt"], ["depth@0ms", "aggTrade"]),
        ("binance-coinm", ["ethusd_perp"], ["trade", "depth@100ms", "bookTicker"]),
    ]
    assert c.markets[1].ws_base == "wss://fstream.binance.com"
    assert c.markets[2].rest_base == "https://dapi.binance.com"


def test_the_spot_shorthand_is_one_spot_market() -> None:
    c = collector(symbols=["ETHUSDT"], ws_url="ws://127.0.0.1:1", exchange="binance").collector
    assert [(m.venue, m.symbols, m.ws_base, m.exchange_name) for m in c.markets] == [
        ("spot", ["ethusdt"], "ws://127.0.0.1:1", "binance")
    ]


@pytest.mark.parametrize(
    ("cfg", "error"),
    [
        (
            {"markets": [{"venue": "usdx", "symbols": ["a"]}]},
            r"collector\.markets\.0\.venue: .*unknown venue 'usdx': expected one of spot, usdm, "
            "coinm",
        ),
        (
            {"markets": [{"venue": "coinm", "symbols": ["a"], "channels": ["depth", "ticker"]}]},
            r"collector\.markets\.0\.channels: .*venue coinm has no channel 'ticker'",
        ),
        (
            {"markets": [{"venue": "usdm", "symbols": ["a"]}], "snapshot_limit": 5000},
            r"venue usdm takes depth limits 5, 10, 20, 50, 100, 500, 1000, not 5000",
        ),
        (
            {"markets": [{"venue": "spot", "symbols": ["a"]}], "symbols": ["b"]},
            r"set either markets or the spot shorthand \(symbols\), not both",
        ),
        (
            {
                "markets": [
                    {"venue": "usdm", "symbols": ["a"]},
                    {"venue": "usdm", "symbols": ["A"], "channels": ["aggTrade"]},
                ]
            },
            r"markets name binance-usdm:a more than once",
        ),
        (
            {"markets": [{"venue": "spot", "symbols": []}]},
            r"collector\.markets\.0\.symbols: .*at least 1",
        ),
    ],
)
def test_a_market_the_venue_cannot_serve_is_refused_naming_it(
    cfg: dict[str, object], error: str, tmp_path: object
) -> None:
    import yaml

    path = tmp_path / "c.yml"  # type: ignore[operator]
    path.write_text(yaml.safe_dump({"collector": cfg}))
    with pytest.raises(ConfigError, match=error):
        load_settings(path, environ={})


# ------------------------------------------------------------------------ router, futures rule


def depth(u_lo: int, u_hi: int, pu: int) -> bytes:
    data = b'{"e":"depthUpdate","U":%d,"u":%d,"pu":%d,"b":[],"a":[]}' % (u_lo, u_hi, pu)
    return b'{"stream":"ethusdt@depth@0ms","data":' + data + b"}"


def agg(a: int) -> bytes:
    return b'{"stream":"ethusdt@aggTrade","data":{"e":"aggTrade","a":%d,"p":"1","q":"2"}}' % a


def futures_router() -> tuple[Router, Sink, CollectorStats]:
    sink = Sink()
    stats = CollectorStats()
    router = Router(
        "binance-usdm",
        ["ethusdt@depth@0ms", "ethusdt@aggTrade"],
        emit=sink.emit,
        request_snapshot=sink.snapshots.append,
        stats=stats,
        sequence=SequenceRule.FUTURES,
    )
    return router, sink, stats


def test_futures_depth_chains_by_pu_and_a_pu_break_is_a_gap_and_a_resync() -> None:
    router, sink, stats = futures_router()
    router.on_frame(1, 1, depth(100, 110, 95))
    assert sink.snapshots == ["ethusdt"]  # the first event starts the sync
    router.on_snapshot("ethusdt", 2, b'{"lastUpdateId":105,"E":1,"T":1,"bids":[],"asks":[]}')
    router.on_frame(1, 3, depth(118, 125, 110))  # U jumps, pu continues: no gap on futures
    router.on_frame(1, 4, depth(118, 125, 110))  # the same event again: a duplicate
    router.on_frame(1, 5, depth(140, 150, 130))  # pu 130 != 125: what came between is missing
    assert sink.of(Kind.MESSAGE) == [
        depth(100, 110, 95),
        depth(118, 125, 110),
        depth(140, 150, 130),
    ]
    assert [orjson.loads(p) for p in sink.of(Kind.GAP)] == [
        {"symbol": "ethusdt", "channel": "depth", "reason": "sequence", "expected": 126, "got": 140}
    ]
    assert sink.snapshots == ["ethusdt", "ethusdt"]  # and it resyncs
    assert stats.gaps == {("binance-usdm", "ethusdt", "depth"): 1}
    assert stats.resyncs == {("binance-usdm", "ethusdt"): 2}
    assert stats.duplicates == {("binance-usdm", "ethusdt@depth@0ms"): 1}


def test_the_spot_rule_would_see_gaps_on_every_futures_event() -> None:
    """Why the rule is the venue's: futures ``U`` is rarely the previous ``u + 1``."""
    sink = Sink()
    router = Router(
        "binance",
        ["ethusdt@depth@0ms"],
        emit=sink.emit,
        request_snapshot=sink.snapshots.append,
        stats=CollectorStats(),
    )
    router.on_frame(1, 1, depth(100, 110, 95))
    router.on_frame(1, 2, depth(118, 125, 110))
    assert len(sink.of(Kind.GAP)) == 1


def test_agg_trades_must_be_consecutive() -> None:
    router, sink, stats = futures_router()
    for a in (7, 8, 8, 11):
        router.on_frame(1, a, agg(a))
    assert sink.of(Kind.MESSAGE) == [agg(7), agg(8), agg(11)]
    assert [orjson.loads(p)["expected"] for p in sink.of(Kind.GAP)] == [9]
    assert stats.gaps == {("binance-usdm", "ethusdt", "aggTrade"): 1}


def test_a_futures_frame_without_pu_is_quarantined() -> None:
    router, sink, stats = futures_router()
    router.on_frame(1, 1, b'{"stream":"ethusdt@depth@0ms","data":{"U":1,"u":2,"b":[],"a":[]}}')
    router.on_frame(1, 2, b'{"stream":"ethusdt@depth@0ms","data":{"U":1,"u":2,"pu":"x"}}')
    assert not sink.of(Kind.MESSAGE)
    assert len(sink.of(Kind.QUARANTINE)) == 2
    assert stats.quarantined == {"malformed": 2}


# ---------------------------------------------------------------------- order book, futures rule


def diff(lo: int, hi: int, pu: int, bid: str = "1") -> Diff:
    return Diff(lo, hi, [["10.0", bid]], [], pu)


def test_the_futures_book_applies_the_straddling_diff_then_follows_pu() -> None:
    book = SyncedBook("ethusdt", rule=SequenceRule.FUTURES)
    assert book.on_diff(diff(90, 99, 80)) is DiffResult.BUFFERED
    assert book.on_diff(diff(100, 110, 99)) is DiffResult.BUFFERED
    assert book.on_snapshot(105, [["9.0", "1"]], []) == [110]  # 90..99 stale, U <= 105 <= u
    assert book.on_diff(diff(120, 130, 110, "2")) is DiffResult.APPLIED  # U jumps, pu holds
    assert book.book.best_bid() is not None
    assert book.on_diff(diff(140, 150, 135)) is DiffResult.GAP
    assert (book.live, book.gaps) == (False, 1)


def test_the_first_futures_diff_after_a_snapshot_may_follow_it_by_pu() -> None:
    book = SyncedBook("ethusdt", rule=SequenceRule.FUTURES)
    book.on_snapshot(110, [], [])
    assert book.on_diff(diff(125, 130, 110)) is DiffResult.APPLIED  # pu == lastUpdateId
    book.on_snapshot(110, [], [])
    assert book.on_diff(diff(125, 130, 112)) is DiffResult.GAP  # neither straddles nor chains
