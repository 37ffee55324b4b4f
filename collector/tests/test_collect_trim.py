"""Trimming removes only what every consumer group acknowledged, honouring the retention."""

from __future__ import annotations

import redis.asyncio as aioredis
from conftest import RedisServer

from vps_brain.collect.trim import safe_trim_point, trim_once

KEY = "md:binance:ethusdt"


async def fill(r: aioredis.Redis, n: int = 10) -> None:
    for i in range(1, n + 1):
        await r.xadd(KEY, {"v": "1"}, id=f"{i}-0")


async def ids(r: aioredis.Redis) -> list[int]:
    return [int(i.split(b"-")[0]) for i, _ in await r.xrange(KEY)]


async def test_without_any_group_nothing_is_trimmed(redis_server: RedisServer) -> None:
    r = aioredis.Redis.from_url(redis_server.url)
    await fill(r)
    assert await trim_once(r, [KEY]) == 0
    assert await ids(r) == list(range(1, 11))
    await r.aclose()


async def test_trim_stops_at_the_slowest_groups_first_pending_entry(
    redis_server: RedisServer,
) -> None:
    r = aioredis.Redis.from_url(redis_server.url)
    await fill(r)
    await r.xgroup_create(KEY, "brain", id="0")
    await r.xgroup_create(KEY, "audit", id="0")
    # brain read 1..8 and acked 1..6; audit read and acked 1..4
    got = await r.xreadgroup("brain", "c1", {KEY: ">"}, count=8)
    brain_ids = [i for i, _ in got[0][1]]
    await r.xack(KEY, "brain", *brain_ids[:6])
    got = await r.xreadgroup("audit", "c1", {KEY: ">"}, count=4)
    await r.xack(KEY, "audit", *[i for i, _ in got[0][1]])
    assert await safe_trim_point(r, KEY) == (4, 1)  # audit: delivered 4, nothing pending
    await r.xtrim(KEY, minid="0-0")  # no-op
    removed = await trim_once(r, [KEY])
    remaining = await ids(r)
    assert remaining[0] <= 5  # never past what audit has not read
    assert remaining[-1] == 10
    assert removed == 10 - len(remaining)
    # with exact trimming the point is exact
    await r.xtrim(KEY, minid="5-0", approximate=False)
    assert await ids(r) == list(range(5, 11))
    await r.aclose()


async def test_pending_entries_are_kept(redis_server: RedisServer) -> None:
    r = aioredis.Redis.from_url(redis_server.url)
    await fill(r)
    await r.xgroup_create(KEY, "brain", id="0")
    got = await r.xreadgroup("brain", "c1", {KEY: ">"}, count=10)
    all_ids = [i for i, _ in got[0][1]]
    await r.xack(KEY, "brain", *all_ids[:2], *all_ids[5:])  # 3,4,5 still pending
    assert await safe_trim_point(r, KEY) == (3, 0)
    await r.aclose()


async def test_min_retention_caps_the_trim_point(redis_server: RedisServer) -> None:
    r = aioredis.Redis.from_url(redis_server.url)
    await fill(r)
    await r.xgroup_create(KEY, "brain", id="$")  # everything counts as delivered and acked
    removed = await trim_once(r, [KEY], min_retention_s=0.005, now_ms=lambda: 12)
    assert removed >= 0
    assert (await ids(r))[0] <= 7  # 12 ms - 5 ms: entries from 7 on are kept
    await r.aclose()
