"""The Brain's order book: numeric sorting, Binance sync rules, and the bookTicker oracle."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import orjson

from vps_brain import recordings
from vps_brain.frame import Kind
from vps_brain.orderbook import (
    Diff,
    DiffResult,
    OrderBook,
    SyncedBook,
    check_against_tickers,
)


def read_recording(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(kind, payload)`` of a recording (bare REST bodies are snapshots)."""
    for rec in recordings.read_recording(path):
        yield int(Kind.SNAPSHOT if rec.is_snapshot else Kind.MESSAGE), rec.raw


def test_prices_sort_numerically_not_as_strings() -> None:
    book = OrderBook()
    book.load(1, [["9.5", "1"], ["10.0", "2"], ["100", "3"]], [["101", "1"], ["99.9", "1"]])
    assert book.best_bid() == (Decimal("100"), Decimal("3"))
    assert book.best_ask() == (Decimal("99.9"), Decimal("1"))
    book.update(2, [["100.00000000", "0.00000000"]], [["99.90", "0"]])
    assert book.best_bid() == (Decimal("10.0"), Decimal("2"))
    assert book.best_ask() == (Decimal("101"), Decimal("1"))
    bids, asks = book.depth(5)
    assert [p for p, _ in asks] == [Decimal("101")]
    assert [p for p, _ in bids] == [Decimal("10.0"), Decimal("9.5")]
    assert len(book) == 3


def test_diffs_before_the_snapshot_are_buffered_and_replayed() -> None:
    sb = SyncedBook("x")
    assert sb.on_diff(Diff(5, 7, [["1", "1"]], [])) is DiffResult.BUFFERED
    assert sb.on_diff(Diff(8, 9, [["2", "1"]], [])) is DiffResult.BUFFERED
    applied = sb.on_snapshot(7, [["1", "1"]], [["3", "1"]])
    assert applied == [9]
    assert sb.live and sb.book.update_id == 9
    assert sb.book.best_bid() == (Decimal(2), Decimal(1))
    assert sb.on_diff(Diff(9, 9, [], [])) is DiffResult.STALE


def test_a_break_in_update_ids_drops_the_book_until_a_new_snapshot() -> None:
    sb = SyncedBook("x")
    sb.on_snapshot(10, [["1", "1"]], [["2", "1"]])
    assert sb.on_diff(Diff(11, 12, [], [])) is DiffResult.APPLIED
    assert sb.on_diff(Diff(14, 15, [], [])) is DiffResult.GAP
    assert not sb.live and sb.gaps == 1
    assert sb.on_diff(Diff(16, 17, [], [])) is DiffResult.BUFFERED
    assert sb.on_snapshot(16, [["1", "1"]], [["2", "1"]]) == [17]
    assert sb.live


def test_a_gap_marker_drops_the_book() -> None:
    sb = SyncedBook("x")
    sb.on_snapshot(10, [["1", "1"]], [["2", "1"]])
    sb.on_gap_marker()
    assert not sb.live
    assert sb.on_diff(Diff(11, 12, [], [])) is DiffResult.BUFFERED


def test_a_snapshot_older_than_the_buffered_diffs_waits_for_the_next_one() -> None:
    sb = SyncedBook("x")
    sb.on_diff(Diff(20, 25, [], []))
    assert sb.on_snapshot(10, [["1", "1"]], [["2", "1"]]) == []
    assert not sb.live
    assert sb.on_snapshot(22, [["1", "1"]], [["2", "1"]]) == [25]
    assert sb.live


def test_rebuilt_book_matches_every_comparable_bookticker_in_the_real_recordings(
    binance_data: Path,
) -> None:
    def records() -> Iterator[tuple[int, bytes]]:
        yield from read_recording(binance_data / "spot_ethusdt_20240808.gz")
        yield from read_recording(binance_data / "spot_ethusdt_20240809.gz")

    result = check_against_tickers(records(), "ETHUSDT")
    assert result.mismatches == 0, result.examples
    assert result.gaps == 0
    assert result.diffs_applied > 6000
    assert result.compared > 1000


def test_oracle_notices_a_wrong_book(binance_data: Path) -> None:
    def records() -> Iterator[tuple[int, bytes]]:
        for kind, payload in read_recording(binance_data / "spot_ethusdt_20240808.gz"):
            if kind == Kind.SNAPSHOT:
                snap = orjson.loads(payload)
                snap["bids"].insert(0, ["2683.805", "1"])  # a phantom best bid
                payload = orjson.dumps(snap)
            yield kind, payload

    result = check_against_tickers(records(), "ethusdt")
    assert result.mismatches > 0
