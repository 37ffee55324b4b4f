"""Closed parts copied to a pyarrow filesystem URI and read back: the interface S3 uses, on disk.

``file://`` goes through pyarrow.fs exactly as ``s3://`` does (FileSystem.from_uri, selectors,
streams, move); only the filesystem behind it differs. No S3 server is run here (docs/scaling.md).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
import pytest
from test_store_hours import HOUR_MS, HOURS, T0, dataset_rows, fill

from vps_brain.cli import main
from vps_brain.consume.archive import archive
from vps_brain.consume.replay import iter_store
from vps_brain.consume.store import ParquetStore

OPEN_HOUR_MS = (T0 + int(HOURS * HOUR_MS)) // HOUR_MS * HOUR_MS


def records(root: Path | str) -> list[tuple[str, tuple[int, int], int, str, bytes]]:
    return [(r.stream, r.entry_id, r.rec, r.channel, r.payload) for r in iter_store(root)]


def test_closed_hours_then_the_closed_day_are_archived_and_read_back_equal(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    store = tmp_path / "store"
    uri = f"file://{tmp_path}/archive"
    with ParquetStore(store) as st:
        fill(st)
        st.compact_hours(OPEN_HOUR_MS)
    # The day is still open: only the closed hours' single parts go.
    first = archive(store, uri, before_day="2024-08-08", hours_before_ms=OPEN_HOUR_MS)
    partitions = 8 * 2
    assert (first.copied, first.present, first.removed) == (3 * partitions, 0, 0)
    again = archive(store, uri, before_day="2024-08-08", hours_before_ms=OPEN_HOUR_MS)
    assert (again.copied, again.present) == (0, 3 * partitions)  # idempotent
    closed = [r for r in records(store) if r[1][0] < OPEN_HOUR_MS]
    assert records(uri) == closed  # replay through the URI
    local = dataset_rows(store, filter=ds.field("entry_ms") < OPEN_HOUR_MS)
    assert sorted(dataset_rows(uri)) == sorted(local)  # hive partitioning, same columns

    # The daily pass merges the day; the next run copies it and drops the hours it covers.
    with ParquetStore(store) as st:
        st.compact("2024-08-09")
    day = archive(store, uri, before_day="2024-08-09", hours_before_ms=OPEN_HOUR_MS)
    assert (day.copied, day.removed) == (partitions, 3 * partitions)
    assert len(list((tmp_path / "archive").rglob("*.parquet"))) == partitions
    assert records(uri) == records(store)
    assert sorted(dataset_rows(uri)) == sorted(dataset_rows(store))
    archived = ds.dataset(f"{tmp_path}/archive/data", partitioning="hive")
    assert archived.schema.names[-4:] == ["exchange", "channel", "symbol", "date"]

    # vps-brain replay reads the archive by its URI.
    assert main(["replay", "--uri", uri, "--symbol", "sym01usdt"]) == 0
    lines = capsysbinary.readouterr().out.splitlines()
    assert len(lines) == sum(1 for r in records(store) if r[0] == "md:binance:sym01usdt")


def test_an_interrupted_or_truncated_copy_is_redone(tmp_path: Path) -> None:
    store = tmp_path / "store"
    uri = f"file://{tmp_path}/archive"
    with ParquetStore(store) as st:
        fill(st, hours=1.5)
        st.compact_hours(T0 + HOUR_MS)
    assert archive(store, uri, before_day="2024-08-08", hours_before_ms=T0 + HOUR_MS).copied == 16
    copies = sorted((tmp_path / "archive").rglob("*.parquet"))
    copies[0].write_bytes(copies[0].read_bytes()[:100])  # a copy cut short
    tmp = copies[1].with_name(f".{copies[1].name}.tmp")
    tmp.write_bytes(b"half a copy")  # a copy that died before its move
    redo = archive(store, uri, before_day="2024-08-08", hours_before_ms=T0 + HOUR_MS)
    assert (redo.copied, redo.present) == (1, 15)
    assert not tmp.exists()
    assert sorted(dataset_rows(uri)) == sorted(
        dataset_rows(store, filter=ds.field("entry_ms") < T0 + HOUR_MS)
    )


def test_uncommitted_and_open_hour_parts_are_not_archived(tmp_path: Path) -> None:
    store = tmp_path / "store"
    uri = f"file://{tmp_path}/archive"
    with ParquetStore(store) as st:
        fill(st, hours=1.5)  # hour 0 not compacted yet: several parts, left alone
    result = archive(store, uri, before_day="2024-08-08", hours_before_ms=T0 + HOUR_MS)
    assert result.copied == 0
    assert not list((tmp_path / "archive").rglob("*.parquet"))


def test_archive_uri_must_be_a_uri() -> None:
    from vps_brain.config import ConsumerSettings

    assert ConsumerSettings(archive_uri="s3://md/brain?endpoint_override=rgw:7480").archive_uri
    with pytest.raises(ValueError, match="archive_uri"):
        ConsumerSettings(archive_uri="/srv/md")
