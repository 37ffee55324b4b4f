"""REST depth snapshots under one shared weight budget, honouring 429/418 and Retry-After.

* :class:`WeightBudget`: a token bucket of ``weight_per_minute`` (Binance: 6000/min per IP) shared
  by every call of the process, plus a global pause set by 429/418 answers.
* :class:`SnapshotFetcher`: one in-flight request per symbol; each resync first sleeps a random
  delay (``resync_jitter_s``) so a reconnect of many symbols never becomes a request storm;
  errors retry with capped, jittered backoff, never giving up.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

import aiohttp

from vps_brain.collect.stats import CollectorStats

log = logging.getLogger("vps_brain.collect.rest")


def depth_weight(limit: int) -> int:
    """Request weight of GET /api/v3/depth for ``limit`` (shared/BINANCE.md)."""
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


def backoff(attempt: int, base: float, cap: float) -> float:
    """Full-jitter exponential backoff: uniform(0, min(cap, base * 2**attempt))."""
    return random.uniform(0, min(cap, base * (2 ** min(attempt, 30))))


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
        rest_url: str,
        limit: int,
        budget: WeightBudget,
        stats: CollectorStats,
        on_snapshot: Callable[[str, int, bytes], bool],
        still_wanted: Callable[[str], bool],
        jitter_s: float = 0.5,
        timeout_s: float = 10.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.limit = limit
        self.budget = budget
        self.stats = stats
        self.on_snapshot = on_snapshot
        self.still_wanted = still_wanted
        self.jitter_s = jitter_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.backoff_max_s = backoff_max_s
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        for t in self.inflight.values():
            t.cancel()
        await asyncio.gather(*self.inflight.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def request(self, symbol: str) -> None:
        if symbol in self.inflight:
            return  # the pending fetch is validated against the newest first U
        self.inflight[symbol] = asyncio.get_running_loop().create_task(
            self._fetch(symbol), name=f"snapshot-{symbol}"
        )

    async def _fetch(self, symbol: str) -> None:
        try:
            attempt = 0
            await asyncio.sleep(random.uniform(0, self.jitter_s))
            while self.still_wanted(symbol):
                body = await self._get(symbol)
                if body is None:
                    await asyncio.sleep(backoff(attempt, 0.2, self.backoff_max_s))
                    attempt += 1
                    continue
                if self.on_snapshot(symbol, time.time_ns(), body):
                    return
                # too old: the stream is ahead; wait a little for the REST side to catch up
                await asyncio.sleep(backoff(attempt, 0.05, 2.0))
                attempt += 1
        finally:
            self.inflight.pop(symbol, None)

    async def _get(self, symbol: str) -> bytes | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        await self.budget.acquire(depth_weight(self.limit))
        self.stats.rest_requests += 1
        url = f"{self.rest_url}/api/v3/depth"
        try:
            async with self._session.get(
                url, params={"symbol": symbol.upper(), "limit": str(self.limit)}
            ) as resp:
                body = await resp.read()
                used = resp.headers.get("X-MBX-USED-WEIGHT-1M", "")
                if used.isdigit():
                    self.budget.observe_used(int(used))
                if resp.status in (429, 418):
                    self.stats.rest_429 += 1
                    retry = resp.headers.get("Retry-After", "")
                    wait = float(retry) if retry.replace(".", "", 1).isdigit() else 60.0
                    self.budget.pause(wait + random.uniform(0, self.jitter_s))
                    log.warning(
                        "REST %d for %s: pausing all REST for %.1fs", resp.status, symbol, wait
                    )
                    return None
                if resp.status != 200:
                    log.warning("REST %d for %s: %s", resp.status, symbol, body[:200])
                    return None
                return body
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("REST snapshot of %s failed: %s", symbol, exc)
            return None
