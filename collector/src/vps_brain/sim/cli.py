"""``vps-brain simulate``: run the fake Binance Spot until interrupted.

Examples::

    vps-brain simulate --port 8765 --symbols ethusdt,btcusdt --trade-rate 2000
    vps-brain simulate --replay ../shared/data/binance/spot_ethusdt_20240808.gz --speed 10
    vps-brain simulate --config lab.yaml --fault close_after_s=30 --fault rest_429_count=2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

from vps_brain.config import ConfigError, SimulatorSettings, load_settings
from vps_brain.logs import setup_logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML/TOML config file (section simulator)")
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default 8765; 0 = any)")
    parser.add_argument("--symbols", help="comma-separated symbols for generated mode")
    parser.add_argument("--depth-rate", type=float, help="depth events/s per symbol")
    parser.add_argument("--trade-rate", type=float, help="trades/s per symbol")
    parser.add_argument("--ticker-rate", type=float, help="bookTickers/s per symbol")
    parser.add_argument("--max-messages", type=int, help="stop generating after N per symbol")
    parser.add_argument(
        "--replay", type=Path, action="append", help="replay a recorded file (repeatable)"
    )
    parser.add_argument("--speed", type=float, help="replay speed factor (0 = max)")
    parser.add_argument("--ping-interval", type=float, help="server ping interval (s)")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="fault setting, e.g. close_after_s=30, malformed_every=1000, rest_429_count=2",
    )
    parser.add_argument("--log-format", choices=("json", "text"), default="text")


def settings_from_args(args: argparse.Namespace) -> SimulatorSettings:
    base = load_settings(args.config).simulator
    data: dict[str, Any] = base.model_dump()
    for key, attr in (
        ("host", "host"),
        ("port", "port"),
        ("depth_rate", "depth_rate"),
        ("trade_rate", "trade_rate"),
        ("ticker_rate", "ticker_rate"),
        ("max_messages", "max_messages"),
        ("replay_speed", "speed"),
        ("ping_interval_s", "ping_interval"),
    ):
        value = getattr(args, attr)
        if value is not None:
            data[key] = value
    if args.symbols:
        data["symbols"] = args.symbols.split(",")
    if args.replay:
        data["mode"] = "replay"
        data["replay_files"] = args.replay
    for item in args.fault:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--fault {item!r}: expected NAME=VALUE")
        data["faults"][name] = value
    try:
        return SimulatorSettings.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"invalid simulator settings: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from vps_brain.sim.server import serve

    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"vps-brain simulate: {exc}", file=sys.stderr)
        return 2
    setup_logging("INFO", args.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings))
    return 0
