"""Trimming: remove only what every consumer group has acknowledged, keeping a minimum retention.

For each stream the safe point is the smallest, over all groups, of the first pending entry id
(``XPENDING`` summary) or, when nothing is pending, the group's last-delivered id + 1. Entries
strictly below it are acknowledged by every group. ``XTRIM MINID ~`` removes whole nodes below
that point only (approximate trimming never removes more). With ``min_retention_s`` the point is
also capped at ``now - min_retention_s``. A stream without any group is not trimmed unless
``require_group`` is off (then only the retention applies).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from vps_brain.config import CollectorSettings, RedisSettings
from vps_brain.frame import format_id, parse_id, stream_pattern
from vps_brain.redisclient import async_client

log = logging.getLogger("vps_brain.collect.trim")


async def safe_trim_point(
    r: aioredis.Redis, key: str, require_group: bool = True
) -> tuple[int, int] | None:
    """The smallest id not yet acknowledged by every group, or None (do not trim)."""
    try:
        groups = await r.xinfo_groups(key)
    except ResponseError:
        return None  # no such stream
    if not groups:
        return None if require_group else (2**63, 0)
    point: tuple[int, int] | None = None
    for g in groups:
        name = g["name"]
        ms, seq = parse_id(g["last-delivered-id"])
        cand = (ms, seq + 1)
        if int(g.get("pending", 0)) > 0:
            summary = await r.xpending(key, name)
            if summary.get("min") is not None:  # None: acked in the meantime
                cand = min(cand, parse_id(summary["min"]))
        if point is None or cand < point:
            point = cand
    return point


async def trim_once(
    r: aioredis.Redis,
    keys: Iterable[str],
    min_retention_s: float = 0.0,
    require_group: bool = True,
    now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
) -> int:
    """Trim every key once; returns the number of entries removed."""
    removed = 0
    for key in keys:
        point = await safe_trim_point(r, key, require_group)
        if point is None:
            continue
        if min_retention_s > 0:
            point = min(point, (now_ms() - int(min_retention_s * 1000), 0))
        if point[0] <= 0 or point[0] >= 2**63:
            continue
        removed += int(await r.xtrim(key, minid=format_id(point), approximate=True))
    return removed


async def trim_exchange(redis_cfg: RedisSettings, cfg: CollectorSettings) -> int:
    """Trim every stream of the markets' exchanges once (``vps-brain trim``); entries removed."""
    r = async_client(redis_cfg)
    try:
        keys: list[str] = []
        for exchange in dict.fromkeys(m.exchange_name for m in cfg.markets):
            pattern = stream_pattern(exchange)
            keys += [k.decode() async for k in r.scan_iter(match=pattern, _type="stream")]
        return await trim_once(r, keys, cfg.trim_min_retention_s, cfg.trim_require_group)
    finally:
        await r.aclose()


async def trim_loop(
    r: aioredis.Redis,
    keys: Callable[[], Iterable[str]],
    interval_s: float,
    min_retention_s: float,
    require_group: bool,
    on_removed: Callable[[int], None],
) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            n = await trim_once(r, list(keys()), min_retention_s, require_group)
        except RedisError as exc:
            log.debug("trim skipped: %s", exc)
            continue
        except Exception:  # trimming is housekeeping: never let it stop the collector
            log.exception("trim failed; retrying next interval")
            continue
        if n:
            on_removed(n)
