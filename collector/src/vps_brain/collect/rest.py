"""REST depth snapshots under one shared weight budget, honouring 429/418 and Retry-After.

* :class:`WeightBudget`: a token bucket of ``weight_per_minute`` shared by every call of the
  process to one venue's REST host (spot 6000/min per IP, futures 2400), plus a pause set by
  that host's 429/418 answers. Each venue has its own budget: a resync storm on one never
  starves another.
* :class:`SnapshotFetcher`: one in-flight request per symbol; each resync first sleeps a random
  delay (``resync_jitter_s``) so a reconnect of many symbols never becomes a request storm.
  Transient errors (network, 5xx, 429/418) retry with :class:`vps_brain.backoff.Backoff`, never
  giving up; a permanent answer (:func:`vps_brain.backoff.is_permanent_status`, e.g. 400
  ``{"code": -1121, "msg": "Invalid symbol."}``) stops snapshots for that symbol for the life of
  the process: one ERROR line, ``vps_brain_collector_permanent_errors_total`` +1, and the other
  symbols go on (its websocket streams are still recorded, without a snapshot).
* :func:`report_permanent` is that ERROR line and metric, for REST and websocket alike.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from collections.abc import Callable

import aiohttp
import orjson
from prometheus_client import CollectorRegistry, Counter

from vps_brain.backoff import Backoff, is_permanent_status
from vps_brain.collect.stats import CollectorStats

log = logging.getLogger("vps_brain.collect.rest")

_permanent_counters: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = (
    weakref.WeakKeyDictionary()
)


def permanent_errors(stats: CollectorStats) -> Counter:
    """``vps_brain_collector_permanent_errors_total{source, target}`` in ``stats.registry``."""
    counter = _permanent_counters.get(stats.registry)
    if counter is None:
        counter = _permanent_counters[stats.registry] = Counter(
            "vps_brain_collector_permanent_errors",
            "Requests the exchange refused for good: stopped, not retried",
            ["source", "target"],
            registry=stats.registry,
        )
    return counter


def report_permanent(stats: CollectorStats, source: str, targets: list[str], message: str) -> None:
    """One ERROR line for a permanent refusal, and the metric +1 for each stopped target."""
    log.error(message, extra={"fields": {"source": source, "targets": targets}})
    counter = permanent_errors(stats)
    for target in targets:
        counter.labels(source, target).inc()


class Refused(Exception):
    """The exchange answered with a permanent status: the same request will never succeed."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


def error_detail(body: bytes) -> str:
    """Binance's ``{"code": -1121, "msg": "Invalid symbol."}`` as ``-1121 Invalid symbol.``."""
    try:
        err = orjson.loads(body)
    except orjson.JSONDecodeError:
        err = None
    if isinstance(err, dict) and "code" in err:
        return f"{err['code']} {err.get('msg', '')}".strip()
    return body[:200].decode(errors="replace")


class WeightBudget:
    """Token bucket of request weight per minute with a global pause (Retry-After)."""

    def __init__(self, weight_per_minute: int) -> None:
        self.capacity = float(weight_per_minute)
        self.tokens = float(weight_per_minute)
        self.rate = weight_per_minute / 60.0
        self.stamp = time.monotonic()
        self.paused_until = 0.0
        self._lock = asyncio.Lock()

    def observe_used(self, used: int) -> None:
        """Align with the exchange's count (``X-MBX-USED-WEIGHT-1M``) when it is higher."""
        self.tokens = min(self.tokens, max(0.0, self.capacity - used))

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    async def acquire(self, weight: int) -> None:
        async with self._lock:  # FIFO: requests are served in order
            while True:
                now = time.monotonic()
                if now < self.paused_until:
                    await asyncio.sleep(self.paused_until - now)
                    continue
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= weight:
                    self.tokens -= weight
                    return
                await asyncio.sleep((weight - self.tokens) / self.rate)


class SnapshotFetcher:
    """Fetches depth snapshots for symbols on request; delivers bodies to ``on_snapshot``."""

    def __init__(
        self,
        exchange: str,
        depth_url: str,
        limit: int,
        *,
        # The venue's weight of one request, and its budget, shared with its other markets.
        weight: int,
        budget: WeightBudget,
        stats: CollectorStats,
        # The router: takes a snapshot, says whether one is still wanted.
        on_snapshot: Callable[[str, int, bytes], bool],
        still_wanted: Callable[[str], bool],
        # Timing of a request and of its retries.
        jitter_s: float = 0.5,
        timeout_s: float = 10.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.exchange = exchange
        self.depth_url = depth_url
        self.limit = limit
        self.weight = weight
        self.budget = budget
        self.stats = stats
        self.on_snapshot = on_snapshot
        self.still_wanted = still_wanted
        self.jitter_s = jitter_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.backoff_max_s = backoff_max_s
        self.inflight: dict[str, asyncio.Task[None]] = {}
        #: Symbols the exchange refused for good (symbol -> why): never requested again.
        self.refused: dict[str, str] = {}
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        for t in self.inflight.values():
            t.cancel()
        await asyncio.gather(*self.inflight.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def request(self, symbol: str) -> None:
        if symbol in self.inflight or symbol in self.refused:
            return  # the pending fetch is validated against the newest first U
        self.inflight[symbol] = asyncio.get_running_loop().create_task(
            self._fetch(symbol), name=f"snapshot-{symbol}"
        )

    async def _fetch(self, symbol: str) -> None:
        try:
            errors = Backoff(0.2, self.backoff_max_s)
            too_old = Backoff(0.05, 2.0)
            await asyncio.sleep(random.uniform(0, self.jitter_s))
            while self.still_wanted(symbol):
                try:
                    body = await self._get(symbol)
                except Refused as exc:
                    self.refused[symbol] = str(exc)
                    report_permanent(
                        self.stats,
                        "rest",
                        [symbol],
                        f"REST depth snapshot of {symbol.upper()} refused for good ({exc}): "
                        f"no more snapshot requests for it; its streams are still recorded",
                    )
                    return
                if body is None:
                    await asyncio.sleep(errors.next())
                    continue
                errors.reset()
                if self.on_snapshot(symbol, time.time_ns(), body):
                    return
                # too old: the stream is ahead; wait a little for the REST side to catch up
                await asyncio.sleep(too_old.next())
        finally:
            self.inflight.pop(symbol, None)

    async def _get(self, symbol: str) -> bytes | None:
        """The snapshot body; None after a transient failure; raises :class:`Refused`."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        await self.budget.acquire(self.weight)
        self.stats.rest_requests[self.exchange] += 1
        try:
            async with self._session.get(
                self.depth_url, params={"symbol": symbol.upper(), "limit": str(self.limit)}
            ) as resp:
                body = await resp.read()
                used = resp.headers.get("X-MBX-USED-WEIGHT-1M", "")
                if used.isdigit():
                    self.budget.observe_used(int(used))
                if resp.status in (429, 418):
                    self.stats.rest_429[self.exchange] += 1
                    retry = resp.headers.get("Retry-After", "")
                    wait = float(retry) if retry.replace(".", "", 1).isdigit() else 60.0
                    self.budget.pause(wait + random.uniform(0, self.jitter_s))
                    log.warning(
                        "REST %d for %s: pausing REST to %s for %.1fs",
                        resp.status,
                        symbol,
                        self.depth_url,
                        wait,
                    )
                    return None
                if resp.status != 200 and is_permanent_status(resp.status):
                    raise Refused(resp.status, error_detail(body))
                if resp.status != 200:
                    log.warning("REST %d for %s: %s", resp.status, symbol, body[:200])
                    return None
                return body
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("REST snapshot of %s failed: %s", symbol, exc)
            return None
