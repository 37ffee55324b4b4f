"""``vps-brain simulate``: run the fake Binance venue (spot, USD-M or COIN-M) until interrupted.

Examples::

    vps-brain simulate --port 8765 --symbols ethusdt,btcusdt --trade-rate 2000
    vps-brain simulate --venue coinm --symbols ethusd_perp
    vps-brain simulate --replay ../shared/data/binance/spot_ethusdt_20240808.gz --speed 10
    vps-brain simulate --venue usdm --replay ../shared/data/binance/usdm_ethusdt_20240808.gz
    vps-brain simulate --config lab.yaml --fault close_after_s=30 --fault rest_429_count=2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path
from typing import Any

from vps_brain.commands import refuse, settings_from_args, split_list
from vps_brain.config import ConfigError
from vps_brain.logs import setup_logging
from vps_brain.venues import VENUES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML/TOML config file (section simulator)")
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default 8765; 0 = any)")
    parser.add_argument(
        "--venue", choices=list(VENUES), help="venue served: paths, routes, events (default spot)"
    )
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


def _faults(items: list[str]) -> dict[str, Any]:
    """``--fault NAME=VALUE`` flags as overrides of ``simulator.faults``."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise ConfigError(f"--fault {item!r}: expected NAME=VALUE")
        out[f"simulator.faults.{name}"] = value
    return out


def run(args: argparse.Namespace) -> int:
    from vps_brain.sim.server import serve

    try:
        settings = settings_from_args(
            args,
            {
                "simulator.host": args.host,
                "simulator.port": args.port,
                "simulator.venue": args.venue,
                "simulator.symbols": split_list(args.symbols),
                "simulator.depth_rate": args.depth_rate,
                "simulator.trade_rate": args.trade_rate,
                "simulator.ticker_rate": args.ticker_rate,
                "simulator.max_messages": args.max_messages,
                "simulator.mode": "replay" if args.replay else None,
                "simulator.replay_files": args.replay,
                "simulator.replay_speed": args.speed,
                "simulator.ping_interval_s": args.ping_interval,
                **_faults(args.fault),
            },
        )
    except ConfigError as exc:
        return refuse("simulate", exc)
    setup_logging("INFO", args.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings.simulator))
    return 0
