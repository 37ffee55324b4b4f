"""Exchange-side faults lose nothing and leave the right markers (simulator + real redis)."""

from __future__ import annotations

from pathlib import Path

import orjson
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

from vps_brain.config import SimulatorSettings
from vps_brain.frame import Kind, Record, quarantine_key, stream_key
from vps_brain.sim import Simulator
from vps_brain.sim.server import oversized_frame

# The traffic of this file's simulator (harness.generated adds a free port and ethusdt).
RATES: dict[str, object] = {
    "trade_rate": 800,
    "depth_rate": 200,
    "ticker_rate": 800,
    "ping_interval_s": 0.2,
}


def sim_settings(**kw: object) -> SimulatorSettings:
    return generated(**{**RATES, **kw})


def of_kind(records: list[Record], kind: Kind) -> list[dict[str, object]]:
    return [orjson.loads(r.payload) for r in records if r.kind is kind]


async def test_renewal_before_the_24h_cut_leaves_no_gap_and_no_duplicate(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # The "24 h" cut at 1.2 s; the collector renews at 0.5 s with an overlapping connection.
    sim_cfg = sim_settings(max_messages=4000, faults={"close_after_s": 1.2})
    async with Simulator(sim_cfg) as sim:
        settings = settings_for(
            sim, redis_server.url, tmp_path / "spool", renew_after_s=0.5, renew_overlap_s=0.4
        )
        async with running_collector(settings) as col:
            await wait_until(lambda: sim.market.finished.is_set(), what="simulator done")
            await wait_until(lambda: col.stats.renewals >= 2, what="two renewals")
            await col.flushed()
            assert col.stats.reconnects == 0
            assert sum(col.stats.duplicates.values()) > 0  # the overlap really overlapped
        published = sim.stats()["published"]
        assert len(sim.stats()["connections"]) >= 3
    records = read_stream(redis_server.url, stream_key("binance", "ethusdt"))
    by_stream = messages_by_stream(records)
    for name, msgs in by_stream.items():
        assert len(msgs) == published[name], name
    assert set(check_sequences(by_stream).values()) == {0}
    assert of_kind(records, Kind.GAP) == []
    events = [c["event"] for c in of_kind(records, Kind.CONTROL)]
    assert events.count("connection_renewed") >= 2


async def test_dropped_connection_reconnects_and_marks_the_gap_with_a_resync(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with Simulator(sim_settings(max_messages=3000)) as sim:
        settings = settings_for(sim, redis_server.url, tmp_path / "spool")
        async with running_collector(settings) as col:
            await wait_until(lambda: received(col) > 300, what="first messages")
            sim.drop_all()
            await wait_until(lambda: col.stats.reconnects >= 1, what="reconnect")
            await wait_until(lambda: received(col) > 600, what="messages after reconnect")
            sim.inject_gap("ethusdt@depth@100ms", 3)
            sim.inject_gap("ethusdt@trade", 2)
            await wait_until(lambda: sim.market.finished.is_set(), what="simulator done")
            await wait_until(
                lambda: received(col) >= sum(sim.stats()["sent"].values()), what="all received"
            )
            await wait_until(lambda: not col.routers[0].snapshot_wanted("ethusdt"), what="resynced")
            await col.flushed()
        sent = sim.stats()["sent"]
    records = read_stream(redis_server.url, stream_key("binance", "ethusdt"))
    by_stream = messages_by_stream(records)
    for name, msgs in by_stream.items():
        assert len(msgs) == sent[name], name  # everything the exchange sent us is stored
    gaps = of_kind(records, Kind.GAP)
    depth_gaps = [g for g in gaps if g["channel"] == "depth"]
    trade_gaps = [g for g in gaps if g["channel"] == "trade"]
    assert depth_gaps and trade_gaps
    # The injected 2-trade skip is the last trade gap: it came after the reconnect and nothing
    # broke later. (The reconnect's own gap may also span exactly 2 trades: tell them apart by
    # order, not by size.)
    injected = trade_gaps[-1]
    assert injected["got"] == injected["expected"] + 2, trade_gaps
    assert all(set(g) == {"symbol", "channel", "reason", "expected", "got"} for g in gaps)
    assert injected["reason"] == "sequence"
    assert {g["reason"] for g in gaps} <= {"sequence", "reconnect"}
    # every depth gap is followed by a snapshot (the resync), and the breaks match the gaps
    kinds = [r.kind for r in records]
    last_gap = max(i for i, r in enumerate(records) if r.kind is Kind.GAP)
    assert Kind.SNAPSHOT in kinds[last_gap:]
    assert kinds.count(Kind.SNAPSHOT) == len(depth_gaps) + 1
    breaks = check_sequences(by_stream)
    assert breaks["ethusdt@depth@100ms"] == len(depth_gaps)
    assert breaks["ethusdt@trade"] == len(trade_gaps)
    events = [c["event"] for c in of_kind(records, Kind.CONTROL)]
    assert "connection_closed" in events


async def test_bad_frames_are_quarantined_raw_and_collection_goes_on(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with Simulator(sim_settings()) as sim:
        settings = settings_for(sim, redis_server.url, tmp_path / "spool", max_frame_bytes=50_000)
        async with running_collector(settings) as col:
            await wait_until(lambda: received(col) > 100, what="first messages")
            sim.inject_malformed()
            sim.inject_oversized(60_000)
            sim.inject_unknown()
            sim.inject_malformed()
            await wait_until(lambda: sum(col.stats.quarantined.values()) >= 4, what="quarantine")
            before = received(col)
            await wait_until(lambda: received(col) > before + 100, what="still collecting")
            await col.flushed()
            assert dict(col.stats.quarantined) == {
                "malformed": 2,
                "oversized": 1,
                "unknown_stream": 1,
            }
            assert col.stats.reconnects == 0
    q = read_stream(redis_server.url, quarantine_key("binance"))
    assert [r.kind for r in q] == [Kind.QUARANTINE] * 4
    payloads = [r.payload for r in q]
    assert oversized_frame("ethusdt@trade", 60_000) in payloads
    assert b'{"stream":"zzzusdt@trade","data":{"e":"trade","t":1}}' in payloads
    assert payloads.count(b'{"stream":"ethusdt@trade","da') == 2


async def test_rest_429_is_honoured_and_the_snapshot_still_arrives(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    cfg = sim_settings(faults={"rest_429_count": 2, "retry_after_s": 1})
    async with Simulator(cfg) as sim:
        settings = settings_for(sim, redis_server.url, tmp_path / "spool")
        async with running_collector(settings) as col:
            await wait_until(lambda: col.stats.snapshots[SPOT, "ethusdt"] >= 1, what="snapshot")
            await col.flushed()
            assert col.stats.rest_429 == {SPOT: 2}
        assert sim.rest_429_sent == 2
        assert sim.rest_requests == 3
    records = read_stream(redis_server.url, stream_key("binance", "ethusdt"))
    assert [r.kind for r in records].count(Kind.SNAPSHOT) == 1


async def test_server_shutdown_notice_triggers_an_early_renewal_without_gap(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with Simulator(sim_settings(max_messages=2500)) as sim:
        settings = settings_for(sim, redis_server.url, tmp_path / "spool")
        async with running_collector(settings) as col:
            await wait_until(lambda: received(col) > 300, what="first messages")
            sim.announce_shutdown()
            await wait_until(lambda: col.stats.renewals == 1, what="renewal")
            await wait_until(lambda: sim.market.finished.is_set(), what="simulator done")
            await col.flushed()
            assert col.stats.reconnects == 0
            assert col.stats.quarantined["server_shutdown"] == 1
        published = sim.stats()["published"]
    records = read_stream(redis_server.url, stream_key("binance", "ethusdt"))
    by_stream = messages_by_stream(records)
    for name, msgs in by_stream.items():
        assert len(msgs) == published[name], name
    assert set(check_sequences(by_stream).values()) == {0}
    assert of_kind(records, Kind.GAP) == []
