"""The Parquet store: round trip in stream order, crash recovery, disk errors, bad fields."""

from __future__ import annotations

import errno
import itertools
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow.dataset as ds
import pytest

from vps_brain.consume import store as store_mod
from vps_brain.consume.replay import iter_store, list_parts
from vps_brain.consume.store import ParquetStore, StoreError, StoreWriteError
from vps_brain.frame import Kind, Record
from vps_brain.recordings import read_recording

STREAM = "md:binance:ethusdt"


def recording(path: Path, limit: int) -> Iterator[Record]:
    for rec in itertools.islice(read_recording(path), limit):
        yield Record(rec.recv_ns, Kind.SNAPSHOT if rec.is_snapshot else Kind.MESSAGE, rec.raw)


def entries(records: list[Record], per_entry: int) -> Iterator[tuple[bytes, list[Record]]]:
    for i in range(0, len(records), per_entry):
        yield f"{1_700_000_000_000 + i}-{i % 3}".encode(), records[i : i + per_entry]


def test_store_round_trips_records_in_stream_order(tmp_path: Path, binance_data: Path) -> None:
    records = list(recording(binance_data / "spot_ethusdt_20240808.gz", 3000))
    with ParquetStore(tmp_path) as st:
        for eid, recs in entries(records, 7):
            st.add(STREAM, eid, recs)
        acks = st.flush()
    assert sum(len(v) for v in acks.values()) == (3000 + 6) // 7
    back = list(iter_store(tmp_path))
    assert [(r.recv_ns, r.kind, r.payload) for r in back] == [
        (r.recv_ns, int(r.kind), r.payload) for r in records
    ]
    channels = {p.channel for p in list_parts(tmp_path)}
    assert channels == {"trade", "depth", "bookTicker", "snapshot"}
    # One part per partition per flush, not one per entry.
    assert len(list_parts(tmp_path)) == 4


def test_parsed_columns_are_exact_strings_and_ids(tmp_path: Path, binance_data: Path) -> None:
    records = list(recording(binance_data / "spot_ethusdt_20240808.gz", 500))
    with ParquetStore(tmp_path) as st:
        for eid, recs in entries(records, 50):
            st.add(STREAM, eid, recs)
        st.flush()
    dataset = ds.dataset(tmp_path / "data", partitioning="hive")
    trades = dataset.to_table(filter=ds.field("channel") == "trade").to_pylist()
    first_trade = next(
        orjson.loads(r.payload)["data"] for r in records if b"@trade" in r.payload[:40]
    )
    row = trades[0]
    assert row["price"] == first_trade["p"] and row["qty"] == first_trade["q"]
    assert row["trade_id"] == first_trade["t"] and row["event_ms"] == first_trade["E"]
    assert row["side"] == ("sell" if first_trade["m"] else "buy")
    assert row["symbol"] == "ethusdt" and row["exchange"] == "binance"
    depth = dataset.to_table(filter=ds.field("channel") == "depth").to_pylist()
    assert all(r["first_update_id"] <= r["update_id"] for r in depth)
    tickers = dataset.to_table(filter=ds.field("channel") == "bookTicker").to_pylist()
    assert all(isinstance(r["bid_price"], str) and r["update_id"] for r in tickers)


def test_unexpected_field_types_do_not_break_a_flush(tmp_path: Path) -> None:
    odd = b'{"stream":"x@trade","data":{"E":"soon","t":1e30,"p":1.5,"q":"2","m":1}}'
    with ParquetStore(tmp_path) as st:
        st.add(STREAM, b"1-0", [Record(1, Kind.MESSAGE, odd), Record(2, Kind.MESSAGE, b"{")])
        st.add(STREAM, b"2-0", [Record(3, Kind.MESSAGE, b'{"stream":"x@../../y","data":{}}')])
        st.flush()
    back = list(iter_store(tmp_path))
    assert [r.payload for r in back] == [odd, b"{", b'{"stream":"x@../../y","data":{}}']
    assert [r.channel for r in back] == ["trade", "_invalid", "_invalid"]


def test_a_crash_before_the_checkpoint_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recs = [Record(10**18 + i, Kind.MESSAGE, b'{"stream":"s@trade","data":{}}') for i in range(3)]
    with ParquetStore(tmp_path) as st:
        st.add(STREAM, b"5-0", recs[:1])
        st.flush()

    class Crash(BaseException):
        pass

    def crash(*a: object) -> None:
        raise Crash

    st = ParquetStore(tmp_path)
    st.open()
    st.add(STREAM, b"6-0", recs[1:])
    monkeypatch.setattr(st, "_checkpoint_tmp", crash)
    with pytest.raises(Crash):
        st.flush()
    st.close()
    assert (tmp_path / "intent.json").exists()
    assert len(list_parts(tmp_path)) == 2  # the orphan part is on disk, uncommitted

    with ParquetStore(tmp_path) as st2:
        assert st2.committed == {STREAM: (5, 0)}
        assert not (tmp_path / "intent.json").exists()
        assert [r.entry_id for r in iter_store(tmp_path)] == [(5, 0)]
        st2.add(STREAM, b"6-0", recs[1:])
        st2.flush()
    assert [r.entry_id for r in iter_store(tmp_path)] == [(5, 0), (6, 0), (6, 0)]


def test_disk_full_keeps_the_batch_and_commits_it_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = store_mod.write_file
    full = True

    def write_file(path: Path, data: bytes | memoryview) -> None:
        if full and path.name.endswith(".parquet.tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(store_mod, "write_file", write_file)
    rec = Record(10**18, Kind.MESSAGE, b'{"stream":"s@trade","data":{}}')
    with ParquetStore(tmp_path) as st:
        st.add(STREAM, b"1-0", [rec])
        with pytest.raises(StoreWriteError) as info:
            st.flush()
        assert info.value.errno == errno.ENOSPC
        assert st.sealed and st.committed == {}
        st.add(STREAM, b"2-0", [rec])  # reading continues into a new buffer
        full = False
        acks = st.flush()
    assert acks == {STREAM: [b"1-0", b"2-0"]}
    assert [r.entry_id for r in iter_store(tmp_path)] == [(1, 0), (2, 0)]
    assert not list(tmp_path.rglob(".*.tmp"))


def test_the_store_refuses_a_second_writer(tmp_path: Path) -> None:
    with ParquetStore(tmp_path), pytest.raises(StoreError):
        ParquetStore(tmp_path).open()


def test_ids_must_increase(tmp_path: Path) -> None:
    with ParquetStore(tmp_path) as st:
        st.add(STREAM, b"5-1", [])
        with pytest.raises(ValueError):
            st.add(STREAM, b"5-0", [])


def test_replay_cli_prints_the_recording_format_and_checks_the_book(
    tmp_path: Path, binance_data: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    from vps_brain.cli import main

    records = list(recording(binance_data / "spot_ethusdt_20240808.gz", 12_000))
    with ParquetStore(tmp_path) as st:
        for eid, recs in entries(records, 100):
            st.add(STREAM, eid, recs)
        st.flush()
    assert main(["replay", "--store", str(tmp_path), "--symbol", "ethusdt"]) == 0
    out = capsysbinary.readouterr().out
    assert out.splitlines() == [b"%d %s" % (r.recv_ns, r.payload) for r in records]

    assert (
        main(["replay", "--store", str(tmp_path), "--channel", "trade", "--format", "jsonl"]) == 0
    )
    rows = [orjson.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
    assert rows and {r["channel"] for r in rows} == {"trade"}
    assert rows[0]["stream"] == STREAM and rows[0]["payload"].startswith(
        '{"stream":"ethusdt@trade"'
    )

    assert main(["replay", "--store", str(tmp_path), "--check-book", "ethusdt"]) == 0
    summary = capsysbinary.readouterr().out.decode()
    assert "0 mismatches" in summary and "0 gaps" in summary


def _files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "data").rglob("*.parquet"))


def test_compaction_merges_closed_days_without_changing_the_replay(
    tmp_path: Path, binance_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = list(recording(binance_data / "spot_ethusdt_20240808.gz", 5000))
    chunks = list(entries(records, 50))
    with ParquetStore(tmp_path) as st:
        for n, (eid, recs) in enumerate(chunks):
            st.add(STREAM, eid, recs)
            if n % 20 == 19:
                st.flush()  # five flushes: five parts per partition
        st.flush()
        before = [(r.entry_id, r.rec, r.payload) for r in iter_store(tmp_path)]
        assert len(_files(tmp_path)) == 3 * 5 + 1  # the snapshot partition has one part
        # A flush that crashed before its checkpoint leaves a part above it: never merged.
        st.add(STREAM, b"1800000000000-0", records[:3])

        class Crash(BaseException):
            pass

        def crash(*a: object) -> None:
            raise Crash

        monkeypatch.setattr(st, "_checkpoint_tmp", crash)
        with pytest.raises(Crash):
            st.flush()
        assert st.compact("2024-08-08") == 0  # today's partitions are left alone
        removed = st.compact("2024-08-09")
    assert removed == 3 * 5
    with ParquetStore(tmp_path):  # recovery drops the uncommitted part
        pass
    assert len(_files(tmp_path)) == 4
    assert [(r.entry_id, r.rec, r.payload) for r in iter_store(tmp_path)] == before


def test_an_interrupted_compaction_never_shows_a_record_twice(
    tmp_path: Path, binance_data: Path
) -> None:
    records = list(recording(binance_data / "spot_ethusdt_20240808.gz", 2000))
    with ParquetStore(tmp_path) as st:
        for n, (eid, recs) in enumerate(entries(records, 100)):
            st.add(STREAM, eid, recs)
            if n % 5 == 4:
                st.flush()
        st.flush()
        inputs = {p: p.read_bytes() for p in _files(tmp_path)}
        st.compact("2099-01-01")
        for p, data in inputs.items():  # as if it had died before deleting its inputs
            p.write_bytes(data)
        back = [(r.recv_ns, r.payload) for r in iter_store(tmp_path)]
        assert back == [(r.recv_ns, r.payload) for r in records]
        # The leftovers go now; the single snapshot part was never merged, it stays.
        assert st.compact("2099-01-01") == len(inputs) - 1
    assert len(_files(tmp_path)) == 4
