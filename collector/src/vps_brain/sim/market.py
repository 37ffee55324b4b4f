"""Market data sources of the simulator: a generated evolving book, or a replay of recordings.

A market publishes combined-stream envelopes (bytes, exactly what goes on the wire) to a
:class:`Hub`, which fans them out to the subscribed connections. All connections see one timeline,
so two overlapping connections receive the same ids (what a renewal relies on). Markets start
when the first connection subscribes, so a test that connects late still sees every message.

Both markets answer REST depth snapshots consistent with the stream they publish.

Event shapes follow the venue (:class:`Shapes`, one per entry of
:data:`vps_brain.venues.VENUES`), field for field in the order Binance sends them (the recordings
in shared/data/binance): spot as it always was (its bytes and its random sequence are fixed);
futures diffs carry ``E``, ``T`` and ``pu`` (the previous event's ``u``; COIN-M adds ``ps``), their
update ids advance by more than one (as the real ones do, so only ``pu`` chains them), trades carry
``X`` and no ``M``, bookTickers carry ``e``, ``T`` and ``E``, snapshots ``E`` and ``T`` (COIN-M also
``symbol`` and ``pair``). Generated mode makes the venue's streams of diff depth (every speed
gets the same diffs), ``trade``, ``aggTrade`` (one aggregate per trade, ``f == l ==`` the trade
id), ``bookTicker`` and, on futures, ``markPrice`` and ``markPrice@1s`` (one ``markPriceUpdate``
a second). The venue's other channels (partial depth ``depth5``..., ``kline_*``, ``forceOrder``)
are accepted and never send anything, like a quiet market's.

Rates of the generated market are the same for every symbol unless ``rate_skew`` is set: then the
symbol of rank ``k`` (its place in ``symbols``, from 1) gets ``1 / k ** rate_skew`` of the traffic
(Zipf; :func:`skewed_rates`), normalised so that the market's total of each channel stays
``len(symbols) x`` the per-symbol rate; ``max_depth_rate`` caps each symbol's depth events and
spreads the excess over the others. A skewed market schedules each (symbol, channel) on a heap
of due times, so a quiet symbol costs only its own events (:meth:`GeneratedMarket.run`).

Invariant of the generated book (the oracle of shared/data/binance/README.md): after the diff
whose ``u`` equals a bookTicker's ``u``, the best bid/ask and their quantities equal the ticker's.
The first diff after a snapshot either contains its ``lastUpdateId`` (``U <= lastUpdateId <= u``)
or follows it (spot: ``U == lastUpdateId + 1``; futures: ``pu == lastUpdateId``).
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import orjson

from vps_brain.recordings import read_recording
from vps_brain.venues import DEFAULT_VENUE, SequenceRule, Venue

if TYPE_CHECKING:
    from vps_brain.config import SimulatorSettings

_FUNDING_MS = 8 * 3600 * 1000


def _px(ticks: int) -> str:
    return f"{ticks // 100}.{ticks % 100:02d}000000"


def _qty(lots: int) -> str:
    return f"{lots // 10000}.{lots % 10000:04d}0000"


def _px2(ticks: int) -> str:
    return f"{ticks // 100}.{ticks % 100:02d}"


def _qty3(lots: int) -> str:
    return f"{lots // 1000}.{lots % 1000:03d}"


@dataclass(frozen=True, slots=True)
class Shapes:
    """How one venue writes its events and snapshots (what differs from spot)."""

    venue: str
    #: Diffs, trades and tickers carry ``T`` (and diffs ``pu``); snapshots carry ``E`` and ``T``.
    futures: bool
    #: COIN-M: ``ps`` in diffs and tickers, ``symbol`` and ``pair`` in snapshots.
    pair: bool
    #: The REST depth limit when the request names none.
    default_limit: int
    price: Callable[[int], str]
    quantity: Callable[[int], str]


#: Event shapes per venue name; a venue added to VENUES needs its entry here.
SHAPES: dict[str, Shapes] = {
    "spot": Shapes("spot", futures=False, pair=False, default_limit=100, price=_px, quantity=_qty),
    "usdm": Shapes("usdm", futures=True, pair=False, default_limit=500, price=_px2, quantity=_qty3),
    "coinm": Shapes("coinm", futures=True, pair=True, default_limit=500, price=_px2, quantity=str),
}


def shapes_of(venue: Venue) -> Shapes:
    try:
        shapes = SHAPES[venue.name]
    except KeyError:
        raise ValueError(f"the simulator has no event shapes for venue {venue.name!r}") from None
    if shapes.futures != (venue.sequence is SequenceRule.FUTURES):
        raise ValueError(f"event shapes of {venue.name!r} disagree with its sequence rule")
    return shapes


def pair_of(symbol: str) -> str:
    """COIN-M's pair of a contract symbol: ``ETHUSD`` for ``ethusd_perp``."""
    return symbol.upper().split("_", 1)[0]


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
    """A REST depth answer; the optional fields are written only when set (futures, COIN-M)."""

    last_update_id: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]
    #: Futures: message time and transaction time (ms).
    event_ms: int | None = None
    transact_ms: int | None = None
    #: COIN-M: the contract (``ETHUSD_PERP``) and its pair (``ETHUSD``).
    symbol: str | None = None
    pair: str | None = None

    def body(self, limit: int) -> bytes:
        out: dict[str, object] = {"lastUpdateId": self.last_update_id}
        if self.event_ms is not None:
            out["E"] = self.event_ms
        if self.transact_ms is not None:
            out["T"] = self.transact_ms
        if self.symbol is not None:
            out["symbol"] = self.symbol
        if self.pair is not None:
            out["pair"] = self.pair
        out["bids"] = [list(x) for x in self.bids[:limit]]
        out["asks"] = [list(x) for x in self.asks[:limit]]
        return orjson.dumps(out)


class Market(Protocol):
    symbols: list[str]
    finished: asyncio.Event

    async def run(self) -> None: ...

    def snapshot(self, symbol: str) -> Snapshot | None: ...


# --------------------------------------------------------------------------------- generated


class GeneratedBook:
    """A consistent evolving book for one symbol with update ids and trade ids."""

    def __init__(
        self, symbol: str, levels: int, rng: random.Random, shapes: Shapes = SHAPES["spot"]
    ) -> None:
        self.symbol = symbol
        self.upper = symbol.upper().encode()
        self.pair = pair_of(symbol).encode()
        self.shapes = shapes
        self.px = shapes.price
        self.qty = shapes.quantity
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
        self.last_u = self.update_id  # u of the previous depth event (futures' pu)
        self.trade_id = 5_000_000
        self.agg_id = 3_000_000
        self.last_trade = (0, b"", b"", False, 0)  # id, price, quantity, maker, ms
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
        # Futures ids are shared with other books: they advance by more than one.
        self.update_id += rng.randint(1, 9) if self.shapes.futures else 1
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
        pu, self.last_u = self.last_u, self.update_id
        self.event_ms = max(self.event_ms, int(time.time() * 1000))
        px, qty = self.px, self.qty
        b = ",".join(f'["{px(p)}","{qty(q)}"]' for p, q in self.changes_b.items()).encode()
        a = ",".join(f'["{px(p)}","{qty(q)}"]' for p, q in self.changes_a.items()).encode()
        self.changes_b.clear()
        self.changes_a.clear()
        if self.shapes.futures:
            return (
                b'{"e":"depthUpdate","E":%d,"T":%d,"s":"%s"%s,"U":%d,"u":%d,"pu":%d,'
                b'"b":[%s],"a":[%s]}'
                % (
                    self.event_ms,
                    self.event_ms,
                    self.upper,
                    self._ps(),
                    first,
                    self.update_id,
                    pu,
                    b,
                    a,
                )
            )
        return b'{"e":"depthUpdate","E":%d,"s":"%s","U":%d,"u":%d,"b":[%s],"a":[%s]}' % (
            self.event_ms,
            self.upper,
            first,
            self.update_id,
            b,
            a,
        )

    def _ps(self) -> bytes:
        return b',"ps":"%s"' % self.pair if self.shapes.pair else b""

    def trade_event(self) -> bytes:
        self.trade_id += 1
        self.agg_id += 1
        bid, _, ask, _ = self.best()
        maker = self.rng.random() < 0.5
        px = self.px(bid if maker else ask).encode()
        now = int(time.time() * 1000)
        qty = self.qty(self.rng.randint(1, 20_000)).encode()
        self.last_trade = (self.trade_id, px, qty, maker, now)
        m = b"true" if maker else b"false"
        if self.shapes.futures:
            return (
                b'{"e":"trade","E":%d,"T":%d,"s":"%s","t":%d,"p":"%s","q":"%s",'
                b'"X":"MARKET","m":%s}' % (now, now, self.upper, self.trade_id, px, qty, m)
            )
        return b'{"e":"trade","E":%d,"s":"%s","t":%d,"p":"%s","q":"%s","T":%d,"m":%s,"M":true}' % (
            now,
            self.upper,
            self.trade_id,
            px,
            qty,
            now,
            m,
        )

    def agg_trade_event(self) -> bytes:
        """The aggregate of the last trade alone (``f == l ==`` its id); ``a`` runs on by one."""
        tid, px, qty, maker, now = self.last_trade
        m = b"true" if maker else b"false"
        if self.shapes.pair:  # COIN-M writes "a" before "s"
            return (
                b'{"e":"aggTrade","E":%d,"a":%d,"s":"%s","p":"%s","q":"%s","f":%d,"l":%d,'
                b'"T":%d,"m":%s}' % (now, self.agg_id, self.upper, px, qty, tid, tid, now, m)
            )
        tail = b"" if self.shapes.futures else b',"M":true'
        return (
            b'{"e":"aggTrade","E":%d,"s":"%s","a":%d,"p":"%s","q":"%s","f":%d,"l":%d,'
            b'"T":%d,"m":%s%s}' % (now, self.upper, self.agg_id, px, qty, tid, tid, now, m, tail)
        )

    def ticker_event(self) -> bytes:
        """A change of the best level (its own update id) and the bookTicker showing it."""
        self._update(at_best=True)
        b, bq, a, aq = self.best()
        px, qty = self.px, self.qty
        levels = (px(b).encode(), qty(bq).encode(), px(a).encode(), qty(aq).encode())
        if self.shapes.futures:
            now = int(time.time() * 1000)
            head = (
                b'{"u":%d,"e":"bookTicker","s":"%s"%s' % (self.update_id, self.upper, self._ps())
                if self.shapes.pair  # COIN-M writes "u" first
                else b'{"e":"bookTicker","u":%d,"s":"%s"' % (self.update_id, self.upper)
            )
            return head + b',"b":"%s","B":"%s","a":"%s","A":"%s","T":%d,"E":%d}' % (
                *levels,
                now,
                now,
            )
        return b'{"u":%d,"s":"%s","b":"%s","B":"%s","a":"%s","A":"%s"}' % (
            self.update_id,
            self.upper,
            *levels,
        )

    def mark_price_event(self) -> bytes:
        """A ``markPriceUpdate`` at the mid (mark = index = settle estimate), funding 0.01 %."""
        half_ticks = self.bb + self.ba  # the mid in units of 0.005
        mid = f"{half_ticks // 200}.{half_ticks % 200 * 5:03d}00000".encode()
        now = int(time.time() * 1000)
        funding = (now // _FUNDING_MS + 1) * _FUNDING_MS
        if self.shapes.pair:  # COIN-M writes the settle estimate before the index
            return (
                b'{"e":"markPriceUpdate","E":%d,"s":"%s","p":"%s","P":"%s","i":"%s",'
                b'"r":"0.00010000","T":%d}' % (now, self.upper, mid, mid, mid, funding)
            )
        return (
            b'{"e":"markPriceUpdate","E":%d,"s":"%s","p":"%s","i":"%s","P":"%s",'
            b'"r":"0.00010000","T":%d}' % (now, self.upper, mid, mid, mid, funding)
        )

    def snapshot(self) -> Snapshot:
        px, qty = self.px, self.qty
        bids = [(px(p), qty(q)) for p, q in sorted(self.bids.items(), reverse=True)]
        asks = [(px(p), qty(q)) for p, q in sorted(self.asks.items())]
        if not self.shapes.futures:
            return Snapshot(self.update_id, bids, asks)
        pair = self.shapes.pair
        return Snapshot(
            self.update_id,
            bids,
            asks,
            event_ms=max(self.event_ms, int(time.time() * 1000)),
            transact_ms=self.event_ms,
            symbol=self.upper.decode() if pair else None,
            pair=self.pair.decode() if pair else None,
        )


#: The order depth speeds are published in (spot's as it always was).
def _depth_order(channel: str) -> bool:
    return channel != "depth@100ms"


def zipf_weights(n: int, s: float) -> list[float]:
    """Weights of ranks 1..n proportional to ``1 / k ** s``, normalised to a mean of 1.

    ``s = 0`` gives ``[1.0] * n`` exactly (the uniform market).
    """
    if n <= 0:
        return []
    if s == 0:
        return [1.0] * n
    raw = [k**-s for k in range(1, n + 1)]
    scale = n / sum(raw)
    return [w * scale for w in raw]


def skewed_rates(n: int, rate: float, s: float, cap: float = 0.0) -> list[float]:
    """Per-symbol rates of a market of ``n`` symbols whose mean is ``rate``, Zipf exponent ``s``.

    The total stays ``n * rate``. With ``cap > 0`` no symbol exceeds ``cap``: the hottest are set
    to it and what they lose is shared by the others in proportion to their weights (water
    filling), so the total is kept as long as ``cap >= rate``.
    """
    weights = zipf_weights(n, s)
    rates = [rate * w for w in weights]
    if cap <= 0 or not rates or rates[0] <= cap:
        return rates
    left, weight_left = rate * n, float(sum(weights))
    out: list[float] = []
    for i, w in enumerate(weights):  # weights fall with the rank: the capped ones come first
        share = left * w / weight_left
        if share <= cap:
            return out + [left * x / weight_left for x in weights[i:]]
        out.append(cap)
        left -= cap
        weight_left -= w
    return out


class GeneratedMarket:
    """Evolving books for several symbols at configured per-symbol rates.

    Rate-driven channels (``depth``, ``trade``, ``bookTicker``, futures' ``markPrice`` at one a
    second) each make one change of the book per event; the other streams of a channel group
    (every depth speed, ``aggTrade`` from ``trade``) are rendered from the same change.

    ``rate_skew`` (Zipf exponent, 0 = uniform) and ``max_depth_rate`` (0 = no cap) shape the
    rates of ``depth``, ``trade`` and ``bookTicker`` across the symbols (:func:`skewed_rates`,
    in the order of ``symbols``); ``markPrice`` stays one a second for every symbol, as on
    Binance. :attr:`symbol_rates` holds the result.
    """

    TICK_S = 0.002
    MARK_PRICE_RATE = 1.0

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
        venue: Venue = DEFAULT_VENUE,
        *,
        # how the traffic is spread over the symbols
        rate_skew: float = 0.0,
        max_depth_rate: float = 0.0,
    ) -> None:
        if rate_skew < 0 or max_depth_rate < 0:
            raise ValueError("rate_skew and max_depth_rate must not be negative")
        if max_depth_rate and max_depth_rate < depth_rate:
            raise ValueError("max_depth_rate must not be below depth_rate (the mean)")
        self.hub = hub
        self.symbols = symbols
        self.venue = venue
        self.rate_skew = rate_skew
        self.max_depth_rate = max_depth_rate
        shapes = shapes_of(venue)
        #: channel group (the base before "@") -> the venue's channels of it, in publish order
        self.groups: dict[str, tuple[str, ...]] = {}
        for ch in sorted(venue.channels, key=_depth_order):
            base = ch.split("@", 1)[0]
            self.groups[base] = (*self.groups.get(base, ()), ch)
        self.rates = {"depth": depth_rate, "trade": trade_rate, "bookTicker": ticker_rate}
        if "markPrice" in self.groups:
            self.rates["markPrice"] = self.MARK_PRICE_RATE
        n = len(symbols)
        per_channel = {
            ch: (
                [rate] * n
                if ch == "markPrice"
                else skewed_rates(n, rate, rate_skew, max_depth_rate if ch == "depth" else 0.0)
            )
            for ch, rate in self.rates.items()
        }
        #: symbol -> rate-driven channel -> events per second
        self.symbol_rates: dict[str, dict[str, float]] = {
            sym: {ch: rates[i] for ch, rates in per_channel.items()}
            for i, sym in enumerate(symbols)
        }
        self.uniform = all(len(set(rates)) <= 1 for rates in per_channel.values())
        self.max_messages = max_messages
        self.seed = seed
        rng = random.Random(seed)
        self.books = {
            s: GeneratedBook(s, levels, random.Random(rng.random()), shapes) for s in symbols
        }
        self.finished = asyncio.Event()
        self.produced = 0

    @classmethod
    def from_settings(
        cls, hub: Hub, settings: SimulatorSettings, venue: Venue = DEFAULT_VENUE
    ) -> GeneratedMarket:
        """The generated market that ``settings`` describe."""
        return cls(
            hub,
            settings.symbols,
            settings.depth_rate,
            settings.trade_rate,
            settings.ticker_rate,
            settings.max_messages,
            settings.book_levels,
            settings.seed,
            venue=venue,
            rate_skew=settings.rate_skew,
            max_depth_rate=settings.max_depth_rate,
        )

    def snapshot(self, symbol: str) -> Snapshot | None:
        book = self.books.get(symbol)
        return book.snapshot() if book else None

    async def run(self) -> None:
        """Publish until ``max_messages`` per symbol (or forever).

        A uniform market makes every symbol's event of a channel together, as it always did (its
        random sequence is fixed). A skewed one keeps a heap of the next due time of each
        (symbol, channel): each event costs one heap step, and a quiet symbol only its own
        events, whatever the number of symbols.
        """
        if self.uniform:
            await self._run_uniform()
        else:
            await self._run_skewed()

    async def _run_skewed(self) -> None:
        await self.hub.started.wait()
        hub = self.hub
        subscribers = hub.subscribers
        published = hub.published
        makers = self._MAKERS
        extras = self._EXTRAS
        streams = self._streams()
        max_messages = self.max_messages
        per_symbol: dict[str, int] = dict.fromkeys(self.symbols, 0)
        # One slot per (symbol, channel) with a rate; its k-th event is due at (k - phase) / rate
        # (a random phase, so that symbols of equal rates do not all fire at once).
        phase_rng = random.Random(self.seed)
        slots: list[tuple[str, GeneratedBook, str, float, float]] = []
        heap: list[tuple[float, int]] = []
        for sym, book in self.books.items():
            for ch, rate in self.symbol_rates[sym].items():
                if rate > 0:
                    phase = phase_rng.random()
                    heap.append(((1 - phase) / rate, len(slots)))
                    slots.append((sym, book, ch, rate, phase))
        heapq.heapify(heap)
        counts = [0] * len(slots)

        def out(names: tuple[str, ...], data: bytes) -> None:
            for stream in names:
                if subscribers.get(stream):
                    hub.publish(stream, envelope(stream, data))
                else:
                    published[stream] = published.get(stream, 0) + 1

        t0 = time.monotonic()
        while heap:
            now = time.monotonic() - t0
            while heap and heap[0][0] <= now:
                slot = heap[0][1]
                sym, book, ch, rate, phase = slots[slot]
                if max_messages and per_symbol[sym] >= max_messages:
                    heapq.heappop(heap)
                    continue
                per_symbol[sym] += 1
                self.produced += 1
                k = counts[slot] = counts[slot] + 1
                heapq.heapreplace(heap, ((k + 1 - phase) / rate, slot))
                names = streams[sym]
                out(names.get(ch, ()), makers[ch](book))
                for group, render in extras.get(ch, ()):
                    extra = names.get(group, ())
                    if extra:
                        listened = any(subscribers.get(s) for s in extra)
                        out(extra, render(book) if listened else b"")
            await asyncio.sleep(self.TICK_S)
        if max_messages:
            self.finished.set()
            return
        await asyncio.Event().wait()  # no channel has a rate: a silent market, forever

    #: How each rate-driven channel group makes its event from one change of the book.
    _MAKERS: ClassVar[dict[str, Callable[[GeneratedBook], bytes]]] = {
        "depth": GeneratedBook.depth_event,
        "trade": GeneratedBook.trade_event,
        "bookTicker": GeneratedBook.ticker_event,
        "markPrice": GeneratedBook.mark_price_event,
    }
    #: Streams rendered from a rate-driven channel's change, only when someone listens.
    _EXTRAS: ClassVar[dict[str, tuple[tuple[str, Callable[[GeneratedBook], bytes]], ...]]] = {
        "trade": (("aggTrade", GeneratedBook.agg_trade_event),)
    }

    def _streams(self) -> dict[str, dict[str, tuple[str, ...]]]:
        """symbol -> channel group -> the stream names it is published on."""
        return {
            s: {group: tuple(f"{s}@{c}" for c in chans) for group, chans in self.groups.items()}
            for s in self.symbols
        }

    async def _run_uniform(self) -> None:
        await self.hub.started.wait()
        t0 = time.monotonic()
        done = dict.fromkeys(self.rates, 0.0)
        hub = self.hub
        subscribers = hub.subscribers
        published = hub.published
        per_symbol: dict[str, int] = dict.fromkeys(self.symbols, 0)
        makers = self._MAKERS
        extras = self._EXTRAS
        streams = self._streams()

        def out(names: tuple[str, ...], data: bytes) -> None:
            for stream in names:
                if subscribers.get(stream):
                    hub.publish(stream, envelope(stream, data))
                else:
                    published[stream] = published.get(stream, 0) + 1

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
                    names = streams[sym]
                    out(names.get(ch, ()), makers[ch](book))
                    for group, render in extras.get(ch, ()):
                        extra = names.get(group, ())
                        if extra:
                            listened = any(subscribers.get(s) for s in extra)
                            out(extra, render(book) if listened else b"")
            if self.max_messages and all(v >= self.max_messages for v in per_symbol.values()):
                self.finished.set()
                return
            await asyncio.sleep(self.TICK_S)


# ------------------------------------------------------------------------------------ replay


class ReplayBook:
    """The book of a replayed symbol: the recorded snapshot plus every diff published since.

    Futures snapshots also carry ``E`` and ``T``: those of the last diff applied, else the
    recorded snapshot's; COIN-M's ``symbol`` and ``pair`` are the recorded snapshot's.
    """

    def __init__(self) -> None:
        self.base: tuple[int, dict[str, str], dict[str, str]] | None = None
        self.pending: list[bytes] = []  # published diff payloads not yet applied
        self.times: tuple[int, int] | None = None  # (E, T) of the state in base
        self.names: dict[str, str] = {}  # the recorded snapshot's symbol and pair

    def set_snapshot(self, raw: bytes) -> None:
        if self.base is not None:
            return  # keep the first: later diffs are applied onto it
        snap = orjson.loads(raw)
        self.base = (
            int(snap["lastUpdateId"]),
            {p: q for p, q in snap["bids"]},
            {p: q for p, q in snap["asks"]},
        )
        if "E" in snap:
            self.times = (int(snap["E"]), int(snap.get("T", snap["E"])))
        self.names = {k: str(snap[k]) for k in ("symbol", "pair") if k in snap}

    def snapshot(self, shapes: Shapes = SHAPES["spot"], symbol: str = "") -> Snapshot | None:
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
            if "E" in d:
                self.times = (int(d["E"]), int(d.get("T", d["E"])))
        self.pending.clear()
        self.base = (last, bids, asks)
        snap = Snapshot(
            last,
            sorted(bids.items(), key=lambda x: Decimal(x[0]), reverse=True),
            sorted(asks.items(), key=lambda x: Decimal(x[0])),
        )
        if shapes.futures:
            now = time.time_ns() // 1_000_000
            snap.event_ms, snap.transact_ms = self.times or (now, now)
        if shapes.pair:
            snap.symbol = self.names.get("symbol", symbol.upper())
            snap.pair = self.names.get("pair", pair_of(symbol))
        return snap


class ReplayMarket:
    """Replays recorded files at recorded pace times ``speed`` (0: as fast as possible)."""

    def __init__(
        self, hub: Hub, files: list[Path], speed: float = 1.0, venue: Venue = DEFAULT_VENUE
    ) -> None:
        self.hub = hub
        self.speed = speed
        self.venue = venue
        self.shapes = shapes_of(venue)
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
        return book.snapshot(self.shapes, symbol) if book else None

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
