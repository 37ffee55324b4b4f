"""Order books rebuilt on the Brain from the stored (or live) record log.

Prices and quantities are :class:`~decimal.Decimal` (never float) and the price levels are kept in
numerically sorted lists, so ``"10.0" > "9.5"`` holds as it should. The synchronisation follows
Binance's local order book procedure (shared/BINANCE.md):

* diffs that arrive before a snapshot are buffered (bounded) and replayed onto it;
* diffs with ``u <= lastUpdateId`` are stale and ignored;
* the first applied diff must straddle ``lastUpdateId + 1`` (futures: ``U <= lastUpdateId + 1``,
  or its ``pu`` is ``lastUpdateId``), every later one must continue the previous by the venue's
  rule (:class:`vps_brain.venues.SequenceRule`: spot ``U == previous u + 1``, futures
  ``pu == previous u``); anything else is a gap: the book is dropped until the next snapshot;
* a GAP marker written by the collector drops the book the same way.

:func:`check_against_tickers` is the oracle used by the tests and ``vps-brain replay --check-book``:
after a diff whose final id is ``u`` has been applied, the best bid/ask must equal the bookTicker
carrying exactly that ``u``.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import Any

import orjson

from vps_brain.venues import SequenceRule

# Record kinds of the wire format (docs/frame-format.md); kept as plain ints so this module only
# depends on the payloads, not on how they were transported.
KIND_MESSAGE = 1
KIND_SNAPSHOT = 2
KIND_GAP = 3

Level = tuple[Decimal, Decimal]
PriceLevels = Iterable[Sequence[str]]

_ZERO = Decimal(0)


class OrderBook:
    """Bids and asks of one symbol: ``price -> quantity`` plus a sorted price index per side."""

    __slots__ = ("_ask_px", "_bid_px", "asks", "bids", "update_id")

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self._bid_px: list[Decimal] = []  # ascending; best bid is the last
        self._ask_px: list[Decimal] = []  # ascending; best ask is the first
        self.update_id = 0

    def load(self, last_update_id: int, bids: PriceLevels, asks: PriceLevels) -> None:
        """Replace the whole book with a REST snapshot."""
        self.bids = {Decimal(p): Decimal(q) for p, q in bids}
        self.asks = {Decimal(p): Decimal(q) for p, q in asks}
        self.bids = {p: q for p, q in self.bids.items() if q != _ZERO}
        self.asks = {p: q for p, q in self.asks.items() if q != _ZERO}
        self._bid_px = sorted(self.bids)
        self._ask_px = sorted(self.asks)
        self.update_id = last_update_id

    def update(self, update_id: int, bids: PriceLevels, asks: PriceLevels) -> None:
        """Apply one diff's levels (quantity ``0`` removes a level); no sequence checks here."""
        _apply_side(self.bids, self._bid_px, bids)
        _apply_side(self.asks, self._ask_px, asks)
        self.update_id = update_id

    def best_bid(self) -> Level | None:
        if not self._bid_px:
            return None
        p = self._bid_px[-1]
        return p, self.bids[p]

    def best_ask(self) -> Level | None:
        if not self._ask_px:
            return None
        p = self._ask_px[0]
        return p, self.asks[p]

    def depth(self, n: int = 10) -> tuple[list[Level], list[Level]]:
        """The best ``n`` levels per side, best first."""
        bids = [(p, self.bids[p]) for p in reversed(self._bid_px[-n:])] if n else []
        asks = [(p, self.asks[p]) for p in self._ask_px[:n]]
        return bids, asks

    def __len__(self) -> int:
        return len(self._bid_px) + len(self._ask_px)


def _apply_side(book: dict[Decimal, Decimal], index: list[Decimal], levels: PriceLevels) -> None:
    for p_s, q_s in levels:
        p = Decimal(p_s)
        q = Decimal(q_s)
        if q == _ZERO:
            if book.pop(p, None) is not None:
                del index[bisect.bisect_left(index, p)]
        else:
            if p not in book:
                bisect.insort(index, p)
            book[p] = q


class DiffResult(Enum):
    APPLIED = "applied"
    STALE = "stale"  # u <= the book's id: already contained in the snapshot
    BUFFERED = "buffered"  # no snapshot yet: kept for replay onto the next one
    GAP = "gap"  # continuity broken: book dropped, waiting for a snapshot


@dataclass
class Diff:
    first_id: int  # U
    final_id: int  # u
    bids: list[list[str]]
    asks: list[list[str]]
    prev_id: int | None = None  # pu (futures): the previous event's u


@dataclass
class SyncedBook:
    """A book kept in sync by the Binance procedure; ``live`` is False until a snapshot fits."""

    symbol: str
    max_buffer: int = 10_000
    rule: SequenceRule = SequenceRule.SPOT
    book: OrderBook = field(default_factory=OrderBook)
    live: bool = False
    gaps: int = 0
    resyncs: int = 0
    _buffer: deque[Diff] = field(default_factory=deque)
    #: True from a snapshot until the first diff applied onto it
    _fresh: bool = False

    def on_gap_marker(self) -> None:
        """The collector saw a break: forget the book, buffer diffs until the next snapshot."""
        if self.live:
            self.gaps += 1
        self.live = False
        self._buffer.clear()

    def on_snapshot(self, last_update_id: int, bids: PriceLevels, asks: PriceLevels) -> list[int]:
        """Load a snapshot and replay the buffered diffs onto it; returns the applied ``u`` ids."""
        self.book.load(last_update_id, bids, asks)
        self.live = True
        self._fresh = True
        self.resyncs += 1
        applied: list[int] = []
        buffered, self._buffer = self._buffer, deque()
        for d in buffered:
            result = self.on_diff(d)
            if result is DiffResult.APPLIED:
                applied.append(d.final_id)
            elif result is DiffResult.GAP:
                # The snapshot is older than the buffered diffs: wait for a newer snapshot, keeping
                # the diffs that may still fit it.
                self._buffer = deque(x for x in buffered if x.final_id >= d.final_id)
                break
        return applied

    def on_diff(self, d: Diff) -> DiffResult:
        if not self.live:
            if len(self._buffer) >= self.max_buffer:
                self._buffer.popleft()  # the gap this leaves is caught by the continuity check
            self._buffer.append(d)
            return DiffResult.BUFFERED
        book_id = self.book.update_id
        if d.final_id <= book_id:
            return DiffResult.STALE
        if self.rule is SequenceRule.FUTURES:
            continues = d.prev_id == book_id or (self._fresh and d.first_id <= book_id + 1)
        else:
            continues = d.first_id <= book_id + 1
        if not continues:
            self.gaps += 1
            self.live = False
            self._buffer.clear()
            self._buffer.append(d)
            return DiffResult.GAP
        self.book.update(d.final_id, d.bids, d.asks)
        self._fresh = False
        return DiffResult.APPLIED


def parse_diff(data: dict[str, Any]) -> Diff:
    """A Binance ``depthUpdate`` event (the ``data`` of the combined-stream envelope)."""
    pu = data.get("pu")
    return Diff(
        int(data["U"]), int(data["u"]), data["b"], data["a"], None if pu is None else int(pu)
    )


@dataclass
class OracleResult:
    """Outcome of comparing a rebuilt book with the exchange's own bookTicker."""

    diffs_applied: int = 0
    compared: int = 0
    mismatches: int = 0
    examples: list[str] = field(default_factory=list)
    gaps: int = 0

    @property
    def ok(self) -> bool:
        return self.mismatches == 0


TopOfBook = tuple[Decimal, Decimal, Decimal, Decimal]


def check_against_tickers(
    records: Iterable[tuple[int, bytes]], symbol: str, rule: SequenceRule = SequenceRule.SPOT
) -> OracleResult:
    """Rebuild ``symbol``'s book from ``(kind, payload)`` records in log order and compare.

    ``rule`` is the venue's sequence rule (``VENUES[...].sequence``).

    A bookTicker is compared only when its ``u`` equals the final ``u`` of an applied diff (tickers
    and diffs interleave out of order, so both sides are collected and matched at the end); a
    ticker whose ``u`` lies strictly inside a diff's ``U..u`` shows an intermediate state and is
    not comparable.
    """
    sym = symbol.lower()
    sb = SyncedBook(sym, rule=rule)
    tops: dict[int, TopOfBook] = {}
    tickers: dict[int, TopOfBook] = {}
    result = OracleResult()

    def record_top(u: int) -> None:
        bid, ask = sb.book.best_bid(), sb.book.best_ask()
        if bid is not None and ask is not None:
            tops[u] = (bid[0], bid[1], ask[0], ask[1])

    for kind, payload in records:
        if kind == KIND_MESSAGE:
            env = orjson.loads(payload)
            stream: str = env.get("stream", "")
            if not stream.startswith(sym + "@"):
                continue
            channel = stream.split("@", 2)[1]
            data = env["data"]
            if channel == "depth":
                if sb.on_diff(parse_diff(data)) is DiffResult.APPLIED:
                    result.diffs_applied += 1
                    record_top(int(data["u"]))
            elif channel == "bookTicker":
                tickers[int(data["u"])] = (
                    Decimal(data["b"]),
                    Decimal(data["B"]),
                    Decimal(data["a"]),
                    Decimal(data["A"]),
                )
        elif kind == KIND_SNAPSHOT:
            snap = orjson.loads(payload)
            for u in sb.on_snapshot(int(snap["lastUpdateId"]), snap["bids"], snap["asks"]):
                result.diffs_applied += 1
                record_top(u)
        elif kind == KIND_GAP:
            info = orjson.loads(payload)
            if str(info.get("symbol", sym)).lower() == sym:
                sb.on_gap_marker()
    result.gaps = sb.gaps
    for u, ticker in sorted(tickers.items()):
        top = tops.get(u)
        if top is None:
            continue
        result.compared += 1
        if top != ticker:
            result.mismatches += 1
            if len(result.examples) < 10:
                result.examples.append(f"u={u}: book {top} != bookTicker {ticker}")
    return result
