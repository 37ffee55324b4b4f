"""The disk spool: ordered, durable across restarts, torn tails cut, bounded, ids kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from vps_brain.collect.spool import ITEM, Batch, Entry, Spool, SpoolFull


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
        fh.write(ITEM.pack(500, 123) + b"partial")
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
