"""The live feed is best effort: a full, hung or refusing live Redis never stops the store.

Issue 11, item 1. The consumer publishes every entry to the Brain's local Redis (the live feed)
and stores it exactly once (the store). Here the live Redis is a real redis-server that is full
(``maxmemory 2mb``, ``noeviction``: every XADD answers OOM) or hung (SIGSTOPped: connections
are accepted by the kernel, nothing ever answers). In both cases every entry is stored once, in
order, and acknowledged, within a deadline that fails; the live errors are counted in the
consumer's registry and reported once per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
from conftest import RedisServer, make_redis
from test_consume import (
    add_reader_user,
    delivered_all,
    expected,
    produce,
    recording,
    settings,
    stored,
    trades,
)

from vps_brain.consume import live
from vps_brain.consume.metrics import ConsumerMetrics
from vps_brain.consume.reader import Consumer
from vps_brain.frame import BatchEncoder

STREAM = "md:binance:ethusdt"
LIVE_ERRORS = "vps_brain_consumer_live_errors_total"


@pytest.fixture
def live_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """The Brain's local Redis, full: ``maxmemory 2mb``, ``noeviction``, filled until OOM."""
    d = tmp_path / "live"
    d.mkdir()
    yield from make_redis(d, "--maxmemory", "2mb", "--maxmemory-policy", "noeviction")


def fill_until_oom(server: RedisServer) -> None:
    """Fill with ever smaller values until even a small XADD is refused (a large SET is refused
    for its own query buffer while small writes still fit)."""
    r = server.client()
    for size in (64 * 1024, 4096, 256, 16):
        for i in range(10_000):
            try:
                r.set(f"filler:{size}:{i}", b"\0" * size)
            except redis.exceptions.OutOfMemoryError:
                break
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        r.xadd("live:probe", {"a": "b"})


@contextlib.contextmanager
def stopped(server: RedisServer) -> Iterator[None]:
    """The server process stopped (SIGSTOP): the kernel still accepts connections; no answer."""
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


@contextlib.asynccontextmanager
async def running(
    consumer: Consumer, stop_limit_s: float = 10
) -> AsyncIterator[asyncio.Task[None]]:
    """The consumer as a task; leaving stops it, and the stop must end within ``stop_limit_s``
    (unless the body failed already: then its failure is the one reported)."""
    task = asyncio.create_task(consumer.run())
    failed = True
    try:
        yield task
        failed = False
    finally:
        consumer.stop()
        done, _ = await asyncio.wait({task}, timeout=stop_limit_s)
        if not done:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if not failed:
            assert done, f"the consumer did not stop within {stop_limit_s} s"
            task.result()


async def until_alive(
    task: asyncio.Task[None], cond: Callable[[], bool], limit_s: float = 20
) -> None:
    """Wait for ``cond`` with a deadline that fails; fail at once if the consumer ended."""
    deadline = time.monotonic() + limit_s
    while not cond():
        if task.done():
            exc = task.exception()
            raise AssertionError(f"the consumer stopped: {exc!r}") from exc
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {limit_s} s")
        await asyncio.sleep(0.02)


def acked(metrics: ConsumerMetrics) -> float:
    return metrics.registry.get_sample_value("vps_brain_consumer_acked_total") or 0.0


def live_errors(metrics: ConsumerMetrics) -> float:
    return metrics.registry.get_sample_value(LIVE_ERRORS) or 0.0


async def test_a_full_live_redis_does_not_stop_storing_or_acking(
    tmp_path: Path,
    redis_server: RedisServer,
    live_redis: RedisServer,
    binance_data: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fill_until_oom(live_redis)
    r = redis_server.client()
    records = recording(binance_data / "spot_ethusdt_20240808.gz", 6000)
    produce(r, records[:3000])
    metrics = ConsumerMetrics()
    cfg = settings(tmp_path, live=True, live_redis_url=live_redis.url)
    consumer = Consumer(cfg, add_reader_user(redis_server), metrics=metrics)
    caplog.set_level(logging.WARNING, logger="vps_brain")
    async with running(consumer) as task:
        await until_alive(task, lambda: delivered_all(r))
        produce(r, records[3000:])  # it keeps reading after the errors
        await until_alive(task, lambda: delivered_all(r))
        await until_alive(task, lambda: live_errors(metrics) >= 1)
    assert stored(tmp_path) == expected(records)  # every entry once, in order
    assert acked(metrics) == 600
    assert (metrics.registry.get_sample_value("vps_brain_consumer_duplicates_total") or 0) == 0
    reported = [x for x in caplog.records if "live feed" in x.getMessage()]
    assert reported, "the live errors were not logged"
    assert "OutOfMemoryError" in str(getattr(reported[0], "fields", {}).get("error"))


async def test_a_hung_live_redis_does_not_stop_storing(
    tmp_path: Path, redis_server: RedisServer, binance_data: Path
) -> None:
    (tmp_path / "live").mkdir()
    local_gen = make_redis(tmp_path / "live")
    local = next(local_gen)
    try:
        r = redis_server.client()
        records = recording(binance_data / "spot_ethusdt_20240808.gz", 3000)
        metrics = ConsumerMetrics()
        # 10 entries a read: 30 reads, each of which must not wait for the hung live Redis.
        cfg = settings(tmp_path, live=True, live_redis_url=local.url, read_count=10)
        consumer = Consumer(cfg, add_reader_user(redis_server), metrics=metrics)
        with stopped(local):
            produce(r, records[:1500])
            async with running(consumer) as task:
                await until_alive(task, lambda: delivered_all(r), limit_s=20)
                produce(r, records[1500:])
                await until_alive(task, lambda: delivered_all(r), limit_s=20)
                await until_alive(task, lambda: live_errors(metrics) >= 1, limit_s=20)
        assert stored(tmp_path) == expected(records)
        assert acked(metrics) == 300
    finally:
        with contextlib.suppress(StopIteration):
            next(local_gen)


async def test_the_live_feed_comes_back_after_its_redis_answers_again(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    (tmp_path / "live").mkdir()
    local_gen = make_redis(tmp_path / "live")
    local = next(local_gen)
    try:
        r = redis_server.client()
        metrics = ConsumerMetrics()
        cfg = settings(tmp_path, live=True, live_redis_url=local.url)
        consumer = Consumer(cfg, add_reader_user(redis_server), metrics=metrics)
        enc = BatchEncoder()
        async with running(consumer) as task:
            with stopped(local):
                r.xadd(STREAM, enc.encode(trades(1)))  # type: ignore[arg-type]
                await until_alive(task, lambda: delivered_all(r))
                await until_alive(task, lambda: live_errors(metrics) >= 1)
            last = r.xadd(STREAM, enc.encode(trades(2)[1:]))

            def published() -> bool:
                entries = local.client().xrevrange("live:" + STREAM, count=1)
                return bool(entries) and entries[0][1].get(b"src") == last  # type: ignore[index]

            await until_alive(task, published)
            await until_alive(task, lambda: delivered_all(r))
    finally:
        with contextlib.suppress(StopIteration):
            next(local_gen)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_live_failures_are_logged_once_per_interval_with_what_was_lost_since(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    report = live.LiveReport(interval_s=10, clock=clock)
    caplog.set_level(logging.INFO, logger="vps_brain")

    def lines() -> list[logging.LogRecord]:
        return [x for x in caplog.records if "live feed" in x.getMessage()]

    def fields(i: int) -> dict[str, object]:
        f: dict[str, object] = getattr(lines()[i], "fields")  # noqa: B009
        return f

    report.failed(RuntimeError("OOM one"), lost=5)
    assert len(lines()) == 1 and lines()[0].levelno == logging.WARNING
    assert fields(0)["lost_entries"] == 5 and "OOM one" in str(fields(0)["error"])
    for _ in range(100):  # within the interval: counted, not logged
        clock.now += 0.05
        report.failed(RuntimeError("OOM again"), lost=2)
    report.overflow(lost=7)
    assert len(lines()) == 1
    clock.now += 10
    report.failed(RuntimeError("OOM later"), lost=1)
    assert len(lines()) == 2
    assert fields(1)["errors_since_last_report"] == 101
    assert fields(1)["lost_entries"] == 100 * 2 + 7 + 1
    clock.now += 0.01
    report.ok()  # healthy again, but within the interval: said later
    assert len(lines()) == 2
    clock.now += 10
    report.ok()
    assert len(lines()) == 3 and lines()[2].levelno == logging.INFO
    assert "again" in lines()[2].getMessage()
    clock.now += 10
    report.ok()  # healthy, nothing lost since: nothing to say
    report.overflow(lost=3)  # slow, not failing: said at once (the interval has passed)
    assert len(lines()) == 4 and fields(3)["lost_entries"] == 3
    assert "behind" in lines()[3].getMessage()
    clock.now += 10
    report.failed(RuntimeError("refused"), lost=1)
    clock.now += 10
    report.overflow(lost=4)  # still failing: not a recovery
    assert len(lines()) == 6 and "behind" in lines()[5].getMessage()
    assert lines()[5].levelno == logging.WARNING


async def test_one_publish_to_a_hung_redis_is_bounded(tmp_path: Path) -> None:
    (tmp_path / "live").mkdir()
    local_gen = make_redis(tmp_path / "live")
    local = next(local_gen)
    try:
        pub = live.LivePublisher(local.url, socket_timeout_s=0.2, connect_timeout_s=0.2)
        with stopped(local):
            pub.offer([(STREAM, b"1-0", {b"v": b"1"})])
            await asyncio.wait_for(pub.idle(), 10)  # given up on, within the deadline
        assert pub.errors == 1
        pub.offer([(STREAM, b"2-0", {b"v": b"1"})])
        await asyncio.wait_for(pub.idle(), 10)
        assert pub.published == 1
        await asyncio.wait_for(pub.close(), 10)
    finally:
        with contextlib.suppress(StopIteration):
            next(local_gen)


async def test_a_long_outage_of_the_live_redis_does_not_end_the_publisher() -> None:
    """More consecutive failures than a float's exponent holds (the backoff's 2**n): the task
    keeps publishing, backing off at its cap, and comes back when the Redis does."""
    from conftest import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: refused at once
    pub = live.LivePublisher(url, retry_min_s=1e-6, retry_max_s=1e-6)
    for i in range(1030):  # one pipeline each; 2**1024 does not fit a float
        pub.offer([(STREAM, f"{i + 1}-0".encode(), {b"v": b"1"})])
    await asyncio.wait_for(pub.idle(), 30)
    assert pub.errors == 1030 and pub.lost == 1030
    await asyncio.wait_for(pub.close(), 10)
