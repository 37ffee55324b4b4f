"""Issue 11 item 3: whatever an entry id collides with, records reach the stream in receive order.

A MULTI/EXEC round is not all-or-nothing for runtime errors: an XADD refused for its id does not
stop the XADDs after it. These tests give the writer rounds whose explicit ids are stale (at or
below the stream's last id, as when the collector started while Redis was unreachable and its
clock is behind the stream) and compare the stream, read back from a real redis-server, with the
order the records were received in.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from conftest import RedisServer

from vps_brain.collect.spool import Batch, Entry, Spool
from vps_brain.collect.stats import CollectorStats
from vps_brain.collect.writer import RedisWriter
from vps_brain.frame import BatchEncoder, Kind, Record, decode_entry

KEY = "md:binance:ethusdt"
TOP = 1_000_000  # the stream's last id before the test: f"{TOP}-0", written by "someone earlier"
FOREIGN = {b"v": b"an entry of an earlier run"}


def entry(recv_ns: int, eid: str) -> Entry:
    """One entry of one record whose receive time is ``recv_ns`` (the order to keep)."""
    rec = Record(recv_ns, Kind.MESSAGE, b'{"n":%d}' % recv_ns)
    return Entry(eid.encode(), dict(BatchEncoder("none").encode([rec])))


async def stream_recv_order(r: aioredis.Redis) -> list[int]:
    """Receive times of the records in the stream, in stream order (the foreign entry left out)."""
    out: list[int] = []
    for _eid, fields in await r.xrange(KEY):
        if fields == FOREIGN:
            continue
        out.extend(rec.recv_ns for rec in decode_entry(fields))
    return out


async def run_writer(
    redis_server: RedisServer, tmp_path: Path, batches: list[Batch], expected: int
) -> list[int]:
    """Submit ``batches`` as one round; the stream's records once ``expected`` of them are in."""
    r = aioredis.Redis.from_url(redis_server.url)
    await r.xadd(KEY, FOREIGN, id=f"{TOP}-0")
    spool = Spool(tmp_path / "spool", 64 << 20, 1 << 20)
    writer = RedisWriter(r, spool, stats=CollectorStats())
    for b in batches:
        writer.queued_records += b.records
        writer.submit(b)
    task = asyncio.create_task(writer.run())
    try:
        got: list[int] = []
        deadline = asyncio.get_running_loop().time() + 10
        while len(got) < expected:
            assert asyncio.get_running_loop().time() < deadline, (
                f"only {len(got)} of {expected} records reached the stream: {got}"
            )
            await asyncio.sleep(0.02)
            got = await stream_recv_order(r)
        await asyncio.wait_for(writer.wait_idle(), 10)
        return await stream_recv_order(r)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await r.aclose()


async def test_a_stale_id_before_good_ones_does_not_put_its_record_after_them(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # Received 1, 2, 3; only the first id is at or below the stream's last id.
    batches = [
        Batch(KEY, [entry(1, f"{TOP - 5}-0")], 1),
        Batch(KEY, [entry(2, f"{TOP + 1}-0")], 1),
        Batch(KEY, [entry(3, f"{TOP + 2}-0")], 1),
    ]
    assert await run_writer(redis_server, tmp_path, batches, 3) == [1, 2, 3]


async def test_several_stale_ids_in_one_batch_and_later_rounds_keep_receive_order(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # Plain framing: one entry per record, the first three stale, the rest past the last id.
    ids = [f"{TOP - 3}-0", f"{TOP - 2}-0", f"{TOP - 1}-0", f"{TOP + 1}-0", f"{TOP + 1}-1"]
    batches = [
        Batch(KEY, [entry(i + 1, eid) for i, eid in enumerate(ids)], len(ids)),
        Batch(KEY, [entry(6, f"{TOP + 2}-0"), entry(7, f"{TOP + 3}-0")], 2),
    ]
    assert await run_writer(redis_server, tmp_path, batches, 7) == [1, 2, 3, 4, 5, 6, 7]


async def test_an_id_taken_by_a_different_entry_is_renumbered_not_taken_for_ours(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # The first entry's id is exactly the foreign entry's: same id, other fields, not ours.
    batches = [
        Batch(KEY, [entry(1, f"{TOP}-0")], 1),
        Batch(KEY, [entry(2, f"{TOP + 1}-0")], 1),
    ]
    assert await run_writer(redis_server, tmp_path, batches, 2) == [1, 2]


async def test_a_round_already_written_is_not_written_twice(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # A re-send after a lost reply: the first two entries are in Redis already, the third is new.
    r = aioredis.Redis.from_url(redis_server.url)
    first = [entry(1, f"{TOP + 1}-0"), entry(2, f"{TOP + 2}-0")]
    await r.xadd(KEY, FOREIGN, id=f"{TOP}-0")
    for e in first:
        await r.xadd(KEY, e.fields, id=e.id)  # type: ignore[arg-type]
    await r.aclose()
    batches = [Batch(KEY, [*first, entry(3, f"{TOP + 3}-0")], 3)]
    assert await run_writer_on_existing(redis_server, tmp_path, batches, 3) == [1, 2, 3]


async def run_writer_on_existing(
    redis_server: RedisServer, tmp_path: Path, batches: list[Batch], expected: int
) -> list[int]:
    """As :func:`run_writer`, on a stream the test filled itself."""
    r = aioredis.Redis.from_url(redis_server.url)
    spool = Spool(tmp_path / "spool", 64 << 20, 1 << 20)
    writer = RedisWriter(r, spool, stats=CollectorStats())
    await writer.seed_ids([KEY])
    for b in batches:
        writer.queued_records += b.records
        writer.submit(b)
    task = asyncio.create_task(writer.run())
    try:
        await asyncio.wait_for(writer.wait_idle(), 10)
        got = await stream_recv_order(r)
        assert len(got) == expected
        return got
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await r.aclose()


async def test_spooled_batches_with_stale_ids_drain_in_receive_order(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # A spool left by a run whose clock was behind the stream: drained before anything new.
    r = aioredis.Redis.from_url(redis_server.url)
    await r.xadd(KEY, FOREIGN, id=f"{TOP}-0")
    spool = Spool(tmp_path / "spool", 64 << 20, 1 << 20)
    spool.append(
        [
            Batch(KEY, [entry(1, f"{TOP - 2}-0"), entry(2, f"{TOP - 1}-0")], 2),
            Batch(KEY, [entry(3, f"{TOP + 1}-0")], 1),
            Batch(KEY, [entry(4, f"{TOP + 2}-0")], 1),
        ]
    )
    writer = RedisWriter(r, spool, stats=CollectorStats())
    await writer.seed_ids([KEY])
    writer.submit(Batch(KEY, [entry(5, f"{TOP + 3}-0")], 1))
    writer.queued_records += 1
    task = asyncio.create_task(writer.run())
    try:
        done = asyncio.ensure_future(writer.wait_idle())
        await asyncio.wait([done], timeout=10)
        got = await stream_recv_order(r)
        assert done.done(), f"the spool never drained; the stream holds {got}"
        assert got == [1, 2, 3, 4, 5]
        assert len(spool) == 0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await r.aclose()
