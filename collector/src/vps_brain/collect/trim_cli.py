"""``vps-brain trim``: trim every ``md:<exchange>:*`` stream once, below what all groups acked.

``vps-brain collect`` already trims every ``collector.trim_interval_s``; this command is for cron
or an operator (for example with collection stopped).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from vps_brain.config import ConfigError, Settings, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML/TOML config file")
    parser.add_argument("--redis-url", help="override redis.url")
    parser.add_argument(
        "--min-retention", type=float, help="keep at least this many seconds (overrides config)"
    )


async def _trim(settings: Settings, min_retention_s: float) -> int:
    from vps_brain.collect.trim import trim_once
    from vps_brain.frame import stream_pattern
    from vps_brain.redisclient import async_client

    r = async_client(settings.redis)
    try:
        pattern = stream_pattern(settings.collector.exchange)
        keys = [k.decode() async for k in r.scan_iter(match=pattern, _type="stream")]
        return await trim_once(r, keys, min_retention_s, settings.collector.trim_require_group)
    finally:
        await r.aclose()


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"vps-brain trim: {exc}", file=sys.stderr)
        return 2
    if args.redis_url:
        settings.redis.url = args.redis_url
    retention = (
        args.min_retention
        if args.min_retention is not None
        else settings.collector.trim_min_retention_s
    )
    removed = asyncio.run(_trim(settings, retention))
    print(f"trimmed {removed} entries")
    return 0
