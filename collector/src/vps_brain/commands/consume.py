"""``vps-brain consume``: the Brain's consumer service (see :mod:`vps_brain.consume.reader`).

Settings come from ``--config`` (section ``consumer``, and ``redis`` for the VPS Redis through
the tunnel) and ``VPS_BRAIN__...`` variables; the flags below override single fields.
SIGTERM/SIGINT stop it cleanly: the buffer is committed and acknowledged before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from vps_brain.commands import refuse, settings_from_args
from vps_brain.config import ConfigError
from vps_brain.logs import setup_logging

log = logging.getLogger("vps_brain.consume")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="settings file (YAML or TOML)")
    parser.add_argument("--redis-url", help="VPS Redis URL (overrides redis.url)")
    parser.add_argument("--store", type=Path, help="store directory (consumer.store_dir)")
    parser.add_argument("--group", help="consumer group (consumer.group)")
    parser.add_argument("--name", help="consumer name in the group (consumer.consumer_name)")
    parser.add_argument(
        "--stream", action="append", help="stream key to read (repeatable; default: discover)"
    )
    parser.add_argument("--flush-interval", type=float, help="seconds between store commits")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port (0 disables)")
    parser.add_argument("--live-url", help="publish the live feed to this (local) Redis")


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(
            args,
            {
                "redis.url": args.redis_url,
                "consumer.store_dir": args.store,
                "consumer.group": args.group or None,
                "consumer.consumer_name": args.name or None,
                "consumer.streams": args.stream,
                "consumer.flush_interval_s": args.flush_interval,
                "consumer.metrics_port": args.metrics_port,
                "consumer.live": True if args.live_url else None,
                "consumer.live_redis_url": args.live_url or None,
            },
        )
    except ConfigError as exc:
        return refuse("consume", exc)
    cfg = settings.consumer
    setup_logging(cfg.log_level, cfg.log_format)

    from vps_brain.consume.metrics import ConsumerMetrics
    from vps_brain.consume.reader import Consumer, tune_gc
    from vps_brain.consume.store import StoreError

    metrics = ConsumerMetrics()
    if cfg.metrics_port:
        metrics.serve(cfg.metrics_host, cfg.metrics_port)
    consumer = Consumer(cfg, settings.redis, metrics=metrics)
    tune_gc()
    # A commit thread building tables holds the GIL in long stretches; hand it back to the
    # event loop (live feed, reads) every millisecond instead of every 5 ms.
    sys.setswitchinterval(0.001)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, consumer.stop)
        await consumer.run()

    try:
        asyncio.run(main())
    except StoreError as exc:
        log.error("cannot open the store", extra={"fields": {"error": str(exc)}})
        return 1
    return 0
