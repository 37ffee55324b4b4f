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
from pathlib import Path
from typing import Any

from vps_brain.commands import apply_overrides, refuse, settings_from_args, split_list
from vps_brain.config import ConfigError, Settings
from vps_brain.logs import setup_logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML/TOML config file")
    parser.add_argument("--redis-url", help="override redis.url")
    # These four change the settings' one market (collector.markets[0]).
    parser.add_argument("--ws-url", help="override the market's ws_url")
    parser.add_argument("--rest-url", help="override the market's rest_url")
    parser.add_argument("--symbols", help="override the market's symbols (comma-separated)")
    parser.add_argument("--channels", help="override the market's channels (comma-separated)")
    parser.add_argument("--spool-dir", type=Path, help="override collector.spool_dir")
    parser.add_argument("--framing", choices=("batch", "plain"), help="override framing")
    parser.add_argument("--metrics-port", type=int, help="override collector.metrics_port")
    parser.add_argument("--check-config", action="store_true", help="validate and exit")


async def _main(settings: Settings) -> None:
    from vps_brain.collect.service import Collector

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await Collector(settings).run(stop)


def _market_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that change the one market of the settings (``--symbols`` etc.), as given."""
    flags = {
        "ws_url": args.ws_url,
        "rest_url": args.rest_url,
        "symbols": split_list(args.symbols),
        "channels": split_list(args.channels),
    }
    return {k: v for k, v in flags.items() if v is not None}


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(
            args,
            {
                "redis.url": args.redis_url,
                "collector.spool_dir": args.spool_dir,
                "collector.framing": args.framing,
                "collector.metrics_port": args.metrics_port,
            },
        )
        flags = _market_flags(args)
        if flags:
            markets = settings.collector.markets
            if len(markets) != 1:
                raise ConfigError(
                    f"--{'/--'.join(k.replace('_', '-') for k in flags)} change the one market "
                    f"of the settings, and they hold {len(markets)}: edit collector.markets"
                )
            market = markets[0].model_dump(exclude_unset=True) | flags
            settings = apply_overrides(settings, {"collector.markets": [market]})
        # The connections (streams per connection, staggered renewals) are planned from the
        # settings alone, so --check-config refuses a plan that cannot work.
        from vps_brain.collect.service import Collector

        plan = Collector(settings).connection_plan
    except ConfigError as exc:
        return refuse("collect", exc)
    if args.check_config:
        print(f"configuration OK ({len(plan)} connection(s))")
        return 0
    setup_logging(settings.collector.log_level, settings.collector.log_format)
    asyncio.run(_main(settings))
    return 0
