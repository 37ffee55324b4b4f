"""The Brain behind a shaped home link (tests/shaped_link.py): the link is cut while the VPS goes on
recording, then restored. The live feed is fresh again long before the backlog has drained, the
backlog drains within its budget, and the store equals the VPS stream exactly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

from conftest import RedisServer, make_redis
from shaped_link import ShapedLink
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

from vps_brain.config import RedisSettings
from vps_brain.consume.metrics import ConsumerMetrics
from vps_brain.consume.reader import Consumer
from vps_brain.frame import BatchEncoder, Kind, Record, parse_id

# The README's home link scaled down by 10: 2.4 MB/s link, 1 MB/s of compressed input, and the
# 1.4 MB/s left over for the backlog.
LINK = 240_000  # bytes/s, VPS -> Brain
INPUT_ENTRIES_S = 50  # each about 2 KB compressed: about 100 KB/s
BUDGET = 140_000  # the backlog's share; the live tail takes the input rate besides
OUTAGE_S = 3.0
#: The live feed is fresh again within this of the link's return: a reconnect (backoff capped at
#: 0.2 s here), a probe, one tail read; generous for a loaded CI machine.
FRESH_BOUND_S = 5.0


def _entry(enc: BatchEncoder) -> dict[Any, Any]:
    # Random payloads: the frame's compression leaves them about their size.
    recs = [
        Record(time.time_ns(), Kind.MESSAGE, b'{"data":"%s"}' % os.urandom(200).hex().encode())
        for _ in range(10)
    ]
    return dict(enc.encode(recs))


async def test_after_a_cut_link_the_live_feed_is_fresh_first_and_the_backlog_keeps_its_budget(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    vps = redis_server.client()
    enc = BatchEncoder()
    vps.xadd(STREAM, _entry(enc))
    reader = add_reader_user(redis_server)
    local_gen = make_redis(tmp_path / "local")
    (tmp_path / "local").mkdir()
    local = next(local_gen)
    live = local.client()

    async def produce() -> None:
        while True:
            vps.xadd(STREAM, _entry(enc))
            await asyncio.sleep(1 / INPUT_ENTRIES_S)

    def newest_live_ms() -> int:
        last: Any = live.xrevrange("live:" + STREAM, count=1)
        return parse_id(last[0][1][b"src"])[0] if last else 0

    try:
        async with ShapedLink(redis_server.port, LINK) as link:
            cfg = settings(
                tmp_path,
                live=True,
                live_redis_url=local.url,
                live_first_entries=50,
                live_first_s=1.0,
                read_count=20,
                catchup_budget_bytes_s=BUDGET,
            )
            metrics = ConsumerMetrics()
            via_link = RedisSettings(
                url=link.url, username=reader.username, password=reader.password
            )
            consumer = Consumer(cfg, via_link, metrics=metrics)
            producer = asyncio.create_task(produce())
            try:
                async with running(consumer):
                    await until(lambda: newest_live_ms() > 0, 10)  # live before the outage
                    link.set_cut(True)
                    await asyncio.sleep(OUTAGE_S)
                    backlog = vps.xlen(STREAM) - int(metrics.entries.labels(STREAM)._value.get())
                    group_before = metrics.read_bytes.labels("group")._value.get()
                    link.set_cut(False)
                    back = time.monotonic()
                    back_ms = time.time_ns() // 1_000_000
                    await until(lambda: newest_live_ms() >= back_ms, 30)
                    fresh_s = time.monotonic() - back
                    caught_up = consumer.catchup.any
                    await until(lambda: not consumer.catchup.any, 60)
                    caught_s = time.monotonic() - back
                    group_bytes = metrics.read_bytes.labels("group")._value.get() - group_before
                    producer.cancel()
                    await until(lambda: delivered_all(vps), 30)
            finally:
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await producer
        print(
            f"outage {OUTAGE_S:.0f} s, backlog {backlog} entries: live fresh after {fresh_s:.2f} s,"
            f" caught up after {caught_s:.2f} s, backlog read at {group_bytes / caught_s:,.0f} B/s"
            f" (budget {BUDGET:,})"
        )
        assert backlog > cfg.live_first_entries  # the outage left a backlog to catch up
        assert caught_up  # when the live feed was fresh, the store was still behind
        assert fresh_s < FRESH_BOUND_S
        assert fresh_s < caught_s / 2  # live first: fresh long before the backlog is drained
        # The group read no more than its budget over the catch-up, plus the second of tokens it
        # starts with and one read in debt (read_count entries of about 2 KB).
        assert group_bytes <= BUDGET * (caught_s + 1) + cfg.read_count * 4000
        # Every record stored exactly once, in order.
        want = [
            rec
            for _, f in vps.xrange(STREAM)  # type: ignore[union-attr]
            for rec in expected(consumer.decoder.decode(f))
        ]
        assert stored(tmp_path) == want
    finally:
        with contextlib.suppress(StopIteration):
            next(local_gen)
