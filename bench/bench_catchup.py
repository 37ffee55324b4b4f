"""Catch-up after an outage, through a shaped home link, beside a baseline measured in one run.

The home link of the README carries 2.4 MB/s; the VPS records 8 MB/s raw, about 1 MB/s after
compression, which leaves 1.4 MB/s for a backlog. This bench scales those rates down by
``--scale`` (default 10). The link is a rate-limited TCP proxy in front of a real redis-server
(collector/tests/shaped_link.py, the same scenario the shaped-link test runs). A writer adds
entries at the scaled input rate. The link is cut for ``--outage`` seconds, then restored. Each
run measures, from the link's return:

* live freshness: how long until the live feed has an entry written after the link came back;
* caught up: how long until the group is within one read of the head;
* the rate at which the group read the backlog.

Runs:

1. **live first**: the consumer as configured for a home link, with
   ``catchup_budget_bytes_s`` = the link minus the input.
2. **baseline**: live first turned off and no budget (the consumer before issue 19). The live
   feed then follows the group, so it is fresh only once the backlog is read.

Both scale to a 10-minute outage at the full rates: the backlog grows with the outage and drains
at a rate set by the link, so the time to catch up grows linearly with the outage. Live
freshness under live first does not depend on the backlog.

Run: ``.venv/bin/python bench/bench_catchup.py`` (``--quick``: a 5 s outage). Needs redis-server.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "collector" / "tests"))
from bench_consumer import start_redis
from shaped_link import Outage, ShapedLink, cut_and_restore

from vps_brain.config import ConsumerSettings, RedisSettings
from vps_brain.consume.metrics import ConsumerMetrics
from vps_brain.consume.reader import READER_ACL, Consumer

STREAM = "md:binance:ethusdt"
LINK_FULL = 2_400_000  # bytes/s, the README's home link
INPUT_FULL = 1_000_000  # bytes/s compressed, 8 MB/s raw
ENTRY_BYTES = 2_000  # compressed size of one entry of shaped_link.random_entry()
TARGET_OUTAGE_S = 600


async def one_run(tmp: Path, scale: float, outage_s: float, live_first: bool) -> Outage:
    link_rate = LINK_FULL / scale
    entries_per_s = INPUT_FULL / scale / ENTRY_BYTES
    vps_proc, vps_port = start_redis(tmp / "vps")
    live_proc, live_port = start_redis(tmp / "live")
    try:
        vps = redis.Redis(port=vps_port)
        vps.execute_command("ACL", "SETUSER", "brain", "on", ">pw", *READER_ACL)
        cfg = ConsumerSettings.model_validate(
            {
                "store_dir": tmp / "store",
                "streams": [STREAM],
                "consumer_name": "bench",
                "flush_interval_s": 0.5,
                "block_ms": 100,
                "claim_min_idle_ms": 0,
                "metrics_port": 0,
                "retry_min_s": 0.05,
                "retry_max_s": 0.5,
                "ping_interval_s": 0.2,
                "read_count": 50,
                "live": True,
                "live_redis_url": f"redis://127.0.0.1:{live_port}/0",
                "live_first_entries": 100 if live_first else 10**12,
                "live_first_s": 2.0 if live_first else 10.0**9,
                "catchup_budget_bytes_s": (LINK_FULL - INPUT_FULL) / scale if live_first else 0,
            }
        )
        async with ShapedLink(vps_port, link_rate) as link:
            via_link = RedisSettings(url=link.url, username="brain", password="pw")
            consumer = Consumer(cfg, via_link, metrics=ConsumerMetrics())
            return await cut_and_restore(
                consumer,
                link,
                vps,
                redis.Redis(port=live_port),
                STREAM,
                entries_per_s=entries_per_s,
                outage_s=outage_s,
                limit_s=3600,
            )
    finally:
        for p in (vps_proc, live_proc):
            p.terminate()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=10.0, help="rates are the README's / this")
    ap.add_argument("--outage", type=float, default=20.0, help="seconds the link is cut")
    ap.add_argument("--quick", action="store_true", help="a 5 s outage")
    args = ap.parse_args()
    outage_s = 5.0 if args.quick else args.outage
    print(
        f"link {LINK_FULL / args.scale / 1e3:,.0f} KB/s, input {INPUT_FULL / args.scale / 1e3:,.0f}"
        f" KB/s compressed (the README's / {args.scale:g}), outage {outage_s:g} s"
    )
    results: dict[str, Outage] = {}
    for name, live_first in (("live first", True), ("baseline", False)):
        with tempfile.TemporaryDirectory(prefix="vpsb-catchup-") as d:
            out = asyncio.run(one_run(Path(d), args.scale, outage_s, live_first))
        results[name] = out
        rate = out.group_bytes / out.caught_up_s / 1e3
        print(
            f"  {name:10s}  backlog {out.backlog_entries:6,} entries   live fresh after "
            f"{out.fresh_s:7.2f} s   caught up after {out.caught_up_s:7.2f} s   backlog read at "
            f"{rate:6,.0f} KB/s"
        )
    lf, base = results["live first"], results["baseline"]
    print(
        f"  live freshness, baseline / live first: {base.fresh_s / lf.fresh_s:,.0f}x; "
        f"time to caught up, live first / baseline: {lf.caught_up_s / base.caught_up_s:.2f}x"
    )
    k = TARGET_OUTAGE_S / outage_s
    print(f"A {TARGET_OUTAGE_S // 60}-minute outage at the full rates (times scaled by {k:g}):")
    print(
        f"  live first: live fresh after {lf.fresh_s:.1f} s, caught up after "
        f"{lf.caught_up_s * k / 60:.0f} min; baseline: live fresh and caught up after "
        f"{base.caught_up_s * k / 60:.0f} min"
    )


if __name__ == "__main__":
    main()
