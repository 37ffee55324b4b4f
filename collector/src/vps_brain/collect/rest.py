"""REST depth snapshots under one shared weight budget, honouring 429/418 and Retry-After.

* :class:`WeightBudget`: the weight per fixed minute (the exchange's window, not a sliding one)
  shared by every call of the process to one venue's REST host (spot 6000/min per IP, futures
  2400), aligned with the exchange's ``X-MBX-USED-WEIGHT-1M``, plus a pause set by that host's
  429/418 answers. Each venue has its own budget: a resync storm on one never starves another.
  Waiting requests are served in :class:`SyncOrder`: the configured priority, then the busiest
  books, then the order of the settings.
* :class:`SnapshotFetcher`: one in-flight request per symbol at its own depth limit (``limits``,
  else ``limit``; weight by the venue's table); each resync first sleeps a random
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
import contextlib
import itertools
import logging
import random
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

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


#: A waiting request's rank: lower is served first (:class:`SyncOrder` makes them).
Rank = tuple[int, ...]


@dataclass(eq=False)
class _Waiter:
    weight: int
    rank: Callable[[], Rank]
    seq: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class WeightBudget:
    """Request weight per fixed window of the exchange's clock, served by rank, with a pause.

    Binance counts weight per fixed minute, not per sliding one: "a 1 MINUTE interval starts
    every minute. Request submitted at 00:01:23.456 counts towards the 00:01:00 minute's limit.
    Once the 00:02:00 minute starts, the count will reset to zero again"
    (developers.binance.com/docs/binance-spot-api-docs/websocket-api/rate-limits; REST reports
    the count as ``X-MBX-USED-WEIGHT-1M``). A token bucket that starts full and refills
    continuously can spend a whole minute's weight at once and then its refill within the same
    minute: up to twice the limit. Invariants of this budget:

    * the weight granted in any window (``window_s``, aligned on the epoch as the exchange's
      minutes are) never exceeds ``limit``; a grant made within ``guard_s`` of a window's edge
      counts in the neighbouring window too (the request may arrive after the edge, or the
      exchange's clock may differ from ours by that much);
    * the exchange's own count, ``X-MBX-USED-WEIGHT-1M`` (:meth:`observe_used`), raises the
      window's count: weight used by other REST users of the same IP is respected, and
      ``limit`` (``rest_weight_per_minute``) caps our share;
    * waiting requests are served lowest rank first (ties: in arrival order), each rank read
      when a grant is due, so a book that became busy while waiting moves up;
    * :meth:`pause` (Retry-After of a 429/418, and the start's gathering) holds every grant.
    """

    def __init__(self, limit: int, *, window_s: float = 60.0, guard_s: float | None = None) -> None:
        self.limit = limit
        self.window_s = window_s
        #: Default: 2 s of a minute, at least 0.1 s, at most a quarter of the window.
        self.guard_s = (
            guard_s if guard_s is not None else min(max(window_s / 30, 0.1), window_s / 4)
        )
        self.paused_until = 0.0  # time.monotonic()
        #: window index (epoch seconds // window_s) -> weight counted in it
        self.used: dict[int, int] = {}
        self.granted = 0  # weight granted in all
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()

    def _windows(self, now: float) -> range:
        """The windows a grant at wall time ``now`` may be counted in."""
        w = self.window_s
        return range(int((now - self.guard_s) // w), int((now + self.guard_s) // w) + 1)

    def observe_used(self, used: int, sent_at: float | None = None) -> None:
        """Align with the exchange's count (``X-MBX-USED-WEIGHT-1M``) when it is higher.

        ``sent_at`` (wall time of the request): an answer that comes back in another window
        than the request went out in is ignored, as it may count either window.
        """
        k = int(time.time() // self.window_s)
        if sent_at is not None and int(sent_at // self.window_s) != k:
            return
        self.used[k] = max(self.used.get(k, 0), used)

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)
        self._wake_head()

    def _delay(self, weight: int) -> float:
        """Seconds until ``weight`` may be granted (0: now)."""
        mono = time.monotonic()
        if mono < self.paused_until:
            return self.paused_until - mono
        now = time.time()
        full = [k for k in self._windows(now) if self.used.get(k, 0) + weight > self.limit]
        if not full:
            return 0.0
        # until the last full window is out of reach of the guard
        return max(0.001, (max(full) + 1) * self.window_s + self.guard_s - now)

    def _charge(self, weight: int) -> None:
        now = time.time()
        windows = self._windows(now)
        for k in windows:
            self.used[k] = self.used.get(k, 0) + weight
        for k in [k for k in self.used if k < windows.start - 1]:
            del self.used[k]
        self.granted += weight

    def _head(self) -> _Waiter | None:
        if not self._waiters:
            return None
        return min(self._waiters, key=lambda w: (w.rank(), w.seq))

    def _wake_head(self) -> None:
        head = self._head()
        if head is not None:
            head.wake.set()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, weight: int, rank: Callable[[], Rank] = tuple) -> None:
        """Wait until ``weight`` fits the window and no waiter of a lower rank is ahead."""
        me = _Waiter(weight, rank, next(self._seq))
        self._waiters.append(me)
        try:
            while True:
                delay: float | None = None
                head = self._head()
                if head is me:
                    delay = self._delay(weight)
                    if delay <= 0:
                        self._waiters.remove(me)
                        self._charge(weight)
                        self._wake_head()
                        return
                elif head is not None:
                    # ranks move: the head may be one that slept as a non-head; it decides now
                    head.wake.set()
                me.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(me.wake.wait(), delay)
        except BaseException:
            if me in self._waiters:
                self._waiters.remove(me)
                self._wake_head()
            raise


class SyncOrder:
    """The order books sync in: ``priority`` first (in its order), then hot first, then config.

    "Hot" is the depth diffs seen so far for the symbol (``seen``, read when a grant is due):
    the busiest book first, the one a strategy most likely trades. Ranks of different markets
    sharing a budget compare the same way.
    """

    def __init__(self, symbols: list[str], priority: list[str], seen: Callable[[str], int]) -> None:
        self.first = {s: i for i, s in enumerate(priority)}
        self.position = {s: i for i, s in enumerate(symbols)}
        self.seen = seen

    def rank(self, symbol: str) -> Rank:
        first = self.first.get(symbol)
        if first is not None:
            return (0, first, 0)
        return (1, -self.seen(symbol), self.position.get(symbol, 0))


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
        # Per-symbol depth limits (others take ``limit``), their weights, and the sync order.
        limits: Mapping[str, int] | None = None,
        weight_of: Callable[[int], int] | None = None,
        order: SyncOrder | None = None,
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
        self.limits = dict(limits or {})
        self.weight_of = weight_of or (lambda _limit: weight)
        self.order = order
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

    def limit_of(self, symbol: str) -> int:
        """The depth limit of ``symbol``'s snapshots."""
        return self.limits.get(symbol, self.limit)

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
        limit = self.limit_of(symbol)
        order = self.order
        if order is None:
            await self.budget.acquire(self.weight_of(limit))
        else:
            await self.budget.acquire(self.weight_of(limit), lambda: order.rank(symbol))
        self.stats.rest_requests[self.exchange] += 1
        sent_at = time.time()
        try:
            async with self._session.get(
                self.depth_url, params={"symbol": symbol.upper(), "limit": str(limit)}
            ) as resp:
                body = await resp.read()
                used = resp.headers.get("X-MBX-USED-WEIGHT-1M", "")
                if used.isdigit():
                    self.budget.observe_used(int(used), sent_at)
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
