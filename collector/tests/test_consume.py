"""The consumer against a real redis-server: frame encode -> Redis stream -> consumer -> store."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
from conftest import RedisServer, make_redis

from vps_brain.config import ConsumerSettings, RedisSettings
from vps_brain.consume import store as store_mod
from vps_brain.consume.live import live_records
from vps_brain.consume.metrics import ConsumerMetrics
from vps_brain.consume.reader import READER_ACL, Consumer
from vps_brain.consume.replay import iter_store
from vps_brain.consume.store import ParquetStore
from vps_brain.frame import BatchEncoder, Kind, Record, encode_plain
from vps_brain.recordings import read_recording

STREAM = "md:binance:ethusdt"
GROUP = "brain"


def recording(path: Path, limit: int) -> list[Record]:
    return [
        Record(rec.recv_ns, Kind.SNAPSHOT if rec.is_snapshot else Kind.MESSAGE, rec.raw)
        for rec in itertools.islice(read_recording(path), limit)
    ]


def produce(r: redis.Redis, records: list[Record], per_entry: int = 10) -> list[bytes]:
    enc = BatchEncoder()
    ids = []
    for i in range(0, len(records), per_entry):
        ids.append(r.xadd(STREAM, enc.encode(records[i : i + per_entry])))  # type: ignore[arg-type]
    return ids


def trades(n: int) -> list[Record]:
    return [
        Record(10**18 + i, Kind.MESSAGE, b'{"stream":"ethusdt@trade","data":{}}') for i in range(n)
    ]


def settings(tmp_path: Path, **kw: object) -> ConsumerSettings:
    base: dict[str, object] = {
        "store_dir": tmp_path / "store",
        "streams": [STREAM],
        "consumer_name": "c1",
        "flush_interval_s": 0.05,
        "block_ms": 50,
        "claim_min_idle_ms": 0,
        "metrics_port": 0,
        "retry_min_s": 0.05,
        "retry_max_s": 0.2,
        "ping_interval_s": 0.1,
    }
    base.update(kw)
    return ConsumerSettings.model_validate(base)


def pending(r: redis.Redis) -> int:
    try:
        return int(r.xpending(STREAM, GROUP)["pending"])  # type: ignore[index]
    except redis.ResponseError:
        return -1


def delivered_all(r: redis.Redis) -> bool:
    try:
        groups = r.xinfo_groups(STREAM)
    except redis.ResponseError:
        return False
    g = next((g for g in groups if g["name"] == GROUP.encode()), None)  # type: ignore[union-attr]
    return g is not None and g["lag"] == 0 and g["pending"] == 0


@contextlib.asynccontextmanager
async def running(consumer: Consumer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(consumer.run())
    try:
        yield task
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 20)


async def until(cond: Callable[[], bool], limit_s: float = 20) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def stored(tmp_path: Path) -> list[tuple[int, int, bytes]]:
    return [(r.recv_ns, r.kind, r.payload) for r in iter_store(tmp_path / "store")]


def expected(records: list[Record]) -> list[tuple[int, int, bytes]]:
    return [(r.recv_ns, int(r.kind), r.payload) for r in records]


def add_reader_user(server: RedisServer, password: str = "s3cret") -> RedisSettings:
    server.client().execute_command("ACL", "SETUSER", "brain", "on", f">{password}", *READER_ACL)
    return RedisSettings(url=server.url, username="brain", password=password)


async def test_consumer_stores_every_entry_once_in_order_and_acks(
    tmp_path: Path, redis_server: RedisServer, binance_data: Path
) -> None:
    r = redis_server.client()
    records = recording(binance_data / "spot_ethusdt_20240808.gz", 4000)
    produce(r, records[:2000])
    metrics = ConsumerMetrics()
    consumer = Consumer(settings(tmp_path), add_reader_user(redis_server), metrics=metrics)
    async with running(consumer):
        await until(lambda: delivered_all(r))
        produce(r, records[2000:])
        await until(lambda: delivered_all(r))
    assert stored(tmp_path) == expected(records)
    assert metrics.records.labels(STREAM)._value.get() == 4000
    assert metrics.duplicates._value.get() == 0


def test_the_reader_acl_user_cannot_write_market_data(redis_server: RedisServer) -> None:
    cfg = add_reader_user(redis_server)
    redis_server.client().xadd(STREAM, {"v": "1"})
    r = redis.Redis(port=redis_server.port, username=cfg.username, password="s3cret")
    r.xgroup_create(STREAM, GROUP, id="0")
    assert r.xreadgroup(GROUP, "c", {STREAM: ">"})
    for cmd in (
        ("XADD", STREAM, "*", "v", "1"),
        ("XTRIM", STREAM, "MAXLEN", "0"),
        ("XDEL", STREAM, "0-1"),
        ("DEL", STREAM),
        ("SET", "md:x", "1"),
        ("XADD", "other", "*", "a", "b"),
        ("FLUSHALL",),
        ("XGROUP", "DESTROY", STREAM, GROUP),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.execute_command(*cmd)


async def test_corrupt_and_unknown_version_entries_are_quarantined_and_counted(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    good = trades(3)
    enc = BatchEncoder()
    r.xadd(STREAM, enc.encode(good[:1]))  # type: ignore[arg-type]
    bad_ids = [
        r.xadd(STREAM, {"v": "2", "c": "none", "n": "0", "d": b""}),
        r.xadd(STREAM, {"v": "1", "c": "zstd", "n": "1", "d": b"not zstd"}),
        r.xadd(STREAM, {"v": "1", "c": "none", "n": "5", "d": b"\x00\x01"}),
        r.xadd(STREAM, {"hello": "world"}),
    ]
    r.xadd(STREAM, encode_plain(good[1]))  # type: ignore[arg-type]
    r.xadd(STREAM, enc.encode(good[2:]))  # type: ignore[arg-type]
    metrics = ConsumerMetrics()
    consumer = Consumer(settings(tmp_path), add_reader_user(redis_server), metrics=metrics)
    async with running(consumer):
        await until(lambda: delivered_all(r))
    assert stored(tmp_path) == expected(good)
    assert metrics.quarantined.labels(STREAM)._value.get() == 4
    import pyarrow.dataset as ds

    q = ds.dataset(tmp_path / "store" / "quarantine", partitioning="hive").to_table().to_pylist()
    assert [f"{row['entry_ms']}-{row['entry_seq']}".encode() for row in q] == bad_ids
    assert "version" in q[0]["reason"] and dict(q[3]["fields"]) == {b"hello": b"world"}


async def test_entries_stored_before_a_crash_are_acked_not_stored_again(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    recs = trades(6)
    enc = BatchEncoder()
    ids = [r.xadd(STREAM, enc.encode([x])) for x in recs]  # type: ignore[arg-type]
    r.xgroup_create(STREAM, GROUP, id="0")
    delivered = r.xreadgroup(GROUP, "c1", {STREAM: ">"}, count=4)  # delivered, never acked
    assert len(delivered[0][1]) == 4  # type: ignore[index]
    # The crashed consumer had committed the first three entries to the store.
    with ParquetStore(tmp_path / "store") as st:
        for eid, rec in zip(ids[:3], recs[:3], strict=True):
            st.add(STREAM, eid, [rec])
        st.flush()
    metrics = ConsumerMetrics()
    consumer = Consumer(settings(tmp_path), add_reader_user(redis_server), metrics=metrics)
    async with running(consumer):
        await until(lambda: delivered_all(r))
    assert stored(tmp_path) == expected(recs)
    assert metrics.duplicates._value.get() == 3


async def test_pending_entries_of_a_dead_consumer_are_claimed(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    recs = trades(8)
    enc = BatchEncoder()
    for x in recs:
        r.xadd(STREAM, enc.encode([x]))  # type: ignore[arg-type]
    r.xgroup_create(STREAM, GROUP, id="0")
    r.xreadgroup(GROUP, "dead-1", {STREAM: ">"}, count=3)
    r.xreadgroup(GROUP, "dead-2", {STREAM: ">"}, count=2)
    consumer = Consumer(
        settings(tmp_path, consumer_name="fresh", claim_min_idle_ms=50),
        add_reader_user(redis_server),
    )
    async with running(consumer):
        await until(lambda: delivered_all(r))
    assert stored(tmp_path) == expected(recs)
    owners = {c["name"]: c["pending"] for c in r.xinfo_consumers(STREAM, GROUP)}  # type: ignore[union-attr]
    assert owners.get(b"dead-1", 0) == 0 and owners.get(b"dead-2", 0) == 0


async def test_live_feed_delivers_records_to_a_strategy(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    local_gen = make_redis(tmp_path / "local")
    (tmp_path / "local").mkdir()
    local = next(local_gen)
    try:
        r = redis_server.client()
        r.xadd(STREAM, {"v": "1", "k": "1", "t": "1", "p": "x"})  # creates the stream
        cfg = settings(tmp_path, live=True, live_redis_url=local.url)
        consumer = Consumer(cfg, add_reader_user(redis_server))
        sub = consumer.hub.subscribe()
        got: list[Record] = []

        async def strategy() -> None:
            async for item in live_records(local.url, [STREAM], start="0"):
                got.append(item.record)
                if len(got) == 4:
                    return

        async with running(consumer):
            recs = [Record(time.time_ns(), Kind.MESSAGE, b'{"n":%d}' % i) for i in range(3)]
            r.xadd(STREAM, BatchEncoder().encode(recs))  # type: ignore[arg-type]
            await asyncio.wait_for(strategy(), 10)
            in_process = [(await sub.__anext__()).record for _ in range(4)]
        assert [x.payload for x in got] == [b"x", b'{"n":0}', b'{"n":1}', b'{"n":2}']
        assert in_process == got
    finally:
        with contextlib.suppress(StopIteration):
            next(local_gen)


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return res.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], None]]:
    """A store directory that is full: a real 256 KiB tmpfs where mounting is allowed (root),
    else an injected ENOSPC. Yields a function that frees space."""
    d = tmp_path / "store"
    if _tmpfs(d, "256k"):
        (d / "filler").write_bytes(b"\0" * (240 * 1024))

        def free() -> None:
            (d / "filler").unlink()
            subprocess.run(["mount", "-o", "remount,size=64m", str(d)], check=True)

        try:
            yield free
        finally:
            subprocess.run(["umount", "-l", str(d)], check=False)
        return
    real = store_mod.write_file
    state = {"full": True}

    def write_file(path: Path, data: bytes | memoryview) -> None:
        if state["full"] and path.name.endswith(".parquet.tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(store_mod, "write_file", write_file)
    yield lambda: state.update(full=False)


async def test_disk_full_stops_acks_alerts_and_resumes(
    tmp_path: Path,
    redis_server: RedisServer,
    binance_data: Path,
    small_disk: Callable[[], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = redis_server.client()
    records = recording(binance_data / "spot_ethusdt_20240808.gz", 3000)
    produce(r, records)
    metrics = ConsumerMetrics()
    consumer = Consumer(settings(tmp_path), add_reader_user(redis_server), metrics=metrics)
    async with running(consumer) as task:
        await until(lambda: metrics.flush_errors._value.get() >= 2)
        assert metrics.disk_blocked._value.get() == 1
        assert pending(r) == 300  # everything read, nothing acknowledged
        assert not task.done()
        small_disk()
        await until(lambda: delivered_all(r))
        assert metrics.disk_blocked._value.get() == 0
    assert stored(tmp_path) == expected(records)
    assert any("acknowledgements stopped" in rec.getMessage() for rec in caplog.records)


async def test_a_stream_recreated_below_the_checkpoint_is_reported(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with ParquetStore(tmp_path / "store") as st:
        st.add(STREAM, b"9999999999999-0", trades(1))
        st.flush()
    r = redis_server.client()
    r.xadd(STREAM, BatchEncoder().encode(trades(1)))  # type: ignore[arg-type]
    metrics = ConsumerMetrics()
    consumer = Consumer(settings(tmp_path), add_reader_user(redis_server), metrics=metrics)
    async with running(consumer):
        await until(lambda: metrics.stream_resets.labels(STREAM)._value.get() == 1)


async def test_claims_reach_entries_behind_a_long_pending_list_of_our_own(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    enc = BatchEncoder()
    recs = trades(12_050)
    pipe = r.pipeline(transaction=False)
    for x in recs:
        pipe.xadd(STREAM, enc.encode([x]))  # type: ignore[arg-type]
    pipe.execute()
    r.xgroup_create(STREAM, GROUP, id="0")
    r.xreadgroup(GROUP, "c1", {STREAM: ">"}, count=12_000)  # our own, from before a crash
    r.xreadgroup(GROUP, "dead", {STREAM: ">"}, count=50)  # behind them: a dead consumer's
    consumer = Consumer(
        settings(tmp_path, claim_min_idle_ms=10, read_count=5000), add_reader_user(redis_server)
    )
    async with running(consumer):
        await until(lambda: delivered_all(r), limit_s=60)
    assert stored(tmp_path) == expected(recs)


async def test_an_unreachable_live_feed_does_not_stop_the_store(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    from conftest import free_port

    r = redis_server.client()
    recs = trades(5)
    for x in recs:
        r.xadd(STREAM, BatchEncoder().encode([x]))  # type: ignore[arg-type]
    metrics = ConsumerMetrics()
    cfg = settings(tmp_path, live=True, live_redis_url=f"redis://127.0.0.1:{free_port()}/0")
    consumer = Consumer(cfg, add_reader_user(redis_server), metrics=metrics)
    async with running(consumer):
        await until(lambda: delivered_all(r))
    assert stored(tmp_path) == expected(recs)
    assert metrics.live_errors._value.get() >= 1


async def test_the_consumer_compacts_closed_days_into_one_file_per_partition(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    recs = trades(40)  # received in 2001: a closed day
    metrics = ConsumerMetrics()
    cfg = settings(tmp_path, compact_interval_s=0.3)
    consumer = Consumer(cfg, add_reader_user(redis_server), metrics=metrics)
    async with running(consumer):
        for x in recs:  # one entry per flush: many small parts
            r.xadd(STREAM, BatchEncoder().encode([x]))  # type: ignore[arg-type]
            await asyncio.sleep(0.01)
        await until(lambda: delivered_all(r))
        await until(lambda: len(list((tmp_path / "store" / "data").rglob("*.parquet"))) == 1)
    assert metrics.compacted._value.get() >= 2
    assert stored(tmp_path) == expected(recs)


async def test_a_redis_that_lost_its_data_is_followed_when_the_stream_comes_back(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    first, second = trades(3), trades(6)[3:]
    for x in first:
        r.xadd(STREAM, BatchEncoder().encode([x]))  # type: ignore[arg-type]
    consumer = Consumer(settings(tmp_path), RedisSettings(url=redis_server.url))
    async with running(consumer):
        await until(lambda: delivered_all(r))
        redis_server.restart()  # no persistence: stream and group are gone
        await asyncio.sleep(0.3)
        for x in second:  # the collector writes again, with later ids
            r.xadd(STREAM, BatchEncoder().encode([x]))  # type: ignore[arg-type]
        await until(lambda: delivered_all(r))
    assert stored(tmp_path) == expected(first + second)
