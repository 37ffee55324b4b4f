"""A damaged spool keeps every intact item: corrupt ones are quarantined, only a torn tail is cut.

The batches are real: Binance ETHUSDT messages from the shared recordings, encoded as the
collector encodes them. Corruption is a single flipped bit, placed by looking for the bytes of one
batch in the segment file (so the tests do not depend on where the framing puts them).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from conftest import RedisServer
from harness import wait_until

from vps_brain.collect.spool import Batch, Entry, Spool
from vps_brain.collect.stats import CollectorStats
from vps_brain.collect.writer import RedisWriter
from vps_brain.frame import BatchEncoder, Kind, Record, decode_entry, stream_key
from vps_brain.recordings import read_recording

KEY = stream_key("binance", "ethusdt")
PER_BATCH = 40


def recorded_batches(data: Path, n: int) -> list[Batch]:
    """``n`` batches of ``PER_BATCH`` recorded messages, ids 1000-0, 1001-0, ..."""
    enc = BatchEncoder("zstd")
    recs = (
        Record(r.recv_ns, Kind.MESSAGE, r.raw)
        for r in read_recording(data / "spot_ethusdt_20240808.gz")
        if not r.is_snapshot
    )
    out = []
    for i in range(n):
        chunk = list(itertools.islice(recs, PER_BATCH))
        assert len(chunk) == PER_BATCH, "recording too short"
        out.append(Batch(KEY, [Entry(b"%d-0" % (1000 + i), enc.encode(chunk))], len(chunk)))
    return out


def drain(spool: Spool) -> list[Batch]:
    out: list[Batch] = []
    for _ in range(10_000):  # a bound: a spool that never empties fails instead of hanging
        if not len(spool):
            return out
        got, cursor = spool.read(64 * 1024)
        spool.commit(cursor, len(got))
        out.extend(got)
    raise AssertionError(f"the spool did not empty: {len(spool)} items left")


def ids(batches: list[Batch]) -> list[bytes]:
    return [e.id for b in batches for e in b.entries]


def same(a: list[Batch], b: list[Batch]) -> bool:
    return [(x.key, x.entries, x.records) for x in a] == [(x.key, x.entries, x.records) for x in b]


def flip_bit_inside(seg: Path, batch: Batch) -> int:
    """Flip one bit in the middle of ``batch``'s payload in ``seg``; returns the file offset."""
    data = bytearray(seg.read_bytes())
    blob = batch.entries[0].fields[b"d"]
    at = data.find(blob)
    assert at > 0 and data.find(blob, at + 1) < 0, "payload not found exactly once"
    pos = at + len(blob) // 2
    data[pos] ^= 0x10
    seg.write_bytes(bytes(data))
    return pos


def quarantine_records(spool_dir: Path) -> Iterator[tuple[dict[str, object], bytes]]:
    """(gap record, raw bytes) pairs of the quarantine file."""
    with (spool_dir / "quarantine.bin").open("rb") as fh:
        while line := fh.readline():
            gap = json.loads(line)
            yield gap, fh.read(int(gap["length"]))


@pytest.fixture
def batches(binance_data: Path) -> list[Batch]:
    return recorded_batches(binance_data, 40)


def fill(spool: Spool, batches: list[Batch]) -> Path:
    for i in range(0, len(batches), 5):
        spool.append(batches[i : i + 5])
    segs = list(spool.dir.glob("seg-*.spool"))
    assert len(segs) == 1
    return segs[0]


def test_a_flipped_bit_mid_segment_loses_only_that_item(
    tmp_path: Path, batches: list[Batch]
) -> None:
    seg = fill(Spool(tmp_path, 1 << 30, 64 << 20), batches)
    flip_bit_inside(seg, batches[20])
    reopened = Spool(tmp_path, 1 << 30, 64 << 20)  # recovery after a restart
    got = drain(reopened)
    assert ids(got) == ids(batches[:20] + batches[21:])
    assert same(got, batches[:20] + batches[21:])
    # and the intact batches decode to the recorded messages
    assert sum(len(decode_entry(b.entries[0].fields)) for b in got) == 39 * PER_BATCH


def test_the_corrupt_item_is_quarantined_with_a_gap_record_and_a_metric(
    tmp_path: Path, batches: list[Batch]
) -> None:
    seg = fill(Spool(tmp_path, 1 << 30, 64 << 20), batches)
    raw = seg.read_bytes()
    pos = flip_bit_inside(seg, batches[7])
    bad = seg.read_bytes()
    stats = CollectorStats()
    spool = Spool(tmp_path, 1 << 30, 64 << 20, stats=stats)
    assert same(drain(spool), batches[:7] + batches[8:])
    [(gap, data)] = list(quarantine_records(tmp_path))
    start = int(str(gap["offset"]))
    assert start <= pos < start + len(data)
    assert data == bad[start : start + len(data)]  # the damaged bytes, kept as they were
    blob = batches[7].entries[0].fields[b"d"]
    assert start < raw.find(blob) < raw.find(blob) + len(blob) <= start + len(data)  # whole item
    assert gap["segment"] == 1 and gap["reason"] == "body_crc"
    # an unverified decode, for the operator: which stream lost which entries
    assert (gap["key"], gap["first_id"], gap["last_id"]) == (KEY, "1007-0", "1007-0")
    assert gap["records"] == PER_BATCH
    get = stats.registry.get_sample_value
    assert get("vps_brain_collector_spool_quarantined_total") == 1
    assert get("vps_brain_collector_spool_quarantined_bytes_total") == len(data)


def test_a_torn_tail_is_truncated_and_not_quarantined(tmp_path: Path, batches: list[Batch]) -> None:
    spool = Spool(tmp_path, 1 << 30, 64 << 20)
    seg = fill(spool, batches[:10])
    intact = seg.stat().st_size
    spool.append([batches[10]])
    whole = seg.read_bytes()
    for cut in (intact + 3, intact + 14, (intact + len(whole)) // 2, len(whole) - 1):
        seg.write_bytes(whole[:cut])  # a crash in the middle of the append
        reopened = Spool(tmp_path, 1 << 30, 64 << 20)
        assert seg.stat().st_size == intact, cut
        assert len(reopened) == 10
    assert not (tmp_path / "quarantine.bin").exists()
    reopened.append([batches[11]])
    assert same(drain(Spool(tmp_path, 1 << 30, 64 << 20)), [*batches[:10], batches[11]])


def test_a_damaged_item_header_is_skipped_by_resynchronising(
    tmp_path: Path, batches: list[Batch]
) -> None:
    from vps_brain.collect.spool import SYNC

    seg = fill(Spool(tmp_path, 1 << 30, 64 << 20), batches)
    data = bytearray(seg.read_bytes())
    at = data.find(batches[12].entries[0].fields[b"d"])
    head = data.rfind(SYNC, 0, at)
    data[head + 5] ^= 0x01  # the length field of batch 12
    seg.write_bytes(bytes(data))
    stats = CollectorStats()
    assert same(drain(Spool(tmp_path, 1 << 30, 64 << 20, stats=stats)), batches[:12] + batches[13:])
    [(gap, _)] = list(quarantine_records(tmp_path))
    assert gap["reason"] == "header" and gap["offset"] == head
    assert stats.registry.get_sample_value("vps_brain_collector_spool_quarantined_total") == 1


async def test_a_corrupt_item_met_while_draining_is_quarantined_and_draining_continues(
    tmp_path: Path, batches: list[Batch], redis_server: RedisServer
) -> None:
    stats = CollectorStats()
    spool = Spool(tmp_path / "spool", 1 << 30, 64 << 20)
    seg = fill(spool, batches)
    flip_bit_inside(seg, batches[30])  # after the spool was opened: met only by the drain
    r = aioredis.from_url(redis_server.url)
    writer = RedisWriter(r, spool, stats=stats)
    task = asyncio.create_task(writer.run())
    try:
        await wait_until(lambda: len(spool) == 0 or task.done(), 20, "the spool drained")
        assert not task.done(), task
        entries = await r.xrange(KEY)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await r.aclose()
    assert [eid for eid, _ in entries] == ids(batches[:30] + batches[31:])
    [(gap, _)] = list(quarantine_records(tmp_path / "spool"))
    assert (gap["reason"], gap["first_id"]) == ("body_crc", "1030-0")
