"""The consumer merges closed hours as it runs and copies them to ``archive_uri``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import RedisServer
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

from vps_brain.consume.metrics import ConsumerMetrics
from vps_brain.consume.reader import Consumer
from vps_brain.consume.replay import iter_store
from vps_brain.frame import BatchEncoder, Kind, Record

T0 = 1_723_075_200_000  # 2024-08-08 00:00 UTC: hours long closed


async def test_the_consumer_compacts_closed_hours_and_archives_them(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    # Received "in 2099": the date partition is not a closed day, only the hours are closed.
    recs = [
        Record(4_102_444_800 * 10**9 + i, Kind.MESSAGE, b'{"stream":"ethusdt@trade","data":{}}')
        for i in range(12)
    ]
    uri = f"file://{tmp_path}/archive"
    cfg = settings(
        tmp_path,
        compact_interval_s=0.3,
        compact_hours_after_s=0.0,
        compact_slice_s=0.001,  # one partition at a time, between flushes
        archive_uri=uri,
    )
    consumer = Consumer(cfg, add_reader_user(redis_server), metrics=ConsumerMetrics())
    data = tmp_path / "store" / "data"
    async with running(consumer):
        for i, x in enumerate(recs):  # 4 entries in each of 3 hours, one flush each
            ms = T0 + (i // 4) * 3_600_000 + i % 4
            r.xadd(STREAM, BatchEncoder().encode([x]), id=f"{ms}-0")  # type: ignore[arg-type]
            await asyncio.sleep(0.06)
        await until(lambda: delivered_all(r))
        await until(lambda: len(list(data.rglob("*.parquet"))) == 3)  # one file per hour
        # Hours closed by the clock while their entries still arrived: a part archived early
        # is replaced by the merge that covers it, on a later pass.
        await until(lambda: archived(uri) == expected(recs))
        await until(lambda: len(list((tmp_path / "archive").rglob("*.parquet"))) == 3)
    assert stored(tmp_path) == expected(recs)


def archived(uri: str) -> list[tuple[int, int, bytes]]:
    try:
        return [(s.recv_ns, s.kind, s.payload) for s in iter_store(uri)]
    except FileNotFoundError:  # listed, then replaced by the archive's run meanwhile
        return []
