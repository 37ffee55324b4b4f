"""The disk spool: ordered, durable across restarts, torn tails cut, bounded, ids kept."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from vps_brain.collect.spool import (
    ITEM_V1,
    QUARANTINE_FILE,
    Batch,
    Entry,
    Spool,
    SpoolFull,
    item_head,
)


def batch(i: int, key: str = "md:binance:ethusdt") -> Batch:
    return Batch(key, [Entry(b"%d-0" % (1000 + i), {b"v": b"1", b"d": bytes([i % 256]) * i})], i)


def drain(spool: Spool, chunk: int = 1 << 20) -> list[Batch]:
    out: list[Batch] = []
    while len(spool):
        got, cursor = spool.read(chunk)
        spool.commit(cursor, len(got))
        out.extend(got)
    return out


def same(a: list[Batch], b: list[Batch]) -> bool:
    return [(x.key, x.entries, x.records) for x in a] == [(x.key, x.entries, x.records) for x in b]


def test_batches_come_back_in_order_with_ids_and_fields(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 30, 4096)  # small segments: several files
    batches = [batch(i) for i in range(1, 200)]
    for i in range(0, len(batches), 7):
        spool.append(batches[i : i + 7])
    assert len(list(tmp_path.glob("seg-*"))) > 1
    assert same(drain(spool, chunk=3000), batches)
    assert not list(tmp_path.glob("seg-*"))
    assert spool.size == 0


def test_spool_survives_a_restart_midway_through_the_drain(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 30, 8192)
    batches = [batch(i) for i in range(1, 100)]
    spool.append(batches)
    got, cursor = spool.read(2000)
    spool.commit(cursor, len(got))
    reopened = Spool(tmp_path, 1 << 30, 8192)
    assert len(reopened) == len(batches) - len(got)
    assert same(got + drain(reopened), batches)


def test_uncommitted_reads_are_read_again_after_a_crash(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 30, 1 << 20)
    spool.append([batch(i) for i in range(1, 10)])
    spool.read(1 << 20)  # sent, but the process died before commit
    assert same(drain(Spool(tmp_path, 1 << 30, 1 << 20)), [batch(i) for i in range(1, 10)])


def test_a_torn_tail_is_cut_and_the_rest_is_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 30, 1 << 20)
    spool.append([batch(i) for i in range(1, 6)])
    seg = next(tmp_path.glob("seg-*"))
    with seg.open("ab") as fh:  # a crash in the middle of an append
        body = batch(6).encode()
        fh.write(item_head(body) + body[:7])
    reopened = Spool(tmp_path, 1 << 30, 1 << 20)
    assert len(reopened) == 5
    assert same(drain(reopened), [batch(i) for i in range(1, 6)])


def test_full_spool_refuses_without_writing(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 2000, 1 << 20)
    spool.append([batch(100)])
    with pytest.raises(SpoolFull):
        spool.append([batch(200) for _ in range(20)])
    assert len(spool) == 1
    assert same(drain(spool), [batch(100)])


def test_appends_after_a_full_drain_start_a_new_segment(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 30, 1 << 20)
    spool.append([batch(1)])
    drain(spool)
    spool.append([batch(2)])
    assert same(drain(Spool(tmp_path, 1 << 30, 1 << 20)), [batch(2)])


def legacy_segment(path: Path, batches: list[Batch]) -> None:
    """A segment as format 1 wrote it: ``<u32 length><u32 crc>`` + body, no segment header."""
    path.write_bytes(
        b"".join(
            ITEM_V1.pack(len(b.encode()), zlib.crc32(b.encode())) + b.encode() for b in batches
        )
    )


def test_a_format_1_segment_is_drained_and_new_items_go_to_a_new_segment(tmp_path: Path) -> None:
    legacy_segment(tmp_path / "seg-000000000001.spool", [batch(i) for i in range(1, 8)])
    spool = Spool(tmp_path, 1 << 30, 1 << 20)
    assert len(spool) == 7
    spool.append([batch(8)])
    assert len(list(tmp_path.glob("seg-*"))) == 2  # format 1 is never appended to
    assert same(drain(Spool(tmp_path, 1 << 30, 1 << 20)), [batch(i) for i in range(1, 9)])


def test_a_format_1_crc_mismatch_quarantines_the_rest_of_that_segment_only(
    tmp_path: Path,
) -> None:
    seg = tmp_path / "seg-000000000001.spool"
    legacy_segment(seg, [batch(i) for i in range(1, 8)])
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x01
    seg.write_bytes(bytes(data))
    spool = Spool(tmp_path, 1 << 30, 1 << 20)
    spool.append([batch(8)])
    got = drain(spool)
    assert got[-1].entries == batch(8).entries  # the next segment is untouched
    kept = got[:-1]
    assert kept and same(kept, [batch(i) for i in range(1, len(kept) + 1)])
    quarantined = (tmp_path / QUARANTINE_FILE).read_bytes()
    assert quarantined.endswith(bytes(data[-100:]))  # kept, not cut off
