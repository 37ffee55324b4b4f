"""Market data sources of the simulator: a generated evolving book, or a replay of recordings.

A market publishes combined-stream envelopes (bytes, exactly what goes on the wire) to a
:class:`Hub`, which fans them out to the subscribed connections. All connections see one timeline,
so two overlapping connections receive the same ids (what a renewal relies on). Markets start
when the first connection subscribes, so a test that connects late still sees every message.

Both markets answer REST depth snapshots consistent with the stream they publish.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import orjson

from vps_brain.recordings import read_recording

CHANNELS = ("trade", "depth", "depth@100ms", "bookTicker")


def envelope(stream: str, data: bytes) -> bytes:
    """The combined-stream envelope exactly as Binance frames it."""
    return b'{"stream":"' + stream.encode() + b'","data":' + data + b"}"


class Subscriber(Protocol):
    def deliver(self, stream: str, payload: bytes) -> None: ...


@dataclass
class Hub:
    """Fan-out of published envelopes to the connections subscribed to each stream."""

    subscribers: dict[str, set[Subscriber]] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def subscribe(self, sub: Subscriber, streams: Iterable[str]) -> None:
        for s in streams:
            self.subscribers.setdefault(s, set()).add(sub)
        self.started.set()

    def unsubscribe(self, sub: Subscriber) -> None:
        for subs in self.subscribers.values():
            subs.discard(sub)

    def publish(self, stream: str, payload: bytes) -> None:
        self.published[stream] = self.published.get(stream, 0) + 1
        for sub in self.subscribers.get(stream, ()):
            sub.deliver(stream, payload)


@dataclass
class Snapshot:
    last_update_id: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]

    def body(self, limit: int) -> bytes:
        return orjson.dumps(
            {
                "lastUpdateId": self.last_update_id,
                "bids": [list(x) for x in self.bids[:limit]],
                "asks": [list(x) for x in self.asks[:limit]],
            }
        )


class Market(Protocol):
    symbols: list[str]
    finished: asyncio.Event

    async def run(self) -> None: ...

    def snapshot(self, symbol: str) -> Snapshot | None: ...


# --------------------------------------------------------------------------------- generated


def _px(ticks: int) -> str:
    return f"{ticks // 100}.{ticks % 100:02d}000000"


def _qty(lots: int) -> str:
    return f"{lots // 10000}.{lots % 10000:04d}0000"


class GeneratedBook:
    """A consistent evolving book for one symbol with update ids and trade ids."""

    def __init__(self, symbol: str, levels: int, rng: random.Random) -> None:
        self.symbol = symbol
        self.upper = symbol.upper().encode()
        self.rng = rng
        self.levels = levels
        self.mid = 268_380  # ticks of 0.01
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        for i in range(1, levels + 1):
            self.bids[self.mid - i] = rng.randint(1, 500_000)
            self.asks[self.mid + i - 1] = rng.randint(1, 500_000)
        self.bb = max(self.bids)
        self.ba = min(self.asks)
        self.update_id = 1_000_000
        self.trade_id = 5_000_000
        self.pending_first = 0
        self.changes_b: dict[int, int] = {}
        self.changes_a: dict[int, int] = {}
        self.event_ms = int(time.time() * 1000)

    def best(self) -> tuple[int, int, int, int]:
        b, a = self.bb, self.ba
        return b, self.bids[b], a, self.asks[a]

    def _set(self, side: dict[int, int], changes: dict[int, int], px: int, q: int) -> None:
        if q:
            side[px] = q
        else:
            side.pop(px, None)
        changes[px] = q
        if side is self.bids:
            if q and px > self.bb:
                self.bb = px
            elif not q and px == self.bb:
                self.bb = max(self.bids)
        else:
            if q and px < self.ba:
                self.ba = px
            elif not q and px == self.ba:
                self.ba = min(self.asks)

    def _update(self, at_best: bool = False) -> None:
        """One book change (one update id), remembered for the next depth event."""
        rng = self.rng
        self.update_id += 1
        if self.pending_first == 0:
            self.pending_first = self.update_id
        bb, ba = self.bb, self.ba
        reach = 0 if at_best else self.levels // 4
        r = rng.random()
        q = rng.randint(1, 500_000)
        if r < 0.5:
            if not at_best and r < 0.05 and ba - bb > 1:
                self._set(self.bids, self.changes_b, bb + 1, q)  # improve the bid
            elif not at_best and r < 0.15 and len(self.bids) > 10:
                self._set(self.bids, self.changes_b, bb - rng.randint(0, reach), 0)
            else:
                self._set(self.bids, self.changes_b, bb - rng.randint(0, reach), q)
        else:
            if not at_best and r > 0.95 and ba - bb > 1:
                self._set(self.asks, self.changes_a, ba - 1, q)  # improve the ask
            elif not at_best and r > 0.85 and len(self.asks) > 10:
                self._set(self.asks, self.changes_a, ba + rng.randint(0, reach), 0)
            else:
                self._set(self.asks, self.changes_a, ba + rng.randint(0, reach), q)

    def depth_event(self) -> bytes:
        """A diff with every change since the previous one (``U``..``u``), like depth@100ms."""
        # Sometimes no extra change: the diff then ends exactly at the last bookTicker's id.
        for _ in range(self.rng.randint(0 if self.pending_first else 1, 3)):
            self._update()
        first, self.pending_first = self.pending_first, 0
        self.event_ms = max(self.event_ms, int(time.time() * 1000))
        b = ",".join(f'["{_px(p)}","{_qty(q)}"]' for p, q in self.changes_b.items())
        a = ",".join(f'["{_px(p)}","{_qty(q)}"]' for p, q in self.changes_a.items())
        self.changes_b.clear()
        self.changes_a.clear()
        return b'{"e":"depthUpdate","E":%d,"s":"%s","U":%d,"u":%d,"b":[%s],"a":[%s]}' % (
            self.event_ms,
            self.upper,
            first,
            self.update_id,
            b.encode(),
            a.encode(),
        )

    def trade_event(self) -> bytes:
        self.trade_id += 1
        bid, _, ask, _ = self.best()
        maker = self.rng.random() < 0.5
        px = bid if maker else ask
        now = int(time.time() * 1000)
        return b'{"e":"trade","E":%d,"s":"%s","t":%d,"p":"%s","q":"%s","T":%d,"m":%s,"M":true}' % (
            now,
            self.upper,
            self.trade_id,
            _px(px).encode(),
            _qty(self.rng.randint(1, 20_000)).encode(),
            now,
            b"true" if maker else b"false",
        )

    def ticker_event(self) -> bytes:
        """A change of the best level (its own update id) and the bookTicker showing it."""
        self._update(at_best=True)
        b, bq, a, aq = self.best()
        return b'{"u":%d,"s":"%s","b":"%s","B":"%s","a":"%s","A":"%s"}' % (
            self.update_id,
            self.upper,
            _px(b).encode(),
            _qty(bq).encode(),
            _px(a).encode(),
            _qty(aq).encode(),
        )

    def snapshot(self) -> Snapshot:
        bids = [(_px(p), _qty(q)) for p, q in sorted(self.bids.items(), reverse=True)]
        asks = [(_px(p), _qty(q)) for p, q in sorted(self.asks.items())]
        return Snapshot(self.update_id, bids, asks)


class GeneratedMarket:
    """Evolving books for several symbols at configured per-symbol rates."""

    TICK_S = 0.002

    def __init__(
        self,
        hub: Hub,
        symbols: list[str],
        depth_rate: float,
        trade_rate: float,
        ticker_rate: float,
        max_messages: int = 0,
        levels: int = 200,
        seed: int = 1,
    ) -> None:
        self.hub = hub
        self.symbols = symbols
        self.rates = {"depth": depth_rate, "trade": trade_rate, "bookTicker": ticker_rate}
        self.max_messages = max_messages
        rng = random.Random(seed)
        self.books = {s: GeneratedBook(s, levels, random.Random(rng.random())) for s in symbols}
        self.finished = asyncio.Event()
        self.produced = 0

    def snapshot(self, symbol: str) -> Snapshot | None:
        book = self.books.get(symbol)
        return book.snapshot() if book else None

    async def run(self) -> None:
        await self.hub.started.wait()
        t0 = time.monotonic()
        done = dict.fromkeys(self.rates, 0.0)
        publish = self.hub.publish
        per_symbol: dict[str, int] = dict.fromkeys(self.symbols, 0)
        makers: dict[str, Callable[[GeneratedBook], bytes]] = {
            "depth": GeneratedBook.depth_event,
            "trade": GeneratedBook.trade_event,
            "bookTicker": GeneratedBook.ticker_event,
        }
        streams = {
            s: {
                "depth": (f"{s}@depth@100ms", f"{s}@depth"),
                "trade": (f"{s}@trade",),
                "bookTicker": (f"{s}@bookTicker",),
            }
            for s in self.symbols
        }
        while True:
            elapsed = time.monotonic() - t0
            # Interleave channels in proportion to their rates.
            due = {ch: int(rate * elapsed) - int(done[ch]) for ch, rate in self.rates.items()}
            n = sum(due.values())
            if n <= 0:
                await asyncio.sleep(self.TICK_S)
                continue
            order: list[str] = []
            for ch, k in due.items():
                order.extend([ch] * max(k, 0))
            self.books[self.symbols[0]].rng.shuffle(order)
            for ch in order:
                done[ch] += 1
                for sym, book in self.books.items():
                    if self.max_messages and per_symbol[sym] >= self.max_messages:
                        continue
                    per_symbol[sym] += 1
                    self.produced += 1
                    data = makers[ch](book)
                    for stream in streams[sym][ch]:
                        if self.hub.subscribers.get(stream):
                            publish(stream, envelope(stream, data))
                        else:
                            self.hub.published[stream] = self.hub.published.get(stream, 0) + 1
            if self.max_messages and all(v >= self.max_messages for v in per_symbol.values()):
                self.finished.set()
                return
            await asyncio.sleep(self.TICK_S)


# ------------------------------------------------------------------------------------ replay


class ReplayBook:
    """The book of a replayed symbol: the recorded snapshot plus every diff published since."""

    def __init__(self) -> None:
        self.base: tuple[int, dict[str, str], dict[str, str]] | None = None
        self.pending: list[bytes] = []  # published diff payloads not yet applied

    def set_snapshot(self, raw: bytes) -> None:
        if self.base is not None:
            return  # keep the first: later diffs are applied onto it
        snap = orjson.loads(raw)
        self.base = (
            int(snap["lastUpdateId"]),
            {p: q for p, q in snap["bids"]},
            {p: q for p, q in snap["asks"]},
        )

    def snapshot(self) -> Snapshot | None:
        if self.base is None:
            return None
        last, bids, asks = self.base
        for raw in self.pending:
            d = orjson.loads(raw)["data"]
            if int(d["u"]) <= last:
                continue
            for side, levels in ((bids, d["b"]), (asks, d["a"])):
                for p, q in levels:
                    if Decimal(q) == 0:
                        side.pop(p, None)
                    else:
                        side[p] = q
            last = int(d["u"])
        self.pending.clear()
        self.base = (last, bids, asks)
        return Snapshot(
            last,
            sorted(bids.items(), key=lambda x: Decimal(x[0]), reverse=True),
            sorted(asks.items(), key=lambda x: Decimal(x[0])),
        )


class ReplayMarket:
    """Replays recorded files at recorded pace times ``speed`` (0: as fast as possible)."""

    def __init__(self, hub: Hub, files: list[Path], speed: float = 1.0) -> None:
        self.hub = hub
        self.speed = speed
        self.finished = asyncio.Event()
        self.items: list[tuple[int, str, bytes]] = []
        self.books: dict[str, ReplayBook] = {}
        pending_snapshots: list[tuple[int, bytes]] = []
        symbols: list[str] = []
        for f in files:
            for rec in read_recording(f):
                if rec.is_snapshot:
                    pending_snapshots.append((len(self.items), rec.raw))
                    continue
                stream = rec.stream
                if stream is None:
                    continue
                sym = stream.split("@", 1)[0]
                if sym not in symbols:
                    symbols.append(sym)
                self.items.append((rec.recv_ns, stream, rec.raw))
        self.symbols = symbols
        self.streams = {stream for _ns, stream, _raw in self.items}
        # A bare snapshot line belongs to the file's (single) symbol.
        if pending_snapshots and len(symbols) == 1:
            book = self.books.setdefault(symbols[0], ReplayBook())
            for _pos, raw in pending_snapshots:
                book.set_snapshot(raw)
        for f in files:
            self._load_cryptofeed_snapshots(f)
        self.position = 0

    def _load_cryptofeed_snapshots(self, ws_file: Path) -> None:
        name = ws_file.name
        if ".ws." not in name:
            return
        http = ws_file.with_name(name.split(".ws.")[0] + ".http.0.0")
        if not http.exists():
            return
        for line in http.read_bytes().splitlines():
            url, sep, rest = line.partition(b" -> ")
            if not sep or b"symbol=" not in url:
                continue
            sym = url.split(b"symbol=")[1].split(b"&")[0].decode().lower()
            _ts, _, body = rest.partition(b": ")
            self.books.setdefault(sym, ReplayBook()).set_snapshot(body)

    def snapshot(self, symbol: str) -> Snapshot | None:
        book = self.books.get(symbol)
        return book.snapshot() if book else None

    async def run(self) -> None:
        await self.hub.started.wait()
        if not self.items:
            self.finished.set()
            return
        t0 = time.monotonic()
        first_ns = self.items[0][0]
        publish = self.hub.publish
        books = self.books
        for i, (recv_ns, stream, raw) in enumerate(self.items):
            if self.speed > 0:
                due = (recv_ns - first_ns) / 1e9 / self.speed
                ahead = due - (time.monotonic() - t0)
                if ahead > 0.001:
                    await asyncio.sleep(ahead)
            elif i % 256 == 0:
                await asyncio.sleep(0)
            if "@depth" in stream:
                book = books.get(stream.split("@", 1)[0])
                if book is not None:
                    book.pending.append(raw)
            publish(stream, raw)
            self.position = i + 1
        self.finished.set()
