"""The router alone: sequence checks, renewal hand-over and quarantine, record by record."""

from __future__ import annotations

import orjson

from vps_brain.collect.router import Router
from vps_brain.collect.stats import CollectorStats
from vps_brain.frame import Kind

STREAMS = ["ethusdt@trade", "ethusdt@depth@100ms", "ethusdt@bookTicker"]


class Sink:
    def __init__(self) -> None:
        self.records: list[tuple[str, int, bytes]] = []
        self.snapshots: list[str] = []

    def emit(self, key: str, _recv_ns: int, kind: int, payload: bytes) -> None:
        self.records.append((key, kind, payload))

    def kinds(self) -> list[int]:
        return [k for _key, k, _p in self.records]

    def messages(self) -> list[bytes]:
        return self.of(Kind.MESSAGE)

    def of(self, kind: Kind) -> list[bytes]:
        return [p for _key, k, p in self.records if k == kind]


def trade(t: int) -> bytes:
    return b'{"stream":"ethusdt@trade","data":{"e":"trade","t":%d,"p":"1.0","q":"2.0"}}' % t


def depth(lo: int, hi: int) -> bytes:
    return b'{"stream":"ethusdt@depth@100ms","data":{"U":%d,"u":%d,"b":[],"a":[]}}' % (lo, hi)


def ticker(u: int) -> bytes:
    return b'{"stream":"ethusdt@bookTicker","data":{"u":%d,"b":"1","B":"1","a":"2","A":"1"}}' % u


def make() -> tuple[Router, Sink]:
    sink = Sink()
    router = Router(
        "binance",
        STREAMS,
        emit=sink.emit,
        request_snapshot=sink.snapshots.append,
        stats=CollectorStats(),
    )
    return router, sink


def test_depth_straddling_the_previous_event_is_no_gap_but_a_jump_is() -> None:
    router, sink = make()
    router.on_frame(1, 1, depth(10, 12))
    router.on_frame(1, 2, depth(11, 15))  # straddles 13: fine
    router.on_frame(1, 3, depth(12, 14))  # entirely old: duplicate, dropped
    router.on_frame(1, 4, depth(20, 22))  # 16..19 missing
    assert sink.messages() == [depth(10, 12), depth(11, 15), depth(20, 22)]
    gaps = [orjson.loads(p) for _k, kind, p in sink.records if kind == Kind.GAP]
    assert gaps == [
        {"symbol": "ethusdt", "channel": "depth", "reason": "sequence", "expected": 16, "got": 20}
    ]
    assert sink.snapshots == ["ethusdt", "ethusdt"]  # first event, then the resync


def test_snapshot_older_than_the_first_buffered_event_is_refused() -> None:
    router, sink = make()
    router.on_frame(1, 1, depth(100, 105))
    assert router.on_snapshot("ethusdt", 2, b'{"lastUpdateId":99,"bids":[],"asks":[]}') is False
    assert router.snapshot_wanted("ethusdt")
    assert router.on_snapshot("ethusdt", 3, b'{"lastUpdateId":100,"bids":[],"asks":[]}') is True
    assert not router.snapshot_wanted("ethusdt")
    assert sink.kinds().count(Kind.SNAPSHOT) == 1


def test_renewal_hands_over_at_the_overlap_without_gap_or_duplicate() -> None:
    router, sink = make()
    switched: list[int] = []
    router.on_switched = switched.append
    for t in range(1, 6):
        router.on_frame(1, t, trade(t))
    router.begin_successor(2, STREAMS)
    router.on_frame(2, 10, trade(7))  # the new connection is ahead: held
    router.on_frame(1, 11, trade(6))  # the old one catches up -> switch
    router.on_frame(1, 12, trade(7))  # old connection's copy: duplicate
    router.on_frame(2, 13, trade(8))
    assert [orjson.loads(m)["data"]["t"] for m in sink.messages()] == list(range(1, 9))
    assert Kind.GAP not in sink.kinds()
    router.force_switch(2)  # the other streams had no traffic
    assert switched == [2]


def test_tickers_switch_once_both_connections_delivered_the_same_update() -> None:
    router, sink = make()
    for u in (100, 104, 109):
        router.on_frame(1, u, ticker(u))
    router.begin_successor(2, STREAMS)
    router.on_frame(2, 1, ticker(112))  # ahead: held
    router.on_frame(1, 2, ticker(112))  # same update seen on both: switch, drop the copy
    router.on_frame(2, 3, ticker(115))
    router.on_frame(1, 4, ticker(115))  # retired connection: dropped
    us = [orjson.loads(m)["data"]["u"] for m in sink.messages()]
    assert us == [100, 104, 109, 112, 115]


def test_reconnect_gap_is_labelled_reconnect() -> None:
    router, sink = make()
    router.on_frame(1, 1, trade(1))
    router.take_over(2, STREAMS)
    router.on_frame(2, 2, trade(5))
    gap = next(orjson.loads(p) for _k, kind, p in sink.records if kind == Kind.GAP)
    assert gap["reason"] == "reconnect" and gap["expected"] == 2 and gap["got"] == 5


def test_bad_frames_are_quarantined_with_their_reason() -> None:
    router, sink = make()
    router.on_frame(1, 1, b"not json")
    router.on_frame(1, 2, b'{"stream":"xyz@trade","data":{}}')
    router.on_frame(1, 3, b'{"stream":"ethusdt@trade","data":{"e":"trade"}}')  # no t
    router.on_frame(1, 4, b"[1,2]")
    assert [k for k, _kind, _p in sink.records] == ["md:binance:_quarantine"] * 4
    assert dict(router.stats.quarantined) == {"malformed": 3, "unknown_stream": 1}
