"""Live first after an outage (vps_brain.consume.catchup): a backlog on the VPS, the live feed
follows the newest entries while the group drains the backlog for the store, within its budget."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import redis
from conftest import RedisServer, make_redis
from test_consume import (
    STREAM,
    add_reader_user,
    delivered_all,
    expected,
    running,
    settings,
    stored,
    until,
)

from vps_brain.consume.catchup import ByteBudget, CatchUp
from vps_brain.consume.live import live_state
from vps_brain.consume.metrics import ConsumerMetrics
from vps_brain.consume.reader import Consumer
from vps_brain.frame import BatchEncoder, Kind, Record, parse_id


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_budget_pays_reads_after_they_are_made_and_never_bursts_past_a_second() -> None:
    clock = Clock()
    b = ByteBudget(1000, clock)
    assert b.wait_s() == 0
    b.spend(3000)  # one read of 3 s of budget: in debt
    assert b.wait_s() == 2.0
    clock.t = 2.0
    assert b.wait_s() == 0
    clock.t = 100.0  # idle for long: at most one second of tokens
    b.spend(1000)
    assert b.wait_s() == 0
    b.spend(500)
    assert b.wait_s() == 0.5
    assert ByteBudget(0, clock).wait_s() == 0  # no budget: no limit


def test_a_stream_catches_up_past_a_bound_and_is_live_again_at_the_head() -> None:
    c = CatchUp(max_entries=1000, max_s=10.0, head_entries=100)
    now = 1_000_000_000
    assert not c.update("s", 500, (now - 1000, 0), now)  # behind a little, recent: live
    assert c.update("s", 5000, (now - 1000, 0), now)  # many entries behind
    assert c.is_catching_up("s") and c.catching_up == ["s"]
    assert not c.update("s", 500, (now, 0), now)  # draining, not at the head yet
    assert c.update("s", 100, (now, 0), now)  # within one read of the head: live again
    assert not c.any
    assert c.update("t", 200, (now - 60_000, 0), now)  # few entries but a minute old
    assert c.streams["t"].behind_s == 60.0
    assert not c.update("u", 0, (now - 60_000, 0), now)  # an idle stream is not behind
    assert c.streams["u"].behind_s == 0.0


def _entry(enc: BatchEncoder, n: int) -> dict[Any, Any]:
    recs = [
        Record(time.time_ns(), Kind.MESSAGE, b'{"stream":"ethusdt@trade","data":{"t":%d}}' % i)
        for i in range(n * 10, n * 10 + 10)
    ]
    return dict(enc.encode(recs))


async def test_after_an_outage_the_live_feed_is_fresh_while_the_store_drains_the_backlog(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    enc = BatchEncoder()
    n = 0
    for _ in range(3000):  # the backlog of an outage
        r.xadd(STREAM, _entry(enc, n))
        n += 1
    backlog_end = parse_id(r.xrevrange(STREAM, count=1)[0][0])  # type: ignore[index]
    backlog_bytes = sum(
        len(v)
        for _, f in r.xrange(STREAM)  # type: ignore[union-attr]
        for v in f.values()
    )
    budget = backlog_bytes / 3  # about 3 s to drain
    local_gen = make_redis(tmp_path / "local")
    (tmp_path / "local").mkdir()
    local = next(local_gen)
    try:
        cfg = settings(
            tmp_path,
            live=True,
            live_redis_url=local.url,
            live_first_entries=500,
            read_count=100,
            catchup_budget_bytes_s=budget,
        )
        metrics = ConsumerMetrics()
        consumer = Consumer(cfg, add_reader_user(redis_server), metrics=metrics)
        live = local.client()
        states: list[str] = []

        async def produce() -> None:
            nonlocal n
            while True:
                r.xadd(STREAM, _entry(enc, n))
                n += 1
                await asyncio.sleep(0.02)

        def group_bytes() -> float:
            return float(metrics.read_bytes.labels("group")._value.get())

        producer = asyncio.create_task(produce())
        try:
            async with running(consumer):
                started = time.monotonic()
                await until(lambda: bool(live.xlen("live:" + STREAM)), 10)
                first_live = parse_id(
                    live.xrange("live:" + STREAM, count=1)[0][1][b"src"]  # type: ignore[index]
                )
                states.append((await live_state(local.url))[STREAM]["mode"])
                await until(lambda: not consumer.catchup.any, 30)
                drained_s = time.monotonic() - started
                drained_bytes = group_bytes()
                await asyncio.sleep(0.5)  # live again: the group's reads feed the live feed
                producer.cancel()
                await until(lambda: delivered_all(r), 20)
                await until(
                    lambda: consumer.publisher is not None and not consumer.publisher._queue
                )
                await asyncio.sleep(0.2)
                states.append((await live_state(local.url))[STREAM]["mode"])
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
        # Live first: the first entry strategies saw was written after the outage's backlog.
        assert first_live > backlog_end
        assert states == ["catching_up", "live"]
        # From then on the live feed has every entry, once, in order, across the tail's
        # handover to the group.
        src = [parse_id(f[b"src"]) for _, f in live.xrange("live:" + STREAM)]  # type: ignore[union-attr]
        all_ids = [parse_id(eid) for eid, _ in r.xrange(STREAM)]  # type: ignore[union-attr]
        assert src == [i for i in all_ids if i >= first_live]
        # The store has every record exactly once, in order.
        want = [
            rec
            for _, f in r.xrange(STREAM)  # type: ignore[union-attr]
            for rec in expected(consumer.decoder.decode(f))
        ]
        assert stored(tmp_path) == want
        # Catch-up kept to its budget: what the group read while catching up is at most the
        # budget over that time, plus the second of tokens it starts with and one read in debt,
        # and the unthrottled reads between the end of catch-up and this test seeing it (a read
        # or two on a loaded machine: 5% and one read more).
        one_read = backlog_bytes / 3000 * cfg.read_count
        assert drained_bytes <= budget * (drained_s + 1) * 1.05 + 2 * one_read
        assert metrics.catchup_throttled_seconds._value.get() > 0
        assert metrics.read_bytes.labels("tail")._value.get() > 0
    finally:
        with contextlib.suppress(StopIteration):
            next(local_gen)


async def test_without_a_live_feed_a_backlog_is_read_and_stored_as_before(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    r: redis.Redis = redis_server.client()
    enc = BatchEncoder()
    for i in range(1500):
        r.xadd(STREAM, _entry(enc, i))
    consumer = Consumer(settings(tmp_path, live_first_entries=100), add_reader_user(redis_server))
    async with running(consumer):
        await until(lambda: delivered_all(r), 30)
    assert consumer.tail.following == []  # no live feed: nothing to tail
    want = [rec for _, f in r.xrange(STREAM) for rec in expected(consumer.decoder.decode(f))]  # type: ignore[union-attr]
    assert stored(tmp_path) == want
