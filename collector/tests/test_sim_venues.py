"""The simulator serves every venue of vps_brain.venues as Binance does, seen by a plain client.

No collector runs here: a bare aiohttp client checks the USD-M routes (and that a stream on the
wrong path is withheld, silently, and counted), each venue's REST depth path, fields and limits,
the futures ``pu`` chain and the book oracle on generated data, the gap fault as a ``pu`` break,
the incoming message limit, the replay of the futures recordings and the µs timestamps of older
recordings. Event shapes are compared with the recordings in shared/data/binance.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from harness import generated, wait_until

from vps_brain.recordings import read_recording
from vps_brain.sim import Simulator
from vps_brain.venues import VENUES

# A fast generated market: about 1,500 messages a second per symbol.
FAST: dict[str, Any] = {"depth_rate": 300, "trade_rate": 400, "ticker_rate": 800}
SYMBOL = {"spot": "ethusdt", "usdm": "ethusdt", "coinm": "ethusd_perp"}
RECORDING = {
    "spot": "spot_ethusdt_20240808.gz",
    "usdm": "usdm_ethusdt_20240808.gz",
    "coinm": "coinm_ethusd_perp_20240808.gz",
}
# Where each venue serves the high-frequency streams (USD-M routes them; the others have none).
PUBLIC = {"spot": "/stream", "usdm": "/public/stream", "coinm": "/stream"}
# Documented field orders of streams the recordings lack (developers.binance.com).
AGG_TRADE = {
    "usdm": ["e", "E", "s", "a", "p", "q", "f", "l", "T", "m"],
    "coinm": ["e", "E", "a", "s", "p", "q", "f", "l", "T", "m"],
}
MARK_PRICE = {
    "usdm": ["e", "E", "s", "p", "i", "P", "r", "T"],
    "coinm": ["e", "E", "s", "p", "P", "i", "r", "T"],
}


class Reader:
    """Every data message of one websocket, by stream, collected by a background task."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.by_stream: dict[str, list[dict[str, Any]]] = {}
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                env = orjson.loads(msg.data)
                self.by_stream.setdefault(env["stream"], []).append(env["data"])

    def count(self, stream: str) -> int:
        return len(self.by_stream.get(stream, ()))


@contextlib.asynccontextmanager
async def reading(session: aiohttp.ClientSession, url: str) -> AsyncIterator[Reader]:
    async with session.ws_connect(url) as ws:
        reader = Reader(ws)
        try:
            yield reader
        finally:
            reader.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader.task


def streams_url(sim: Simulator, path: str, *streams: str) -> str:
    return f"{sim.ws_url}{path}?streams={'/'.join(streams)}"


def conn_stats(sim: Simulator, path: str) -> dict[str, Any]:
    (conn,) = [c for c in sim.stats()["connections"] if c["path"] == path]
    return conn


def recorded_data(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(channel, data)`` of every recorded message (``depth@0ms`` -> ``depth``)."""
    for rec in read_recording(path):
        if rec.stream:
            channel = rec.stream.split("@")[1]
            yield channel, orjson.loads(rec.raw)["data"]


def recorded_snapshot(path: Path) -> dict[str, Any]:
    snap = next(r for r in read_recording(path) if r.is_snapshot)
    parsed: dict[str, Any] = orjson.loads(snap.raw)
    return parsed


def shape(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Field names in order with the JSON type of each value."""
    return [(k, type(v).__name__) for k, v in data.items()]


# ------------------------------------------------------------------------------- USD-M routes


async def test_usdm_routes_streams_by_path_and_withholds_a_stream_on_the_wrong_path() -> None:
    depth, trade, ticker = "ethusdt@depth@100ms", "ethusdt@trade", "ethusdt@bookTicker"
    agg, mark, mark1s = "ethusdt@aggTrade", "ethusdt@markPrice", "ethusdt@markPrice@1s"
    async with Simulator(generated(venue="usdm", **FAST)) as sim, aiohttp.ClientSession() as s:
        async with (
            reading(s, streams_url(sim, "/public/stream", depth, trade, ticker, agg)) as public,
            reading(s, streams_url(sim, "/market/stream", agg, mark, mark1s, trade)) as market,
            reading(s, streams_url(sim, "/stream", trade, ticker, mark)) as bare,
        ):
            await wait_until(
                lambda: (
                    all(public.count(x) for x in (depth, trade, ticker))
                    and all(market.count(x) for x in (agg, mark, mark1s))
                    and all(bare.count(x) for x in (trade, ticker))
                    and sim.stats()["published"].get(mark, 0) > 0
                ),
                limit_s=10,
                what="every routed stream on its path",
            )
            stats = {p: conn_stats(sim, p) for p in ("/public/stream", "/market/stream", "/stream")}
        # Binance fails silently: accepted, never delivered, counted here.
        assert agg not in public.by_stream and trade not in market.by_stream
        assert mark not in bare.by_stream
        assert stats["/public/stream"]["route"] == "/public"
        assert stats["/stream"]["route"] == "/public"  # no routed path: /public data only
        assert list(stats["/public/stream"]["unrouted"]) == [agg]
        assert list(stats["/market/stream"]["unrouted"]) == [trade]
        assert list(stats["/stream"]["unrouted"]) == [mark]
        assert all(n > 0 for c in stats.values() for n in c["unrouted"].values())
        assert agg not in stats["/public/stream"]["sent"]
        # One aggregate per trade: consecutive ids, f == l == the trade's id, same price and side.
        aggs = market.by_stream[agg]
        assert [a["a"] for a in aggs] == list(range(aggs[0]["a"], aggs[0]["a"] + len(aggs)))
        assert all(a["f"] == a["l"] for a in aggs)
        trades = {t["t"]: t for t in public.by_stream[trade]}
        same = [(a, trades[a["f"]]) for a in aggs if a["f"] in trades]
        assert len(same) > 10
        assert all((a["p"], a["q"], a["m"]) == (t["p"], t["q"], t["m"]) for a, t in same)
        # markPrice and markPrice@1s carry the same markPriceUpdate, about once a second.
        assert [m["E"] for m in market.by_stream[mark]] == [
            m["E"] for m in market.by_stream[mark1s]
        ]
        assert market.by_stream[mark][0]["e"] == "markPriceUpdate"


@pytest.mark.parametrize("venue", ["spot", "coinm"])
async def test_a_venue_without_routes_serves_every_stream_on_the_bare_path(venue: str) -> None:
    sym = SYMBOL[venue]
    streams = [f"{sym}@{ch}" for ch in ("depth@100ms", "trade", "bookTicker", "aggTrade")]
    cfg = generated(venue=venue, symbols=[sym], **FAST)
    async with Simulator(cfg) as sim, aiohttp.ClientSession() as s:
        async with reading(s, streams_url(sim, "/stream", *streams)) as bare:
            await wait_until(lambda: all(bare.count(x) for x in streams), limit_s=10)
        for path in ("/public/stream", "/market/stream"):
            async with s.get(sim.base_url + path, params={"streams": streams[0]}) as r:
                assert r.status == 404, path
        assert conn_stats(sim, "/stream")["unrouted"] == {}


# --------------------------------------------------------------------------------------- REST


@pytest.mark.parametrize("venue", list(VENUES))
async def test_rest_depth_is_served_on_the_venues_path_with_the_recorded_fields(
    venue: str, binance_data: Path
) -> None:
    sym = SYMBOL[venue]
    v = VENUES[venue]
    recorded = recorded_snapshot(binance_data / RECORDING[venue])
    cfg = generated(venue=venue, symbols=[sym], faults={"rest_429_count": 1, "retry_after_s": 3})
    async with Simulator(cfg) as sim, aiohttp.ClientSession() as s:
        url = sim.base_url + v.depth_path
        params = {"symbol": sym.upper(), "limit": "50"}
        async with s.get(url, params=params) as r:
            assert r.status == 429 and r.headers["Retry-After"] == "3"  # the fault, every venue
        async with s.get(url, params=params) as r:
            assert r.status == 200
            assert r.headers["X-MBX-USED-WEIGHT-1M"] == str(v.depth_weight(50))
            body = orjson.loads(await r.read())
        async with s.get(url, params={**params, "limit": "7"}) as r:
            illegal = (r.status, orjson.loads(await r.read()))
        for other in {u.depth_path for u in VENUES.values()} - {v.depth_path}:
            async with s.get(sim.base_url + other, params=params) as r:
                assert r.status == 404, other
        async with s.get(sim.base_url + v.depth_path.rsplit("/", 1)[0] + "/ping") as r:
            assert r.status == 200
    assert list(body) == list(recorded)  # the field order of the real snapshot
    assert shape(body)[:-2] == shape(recorded)[:-2]
    assert len(body["bids"]) == len(body["asks"]) == 50
    assert all(isinstance(p, str) and isinstance(q, str) for p, q in body["bids"] + body["asks"])
    assert Decimal(body["bids"][0][0]) < Decimal(body["asks"][0][0])
    if venue == "coinm":
        assert (body["symbol"], body["pair"]) == ("ETHUSD_PERP", "ETHUSD")
    if v.depth_limits is None:  # spot takes any limit up to 5000
        assert illegal[0] == 200
    else:
        assert illegal[0] == 400 and illegal[1]["code"] == -1100, illegal
    assert sim.rest_weight == v.depth_weight(50) + (v.depth_weight(7) if illegal[0] == 200 else 0)


# --------------------------------------------------------------------------- generated futures


def rebuild_and_compare(
    snap: dict[str, Any], diffs: list[dict[str, Any]], tickers: list[dict[str, Any]]
) -> tuple[int, list[str]]:
    """Apply the diffs onto the snapshot by the futures rule; compare tops with tickers by ``u``.

    Returns the number of tickers compared and the mismatches (empty when all equal).
    """
    last = int(snap["lastUpdateId"])
    bids = {p: q for p, q in snap["bids"]}
    asks = {p: q for p, q in snap["asks"]}
    tops: dict[int, tuple[str, str, str, str]] = {}
    prev: int | None = None
    for d in diffs:
        if d["u"] < last:
            continue
        if prev is None:
            assert d["U"] <= last <= d["u"] or d["pu"] == last, (d["U"], last, d["u"])
        else:
            assert d["pu"] == prev
        for side, levels in ((bids, d["b"]), (asks, d["a"])):
            for p, q in levels:
                if Decimal(q) == 0:
                    side.pop(p, None)
                else:
                    side[p] = q
        prev = d["u"]
        bb = max(bids, key=Decimal)
        ba = min(asks, key=Decimal)
        tops[d["u"]] = (bb, bids[bb], ba, asks[ba])
    compared = 0
    wrong: list[str] = []
    for t in tickers:
        top = tops.get(t["u"])
        if top is None:
            continue
        compared += 1
        if top != (t["b"], t["B"], t["a"], t["A"]):
            wrong.append(f"u={t['u']}: book {top}, ticker {t}")
    return compared, wrong


@pytest.mark.parametrize("venue", ["usdm", "coinm"])
async def test_generated_futures_diffs_chain_by_pu_and_the_book_matches_every_ticker(
    venue: str, binance_data: Path
) -> None:
    sym = SYMBOL[venue]
    depth, fast, ticker = f"{sym}@depth@100ms", f"{sym}@depth@0ms", f"{sym}@bookTicker"
    trade = f"{sym}@trade"
    cfg = generated(venue=venue, symbols=[sym], max_messages=1500, **FAST)
    async with (
        Simulator(cfg) as sim,
        aiohttp.ClientSession() as s,
        reading(s, streams_url(sim, PUBLIC[venue], depth, fast, ticker, trade)) as rd,
    ):
        await wait_until(lambda: rd.count(depth) > 0, what="a first diff")
        rest = sim.base_url + VENUES[venue].depth_path
        async with s.get(rest, params={"symbol": sym.upper(), "limit": "1000"}) as r:
            snap = orjson.loads(await r.read())
        await wait_until(lambda: sim.market.finished.is_set(), what="the market done")
        await wait_until(
            lambda: sum(map(len, rd.by_stream.values())) >= sum(sim.stats()["sent"].values())
        )
    diffs = rd.by_stream[depth]
    assert rd.by_stream[fast] == diffs  # every depth speed carries the same diffs
    assert all(b["pu"] == a["u"] for a, b in itertools.pairwise(diffs))
    assert all(d["U"] > d["pu"] for d in diffs)
    assert any(d["U"] > d["pu"] + 1 for d in diffs)  # ids skip: only pu chains them
    compared, wrong = rebuild_and_compare(snap, diffs, rd.by_stream[ticker])
    assert compared > 20, compared
    assert not wrong, wrong[:3]
    # The events look like the venue's own: same fields, same order, same JSON types.
    first_recorded: dict[str, dict[str, Any]] = {}
    for channel, data in recorded_data(binance_data / RECORDING[venue]):
        first_recorded.setdefault(channel, data)
        if len(first_recorded) == 3:
            break
    assert shape(diffs[0]) == shape(first_recorded["depth"])
    assert shape(rd.by_stream[trade][0]) == shape(first_recorded["trade"])
    assert shape(rd.by_stream[ticker][0]) == shape(first_recorded["bookTicker"])
    assert diffs[0]["s"] == sym.upper()
    if venue == "coinm":
        assert diffs[0]["ps"] == rd.by_stream[ticker][0]["ps"] == "ETHUSD"


@pytest.mark.parametrize("venue", list(VENUES))
async def test_generated_agg_trades_and_mark_prices_have_the_documented_fields(
    venue: str, binance_data: Path
) -> None:
    sym = SYMBOL[venue]
    v = VENUES[venue]
    wanted = [f"{sym}@aggTrade"] + ([f"{sym}@markPrice@1s"] if "markPrice" in v.channels else [])
    path = "/market/stream" if v.routes else "/stream"
    async with (
        Simulator(generated(venue=venue, symbols=[sym], **FAST)) as sim,
        aiohttp.ClientSession() as s,
        reading(s, streams_url(sim, path, *wanted)) as rd,
    ):
        await wait_until(lambda: all(rd.count(x) for x in wanted), limit_s=10)
    agg = rd.by_stream[f"{sym}@aggTrade"][0]
    if venue == "spot":  # the recorded spot aggTrade (cryptofeed's Binance.com sample)
        recorded = next(
            d
            for ch, d in recorded_data(binance_data / "cryptofeed" / "BINANCE.ws.1.0")
            if ch == "aggTrade"
        )
        assert shape(agg) == shape(recorded)
    else:
        assert list(agg) == AGG_TRADE[venue]
        mark = rd.by_stream[f"{sym}@markPrice@1s"][0]
        assert list(mark) == MARK_PRICE[venue]
        assert all(isinstance(mark[k], str) for k in ("p", "i", "P", "r"))
        assert mark["T"] > mark["E"]  # the next funding time


# ------------------------------------------------------------------------------------- faults


@pytest.mark.parametrize("venue", ["usdm", "coinm"])
async def test_the_gap_fault_breaks_the_pu_chain(venue: str) -> None:
    sym = SYMBOL[venue]
    depth = f"{sym}@depth@100ms"
    async with (
        Simulator(generated(venue=venue, symbols=[sym], **FAST)) as sim,
        aiohttp.ClientSession() as s,
        reading(s, streams_url(sim, PUBLIC[venue], depth)) as rd,
    ):
        await wait_until(lambda: rd.count(depth) >= 20, what="20 diffs")
        fault = sim.base_url + "/_sim/fault/gap"
        async with s.post(fault, params={"stream": depth, "count": "3"}) as r:
            assert r.status == 200
        await wait_until(lambda: rd.count(depth) >= 60, what="40 more diffs")
        skipped = conn_stats(sim, PUBLIC[venue])["skipped"]
    diffs = rd.by_stream[depth]
    breaks = [(a["u"], b["pu"]) for a, b in itertools.pairwise(diffs) if b["pu"] != a["u"]]
    assert len(breaks) == 1, breaks  # the "pu break": pu names an u this client never saw
    assert skipped == {depth: 3}
    ((seen_u, pu),) = breaks
    assert pu > seen_u


@pytest.mark.parametrize("venue", list(VENUES))
async def test_a_client_sending_more_than_the_venues_messages_per_second_is_disconnected(
    venue: str,
) -> None:
    limit = VENUES[venue].messages_per_second
    sym = SYMBOL[venue]
    async with Simulator(generated(venue=venue, symbols=[sym])) as sim:
        url = streams_url(sim, PUBLIC[venue], f"{sym}@trade")
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(url, autoping=False) as ws:  # exactly the limit: served
                for i in range(limit):
                    await ws.ping(str(i).encode())
                pongs = 0
                async for msg in ws:
                    pongs += msg.type is aiohttp.WSMsgType.PONG
                    if pongs == limit:
                        break
                # each pong is sent after its ping was counted: the count is final here
                (conn,) = sim.connections.values()
                assert conn.close_reason is None and conn.stats.received == limit
            async with s.ws_connect(url, autoping=False) as ws:  # one more: cut
                for i in range(limit + 1):
                    await ws.send_str(f'{{"method":"LIST_SUBSCRIPTIONS","id":{i}}}')
                async for _msg in ws:
                    pass
                assert ws.close_code == 1001
        await wait_until(lambda: len(sim.closed) == 2, what="both closed on the server side")
        assert [c.closed_reason for c in sim.closed] == ["client closed", "too many messages"]
        assert sim.stats()["rate_limited"] == 1


async def test_answering_the_servers_pings_never_trips_the_message_limit() -> None:
    # 12.5 pings a second, 2.5 times spot's limit: every pong answers a ping, none is counted
    cfg = generated(ping_interval_s=0.08)
    async with (
        Simulator(cfg) as sim,
        aiohttp.ClientSession() as s,
        reading(s, streams_url(sim, "/stream", "ethusdt@trade")),  # aiohttp answers the pings
    ):
        await wait_until(lambda: sum(c.stats.pongs for c in sim.connections.values()) > 12)
        (conn,) = sim.connections.values()
        assert conn.close_reason is None
    assert sim.stats()["rate_limited"] == 0


async def test_every_fault_reaches_a_routed_futures_connection() -> None:
    trade = "ethusdt@trade"
    async with (
        Simulator(generated(venue="usdm", **FAST)) as sim,
        aiohttp.ClientSession() as s,
        s.ws_connect(streams_url(sim, "/public/stream", trade)) as ws,
    ):
        await ws.receive(timeout=5)  # a first trade: the connection is served
        for fault in ("malformed", "unknown", "shutdown", "oversized?bytes=100000", "rest429"):
            async with s.post(f"{sim.base_url}/_sim/fault/{fault}") as r:
                assert r.status == 200, fault
        seen: set[str] = set()
        wanted = {"malformed", "unknown", "shutdown", "oversized"}
        while seen != wanted:
            frame: bytes = (await ws.receive(timeout=5)).data.encode()
            if frame.startswith(b'{"stream":"ethusdt@trade","da') and not frame.endswith(b"}"):
                seen.add("malformed")
            elif frame.startswith(b'{"stream":"zzzusdt@trade"'):
                seen.add("unknown")
            elif frame.startswith(b'{"e":"serverShutdown"'):
                seen.add("shutdown")
            elif b'"e":"pad"' in frame and len(frame) > 100_000:
                seen.add("oversized")
        async with s.get(sim.base_url + "/fapi/v1/depth", params={"symbol": "ETHUSDT"}) as r:
            assert r.status == 429
        async with s.post(f"{sim.base_url}/_sim/fault/drop") as r:
            assert r.status == 200
        async for _msg in ws:
            pass
        assert ws.close_code == 1001
        await wait_until(lambda: bool(sim.closed), what="the drop on the server side")
    assert sim.closed[0].closed_reason == "drop fault"
    assert sim.closed[0].injected == dict.fromkeys(wanted, 1)


# ------------------------------------------------------------------------------------- replay


@pytest.mark.parametrize("venue", ["usdm", "coinm"])
async def test_a_futures_recording_replays_with_its_snapshot_and_e_t(
    venue: str, binance_data: Path
) -> None:
    path = binance_data / RECORDING[venue]
    sym = SYMBOL[venue]
    recorded = recorded_snapshot(path)
    diffs = [d for ch, d in recorded_data(path) if ch == "depth"]
    cfg = generated(venue=venue, mode="replay", replay_files=[path], replay_speed=0)
    async with Simulator(cfg) as sim, aiohttp.ClientSession() as s:
        assert sim.market.symbols == [sym]
        rest = sim.base_url + VENUES[venue].depth_path
        params = {"symbol": sym.upper(), "limit": "1000"}
        async with s.get(rest, params=params) as r:
            before = orjson.loads(await r.read())  # nothing published yet: the recorded one
        streams = [f"{sym}@depth@0ms", f"{sym}@trade", f"{sym}@bookTicker"]
        async with s.ws_connect(streams_url(sim, PUBLIC[venue], *streams)) as ws:
            await wait_until(lambda: sim.market.finished.is_set(), limit_s=20, what="the replay")
            async with s.get(rest, params=params) as r:
                after = orjson.loads(await r.read())
            stats = sim.stats()
            await ws.close()
    assert before == recorded and list(before) == list(recorded)
    last = diffs[-1]  # every diff applied: the last one's id and times
    assert (after["lastUpdateId"], after["E"], after["T"]) == (last["u"], last["E"], last["T"])
    assert list(after) == list(recorded)
    if venue == "coinm":
        assert (after["symbol"], after["pair"]) == ("ETHUSD_PERP", "ETHUSD")
    assert stats["unrouted"] == {}  # depth@0ms, trade and bookTicker are all /public
    assert stats["published"][streams[0]] == len(diffs)


# --------------------------------------------------------------------------------- recordings


def test_short_timestamps_of_older_recordings_are_read_as_microseconds(tmp_path: Path) -> None:
    lines = [
        b'1723161255088156 {"stream":"ethusdt@trade","data":{"e":"trade","t":1}}',  # 16: us
        b'1723161255088156767 {"stream":"ethusdt@trade","data":{"e":"trade","t":2}}',  # 19: ns
        b'172316125508815 {"lastUpdateId":1,"bids":[],"asks":[]}',  # 15 digits: us too
    ]
    path = tmp_path / "old.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    got = [(r.recv_ns, r.is_snapshot) for r in read_recording(path)]
    assert got == [
        (1_723_161_255_088_156_000, False),
        (1_723_161_255_088_156_767, False),
        (172_316_125_508_815_000, True),
    ]
