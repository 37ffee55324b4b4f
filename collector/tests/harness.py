"""The tests' harness: the collector run against the simulator in one event loop.

It lives with the tests, not in :mod:`vps_brain.sim`: the simulator knows nothing of the
collector (``test_sim_imports_nothing_of_the_collector_or_the_consumer``)::

    async with Simulator(sim_settings) as sim:
        async with running_collector(settings_for(sim, url, spool)) as c:
            await wait_until(lambda: c.stats.messages_in_total() >= n)
            await c.flushed()
    records = read_stream(redis_url, "md:binance:ethusdt")
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson

from vps_brain.collect.service import Collector
from vps_brain.config import Settings, SimulatorSettings
from vps_brain.frame import Kind, Record, decode_entry
from vps_brain.redisclient import sync_client
from vps_brain.sim.server import Simulator
from vps_brain.venues import DEFAULT_VENUE


def generated(**settings: Any) -> SimulatorSettings:
    """A simulator in generated mode on a free port, for ethusdt unless SETTINGS say otherwise."""
    return SimulatorSettings.model_validate({"port": 0, "symbols": ["ethusdt"], **settings})


def received(collector: Collector) -> int:
    """Messages the collector has received, all streams together."""
    return sum(collector.stats.messages_in.values())


#: The exchange of spot's stream keys and counters (``md:binance:...``).
SPOT = DEFAULT_VENUE.exchange
#: What a market of the collector settings may say (the rest are collector fields).
MARKET_KEYS = ("symbols", "channels", "ws_url", "rest_url", "exchange")


def settings_for(sim: Simulator, redis_url: str, spool_dir: Path, **collector: Any) -> Settings:
    """Collector settings: one market of ``sim``'s venue and symbols, pointing at ``sim``, and
    ``redis_url``. Keys of :data:`MARKET_KEYS` change that market, the others are collector
    fields."""
    market: dict[str, Any] = {
        "venue": sim.settings.venue,
        "symbols": sim.market.symbols,
        "ws_url": sim.ws_url,
        "rest_url": sim.base_url,
    }
    market.update({k: collector.pop(k) for k in MARKET_KEYS if k in collector})
    base: dict[str, Any] = {
        "markets": [market],
        "spool_dir": str(spool_dir),
        "metrics_port": 0,
        "resync_jitter_s": 0.05,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        "memory_check_interval_s": 0.1,
        "trim_interval_s": 0,
        "log_format": "text",
    }
    base.update(collector)
    return Settings.model_validate({"redis": {"url": redis_url}, "collector": base})


@contextlib.asynccontextmanager
async def running_collector(settings: Settings) -> AsyncIterator[Collector]:
    """A collector running in this loop; stopped (and flushed) on exit."""
    collector = Collector(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    ready = asyncio.ensure_future(collector.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()
    try:
        yield collector
    finally:
        stop.set()
        done, _ = await asyncio.wait([task], timeout=30)
        if not done:
            for t in asyncio.all_tasks():
                t.print_stack(file=sys.stderr)
            raise TimeoutError("collector did not stop within 30 s (task stacks on stderr)")
        task.result()


async def wait_until(
    cond: Callable[[], bool], limit_s: float = 30.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {limit_s}s waiting for {what}")
        await asyncio.sleep(0.02)


def read_stream(redis_url: str, key: str) -> list[Record]:
    """Every record of a stream, in order (synchronous client)."""
    r = sync_client(redis_url)
    out: list[Record] = []
    entries: list[tuple[bytes, dict[bytes, bytes]]] = r.xrange(key)  # type: ignore[assignment]
    for _id, fields in entries:
        out.extend(decode_entry(fields))
    r.close()
    return out


def messages_by_stream(records: list[Record]) -> dict[str, list[bytes]]:
    """MESSAGE payloads grouped by combined-stream name, in order."""
    out: dict[str, list[bytes]] = {}
    for rec in records:
        if rec.kind is Kind.MESSAGE:
            name = orjson.loads(rec.payload)["stream"]
            out.setdefault(name, []).append(rec.payload)
    return out


def check_sequences(by_stream: dict[str, list[bytes]]) -> dict[str, int]:
    """Breaks in trade ids, depth U/u chains and bookTicker u order, per stream (0 = clean)."""
    breaks: dict[str, int] = {}
    for name, payloads in by_stream.items():
        prev = -1
        n = 0
        for p in payloads:
            d = orjson.loads(p)["data"]
            if name.endswith("@trade"):
                lo = hi = int(d["t"])
                ok = prev < 0 or lo == prev + 1
            elif "@depth" in name:
                lo, hi = int(d["U"]), int(d["u"])
                ok = prev < 0 or lo == prev + 1
            else:
                lo = hi = int(d["u"])
                ok = hi > prev
            n += 0 if ok else 1
            prev = hi
        breaks[name] = n
    return breaks


__all__ = [
    "SPOT",
    "check_sequences",
    "messages_by_stream",
    "read_stream",
    "running_collector",
    "settings_for",
    "wait_until",
]
