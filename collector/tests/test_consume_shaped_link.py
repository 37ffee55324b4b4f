"""The Brain behind a shaped home link (tests/shaped_link.py): the link is cut while the VPS goes on
recording, then restored. The live feed is fresh again long before the backlog has drained, the
backlog drains within its budget, and the store equals the VPS stream exactly."""

from __future__ import annotations

import contextlib
from pathlib import Path

from conftest import RedisServer, make_redis
from shaped_link import ShapedLink, cut_and_restore
from test_consume import STREAM, add_reader_user, expected, settings, stored

from vps_brain.config import RedisSettings
from vps_brain.consume.metrics import ConsumerMetrics
from vps_brain.consume.reader import Consumer

# The README's home link scaled down by 10: 2.4 MB/s link, 1 MB/s of compressed input, and the
# 1.4 MB/s left over for the backlog (bench/bench_catchup.py runs the same at other sizes).
LINK = 240_000  # bytes/s, VPS -> Brain
INPUT_ENTRIES_S = 50  # each about 4 KB raw, 2 KB compressed: about 100 KB/s
BUDGET = 140_000  # the backlog's share; the live tail takes the input rate besides
OUTAGE_S = 3.0
#: The live feed is fresh again within this of the link's return: a reconnect (backoff capped at
#: 0.2 s here), a probe, one tail read; generous for a loaded CI machine.
FRESH_BOUND_S = 5.0


async def test_after_a_cut_link_the_live_feed_is_fresh_first_and_the_backlog_keeps_its_budget(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    reader = add_reader_user(redis_server)
    local_gen = make_redis(tmp_path / "local")
    (tmp_path / "local").mkdir()
    local = next(local_gen)
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
            via_link = RedisSettings(
                url=link.url, username=reader.username, password=reader.password
            )
            consumer = Consumer(cfg, via_link, metrics=ConsumerMetrics())
            vps = redis_server.client()
            out = await cut_and_restore(
                consumer,
                link,
                vps,
                local.client(),
                STREAM,
                entries_per_s=INPUT_ENTRIES_S,
                outage_s=OUTAGE_S,
                limit_s=120,
            )
        print(out)
        assert out.backlog_entries > cfg.live_first_entries  # the cut left a backlog
        assert out.catching_up_when_fresh  # the store was still behind when the feed was fresh
        assert out.fresh_s < FRESH_BOUND_S
        assert out.fresh_s < out.caught_up_s / 2  # live first: fresh long before caught up
        # The group read no more than its budget over the catch-up, plus the second of tokens it
        # starts with and one read in debt (read_count entries of about 2 KB).
        assert out.group_bytes <= BUDGET * (out.caught_up_s + 1) + cfg.read_count * 4000
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
