"""The store at scale: parts cut at hours, closed hours compacted, queries that touch one hour.

Entry ids are ms timestamps, so the tests choose them: many symbols, a flush every few minutes
of entry time, over several hours, without waiting for any clock.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow.dataset as ds
import pytest

from vps_brain.consume import store as store_mod
from vps_brain.consume.replay import iter_store
from vps_brain.consume.store import HOUR_MS, ParquetStore, part_hour, part_range
from vps_brain.frame import Kind, Record

T0 = 1_723_075_200_000  # 2024-08-08 00:00:00 UTC, in ms
SYMBOLS = [f"sym{i:02d}usdt" for i in range(8)]
ENTRY_EVERY_MS = 60_000
FLUSH_EVERY_MS = 13 * 60_000  # not a divisor of the hour: flushes straddle hour boundaries
HOURS = 3.5  # three closed hours and half of an open one


def message(symbol: str, channel: str, ms: int) -> bytes:
    data = {"E": ms, "T": ms, "t": ms, "p": "1.5", "q": "2", "m": True, "U": ms, "u": ms}
    return orjson.dumps({"stream": f"{symbol}@{channel}", "data": data})


def entry(symbol: str, ms: int) -> list[Record]:
    # recv_ns a little before the entry id, like a collector's receive time before its XADD.
    return [Record((ms - 1) * 1_000_000, Kind.MESSAGE, message(symbol, c, ms)) for c in CHANNELS]


CHANNELS = ("trade", "depth")


def timeline(hours: float = HOURS) -> Iterator[tuple[int, bool]]:
    """(entry ms, flush after it) for every entry time of the run."""
    end = T0 + int(hours * HOUR_MS)
    for ms in range(T0 + 1000, end, ENTRY_EVERY_MS):
        yield ms, (ms - T0) // FLUSH_EVERY_MS != (ms + ENTRY_EVERY_MS - T0) // FLUSH_EVERY_MS


def fill(st: ParquetStore, hours: float = HOURS) -> list[tuple[str, int, int, str]]:
    """Write the run; returns (stream, entry ms, rec, channel) of every record in stream order."""
    expected = []
    for ms, flush in timeline(hours):
        for s in SYMBOLS:
            stream = f"md:binance:{s}"
            st.add(stream, f"{ms}-0".encode(), entry(s, ms))
            expected.extend((stream, ms, i, c) for i, c in enumerate(CHANNELS))
        if flush:
            st.flush()
    st.flush()
    return expected


def files(root: Path) -> list[Path]:
    return sorted((root / "data").rglob("*.parquet"))


def per_partition_hour(root: Path) -> collections.Counter[tuple[str, int | None]]:
    count: collections.Counter[tuple[str, int | None]] = collections.Counter()
    for f in files(root):
        rng = part_range(f.name)
        assert rng is not None
        count[(str(f.parent), part_hour(*rng))] += 1
    return count


def open_files_of(root: Path, hour: int) -> int:
    return sum(n for (_, h), n in per_partition_hour(root).items() if h == hour)


def stored(root: Path) -> list[tuple[str, int, int, str]]:
    by_stream = sorted(iter_store(root), key=lambda r: r.stream)  # each stream in stream order
    return [(r.stream, r.entry_id[0], r.rec, r.channel) for r in by_stream]


def dataset_rows(
    root: Path | str, filter: ds.Expression | None = None
) -> list[tuple[str, str, int, int, int]]:
    """(symbol, channel, entry_ms, entry_seq, rec) of every row, read as a hive dataset."""
    source = f"{root}/data" if isinstance(root, str) else str(root / "data")
    t = ds.dataset(source, partitioning="hive").to_table(
        columns=["symbol", "channel", "entry_ms", "entry_seq", "rec"], filter=filter
    )
    return list(zip(*(t.column(c).to_pylist() for c in t.column_names), strict=True))


def test_a_flush_across_an_hour_boundary_writes_one_part_on_each_side(tmp_path: Path) -> None:
    with ParquetStore(tmp_path) as st:
        fill(st)
    flushes_per_hour = collections.Counter(
        ms // HOUR_MS for ms, flush in timeline() if flush
    )  # flush ends per hour; a flush across a boundary adds one part to the next hour
    counts = per_partition_hour(tmp_path)
    assert None not in {h for _, h in counts}  # no part spans two hours
    for (_, hour), n in counts.items():
        assert hour is not None
        assert n <= flushes_per_hour[hour] + 1
    partitions = {d for d, _ in counts}
    assert len(partitions) == len(SYMBOLS) * len(CHANNELS)
    # The bound of an open hour: ceil(3600 / 780 s) = 5 flushes, plus the one across its start.
    assert max(counts.values()) == -(-HOUR_MS // FLUSH_EVERY_MS) + 1


def test_closed_hours_compact_to_one_file_per_partition_hour_every_record_once(
    tmp_path: Path,
) -> None:
    with ParquetStore(tmp_path) as st:
        expected = fill(st)
        before = len(files(tmp_path))
        open_hour = (T0 + int(HOURS * HOUR_MS)) // HOUR_MS
        removed = st.compact_hours(open_hour * HOUR_MS)  # hours before the open one are closed
        after = len(files(tmp_path))
        assert removed == before - open_files_of(tmp_path, open_hour)
        counts = per_partition_hour(tmp_path)
        for (_, hour), n in counts.items():
            assert hour is not None
            if hour < open_hour:
                assert n == 1, (hour, n)
        partitions = len(SYMBOLS) * len(CHANNELS)
        open_files = sum(n for (_, h), n in counts.items() if h == open_hour)
        assert after == partitions * 3 + open_files
        assert removed == before - open_files  # every part of a closed hour went into a merge
        print(f"\nfiles before {before}, after closed-hours compaction {after}")
        # Through replay's reader: every record once, each stream in stream order.
        assert stored(tmp_path) == sorted(expected, key=lambda r: r[0])
        # Through pyarrow.dataset (hive): every record once.
        rows = dataset_rows(tmp_path)
        assert len(rows) == len(set(rows)) == len(expected)
        # Idempotent: nothing left to merge.
        assert st.compact_hours(open_hour * HOUR_MS) == 0
        # The daily pass still makes one file per partition-day out of the hours.
        st.compact("2024-08-09")
        assert len(files(tmp_path)) == partitions
        assert stored(tmp_path) == sorted(expected, key=lambda r: r[0])


def test_only_committed_parts_of_a_closed_hour_are_merged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ParquetStore(tmp_path) as st:
        expected = fill(st, hours=0.9)  # the checkpoint is in hour 0
        # A flush that crashed before its checkpoint leaves parts in hour 0, above it.
        ms = T0 + HOUR_MS - 2000
        for s in SYMBOLS:
            st.add(f"md:binance:{s}", f"{ms}-1".encode(), entry(s, ms))

        class Crash(BaseException):
            pass

        def crash(*a: object) -> None:
            raise Crash

        monkeypatch.setattr(st, "_checkpoint_tmp", crash)
        with pytest.raises(Crash):
            st.flush()
        assert st.compact_hours(T0 + HOUR_MS) > 0  # hour 0 is closed by the clock
        above = [f for f in files(tmp_path) if part_range(f.name)[0] == (ms, 1)]  # type: ignore[index]
        assert len(above) == len(SYMBOLS) * len(CHANNELS)  # left as they were
        assert len(files(tmp_path)) == 2 * len(above)  # beside one merged part per partition
    with ParquetStore(tmp_path):  # recovery drops the uncommitted parts
        pass
    assert stored(tmp_path) == sorted(expected, key=lambda r: r[0])


def test_a_crash_mid_compaction_recovers_without_a_duplicate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = ParquetStore(tmp_path)
    st.open()
    expected = fill(st, hours=2.5)
    real = store_mod.fsync_dir
    calls = 0

    class Crash(BaseException):
        pass

    def dies_after_a_few_merges(path: Path) -> None:
        nonlocal calls
        calls += 1
        if calls == 6:  # after a merged part's rename, before its inputs are deleted
            raise Crash
        real(path)

    monkeypatch.setattr(store_mod, "fsync_dir", dies_after_a_few_merges)
    with pytest.raises(Crash):
        st.compact_hours(T0 + 2 * HOUR_MS)
    monkeypatch.setattr(store_mod, "fsync_dir", real)
    st.close()
    merged_beside_inputs = [
        f for f in files(tmp_path) if any(o != f and _inside(o, f) for o in f.parent.iterdir())
    ]
    assert merged_beside_inputs  # the crash left a merged part and its inputs
    some_dir = files(tmp_path)[0].parent
    (some_dir / ".part-1-0_2-0.parquet.tmp").write_bytes(b"half a merge")
    # Replay's reader never sees a record twice, even before recovery.
    assert stored(tmp_path) == sorted(expected, key=lambda r: r[0])
    with ParquetStore(tmp_path) as st:  # open tidies the interrupted pass at once
        assert not st.compacting_path.exists()
        rows = dataset_rows(tmp_path)
        assert len(rows) == len(set(rows)) == len(expected)
        assert not list(some_dir.glob(".*.tmp"))
        st.compact_hours(T0 + 2 * HOUR_MS)  # and the next pass completes the merge
        for (_, hour), n in per_partition_hour(tmp_path).items():
            assert n == 1 or hour == T0 // HOUR_MS + 2
    assert stored(tmp_path) == sorted(expected, key=lambda r: r[0])


def _inside(small: Path, big: Path) -> bool:
    a, b = part_range(small.name), part_range(big.name)
    return a is not None and b is not None and b[0] <= a[0] and a[1] <= b[1]


def test_a_query_for_one_symbol_and_hour_touches_only_its_files(tmp_path: Path) -> None:
    with ParquetStore(tmp_path) as st:
        fill(st)
        st.compact_hours(T0 + 3 * HOUR_MS)
    dataset = ds.dataset(tmp_path / "data", partitioning="hive")
    hour = T0 + HOUR_MS  # the second hour, closed
    query = (
        (ds.field("symbol") == "sym05usdt")
        & (ds.field("entry_ms") >= hour)
        & (ds.field("entry_ms") < hour + HOUR_MS)
    )
    # Partition pruning (hive: symbol) first, then the files' entry_ms statistics.
    by_partition = list(dataset.get_fragments(filter=query))
    touched = [
        f
        for f in by_partition
        if f.subset(filter=query, schema=dataset.schema).num_row_groups > 0  # type: ignore[attr-defined]
    ]
    all_files = len(dataset.files)
    print(
        f"\nfiles in the store {all_files}; symbol partitions {len(by_partition)}; "
        f"files of the symbol-hour read {len(touched)}"
    )
    assert len(touched) == len(CHANNELS)  # one closed-hour file per channel
    for f in touched:
        assert "symbol=sym05usdt" in f.path
        assert part_hour(*part_range(Path(f.path).name)) == hour // HOUR_MS  # type: ignore[misc]
    rows = dataset.to_table(filter=query).num_rows
    assert rows == HOUR_MS // ENTRY_EVERY_MS * len(CHANNELS)


def test_the_consumer_schedules_the_hours_pass_after_each_hour_ends() -> None:
    from vps_brain.consume.reader import next_hours_pass

    h = 1_723_075_200.0  # an hour boundary, in s
    assert next_hours_pass(h + 10, 300) == h + 300  # the pass of the hour that just ended
    assert next_hours_pass(h + 301, 300) == h + 3600 + 300
    assert next_hours_pass(h - 1, 0) == h
    assert next_hours_pass(time.time(), 300) > time.time()


def test_a_pass_with_a_budget_stops_between_partitions_and_resumes(tmp_path: Path) -> None:
    with ParquetStore(tmp_path) as st:
        expected = fill(st, hours=2.5)
        calls = 0
        while True:  # budget 0: one partition per call, as between flushes in the consumer
            st.compact_hours(T0 + 2 * HOUR_MS, budget_s=0)
            calls += 1
            if not st.compaction_pending:
                break
        assert calls == len(SYMBOLS) * len(CHANNELS)
        for (_, hour), n in per_partition_hour(tmp_path).items():
            assert n == 1 or hour == T0 // HOUR_MS + 2
        assert st.compact_hours(T0 + 2 * HOUR_MS) == 0  # a full pass finds nothing left
    assert stored(tmp_path) == sorted(expected, key=lambda r: r[0])
