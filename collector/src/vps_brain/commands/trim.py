"""``vps-brain trim``: trim every ``md:<exchange>:*`` stream once, below what all groups acked.

``vps-brain collect`` already trims every ``collector.trim_interval_s``; this command is for cron
or an operator (for example with collection stopped).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from vps_brain.commands import refuse, settings_from_args
from vps_brain.config import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML/TOML config file")
    parser.add_argument("--redis-url", help="override redis.url")
    parser.add_argument(
        "--min-retention", type=float, help="keep at least this many seconds (overrides config)"
    )


def run(args: argparse.Namespace) -> int:
    from vps_brain.collect.trim import trim_exchange

    try:
        settings = settings_from_args(
            args,
            {
                "redis.url": args.redis_url,
                "collector.trim_min_retention_s": args.min_retention,
            },
        )
    except ConfigError as exc:
        return refuse("trim", exc)
    removed = asyncio.run(trim_exchange(settings.redis, settings.collector))
    print(f"trimmed {removed} entries")
    return 0
