"""``vps-brain status``: a terminal dashboard of one VPS and one Brain.

The samples and the frame are :mod:`vps_brain.consume.status`; this module parses and prints.
Rates are differences between two samples. ``--once`` prints one frame (two samples
``--interval`` apart) and exits; ``--json`` prints the raw sample instead of a frame.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import redis

from vps_brain.commands import refuse, settings_from_args
from vps_brain.config import ConfigError
from vps_brain.consume.status import Metrics, Sample, render, take_sample
from vps_brain.redisclient import sync_client


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="settings file (redis, consumer sections)")
    parser.add_argument("--vps-redis", help="VPS Redis URL (default: settings redis.url)")
    parser.add_argument("--no-vps-redis", action="store_true", help="do not query the VPS Redis")
    parser.add_argument(
        "--collector-metrics", help="collector's metrics URL, e.g. http://10.8.0.1:9108/metrics"
    )
    parser.add_argument(
        "--consumer-metrics",
        help="consumer's metrics URL (default: from settings consumer.metrics_host/port)",
    )
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between frames")
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    parser.add_argument("--json", action="store_true", help="print the sample as JSON")


def _jsonable(s: Sample) -> dict[str, Any]:
    def metrics(m: Metrics | None) -> dict[str, float] | None:
        return None if m is None else {k: sum(v.values()) for k, v in m.items()}

    return {
        "vps_error": s.vps_error,
        "rtt_ms": s.rtt_ms,
        "used_memory": s.used_memory,
        "maxmemory": s.maxmemory,
        "streams": {k: vars(v) for k, v in s.streams.items()},
        "collector": metrics(s.collector),
        "collector_error": s.collector_error,
        "consumer": metrics(s.consumer),
        "consumer_error": s.consumer_error,
    }


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args, {"redis.url": args.vps_redis or None})
    except ConfigError as exc:
        return refuse("status", exc)
    cons = settings.consumer
    consumer_url = args.consumer_metrics
    if consumer_url is None and cons.metrics_port:
        consumer_url = f"http://{cons.metrics_host}:{cons.metrics_port}/metrics"
    r: redis.Redis | None = None if args.no_vps_redis else sync_client(settings.redis)
    title = f"(group {cons.group})"

    def sample() -> Sample:
        return take_sample(r, cons.group, cons.stream_pattern, args.collector_metrics, consumer_url)

    prev = sample()
    try:
        while True:
            time.sleep(args.interval)
            cur = sample()
            if args.json:
                print(json.dumps(_jsonable(cur), default=str))
            else:
                frame = render(prev, cur, title)
                if not args.once:
                    sys.stdout.write("\x1b[H\x1b[2J")  # home + clear
                print(frame, flush=True)
            if args.once:
                return 0
            prev = cur
    except KeyboardInterrupt:
        return 0
    finally:
        if r is not None:
            with contextlib.suppress(Exception):
                r.close()
