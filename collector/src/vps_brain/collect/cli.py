"""``vps-brain collect``: run the collector until SIGINT/SIGTERM (then flush and exit 0).

Examples::

    vps-brain collect --config /etc/vps-brain/collector.yaml
    VPS_BRAIN__REDIS__URL=redis://127.0.0.1:6379/0 vps-brain collect \\
        --ws-url ws://127.0.0.1:8765 --rest-url http://127.0.0.1:8765 --spool-dir /tmp/spool
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vps_brain.config import ConfigError, Settings, format_validation_error, load_settings
from vps_brain.logs import setup_logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML/TOML config file")
    parser.add_argument("--redis-url", help="override redis.url")
    parser.add_argument("--ws-url", help="override collector.ws_url")
    parser.add_argument("--rest-url", help="override collector.rest_url")
    parser.add_argument("--symbols", help="override collector.symbols (comma-separated)")
    parser.add_argument("--channels", help="override collector.channels (comma-separated)")
    parser.add_argument("--spool-dir", type=Path, help="override collector.spool_dir")
    parser.add_argument("--framing", choices=("batch", "plain"), help="override framing")
    parser.add_argument("--metrics-port", type=int, help="override collector.metrics_port")
    parser.add_argument("--check-config", action="store_true", help="validate and exit")


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    data: dict[str, Any] = settings.model_dump(mode="python")
    data["redis"]["password"] = settings.redis.password
    col = data["collector"]
    for attr, key in (
        ("ws_url", "ws_url"),
        ("rest_url", "rest_url"),
        ("spool_dir", "spool_dir"),
        ("framing", "framing"),
        ("metrics_port", "metrics_port"),
    ):
        value = getattr(args, attr)
        if value is not None:
            col[key] = value
    if args.symbols:
        col["symbols"] = args.symbols.split(",")
    if args.channels:
        col["channels"] = args.channels.split(",")
    if args.redis_url:
        data["redis"]["url"] = args.redis_url
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:  # the file was valid: the flags are wrong
        raise ConfigError(format_validation_error(exc, "command line")) from None


async def _main(settings: Settings) -> None:
    from vps_brain.collect.service import Collector

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await Collector(settings).run(stop)


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"vps-brain collect: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print("configuration OK")
        return 0
    setup_logging(settings.collector.log_level, settings.collector.log_format)
    asyncio.run(_main(settings))
    return 0
