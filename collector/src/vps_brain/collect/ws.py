"""Websocket connections: combined streams, reconnect with backoff, renewal before the 24 h cut.

A :class:`Slot` serves one group of streams (:func:`group_streams`: at most the venue's 1024 and a
subscription URL of at most ``max_url_bytes``; a symbol's streams stay on one connection where
they fit). The subscriptions stay in the URL rather than in ``SUBSCRIBE`` messages: a connection
then delivers every stream of its group from its first frame (a renewal's overlap and a
reconnect's take-over hold for all of them at once), and nothing we send competes with the pongs
for the venue's 5 incoming messages a second (a ``SUBSCRIBE`` refused or lost would leave
streams silently unsubscribed). The price is more connections: with a bound of 8,000 bytes a
connection carries about 420 streams (a name and its ``/`` are about 19 bytes for symbols
of 8 characters), so a whole spot market of 1,500 symbols x 3 streams takes 11 connections, far
below the venue's 300 attempts per 5 minutes even when all of them reconnect at once.

Every connection attempt (first open, reconnect, renewal, bisection probe) first waits for the
venue's :class:`ConnectionPacer` (at most ``attempts`` per sliding ``window_s``, shared by the
collector's slots of that venue). Renewals are planned by one :class:`RenewalSchedule` for the
whole collector: no two renewals start within ``renew_stagger_s`` of each other (60 s: never two
in the same minute); a renewal comes earlier than ``renew_after_s`` rather than close to
another, so it stays within the venue's lifetime. A connection's fault (drop, refusal, idle)
touches only its slot's streams: each slot reconnects on its own and the router marks the gap
of those streams only.

A :class:`Slot` keeps one
live connection; when that connection drops it reconnects with capped, jittered backoff
(:class:`vps_brain.backoff.Backoff`, never giving up on a transient error) and the new connection
takes the streams over at once (the router records any gap).

A handshake refused with a permanent status (400 for an unknown stream: retrying cannot heal it)
is not retried: the slot bisects its streams with probe handshakes (about 2 log2(n) for each bad
stream) to find the ones refused on their own, stops those for good (one ERROR line,
``vps_brain_collector_permanent_errors_total{source="ws"}`` +1 each) and goes on with the rest. A
slot left with no stream idles until the collector stops; the other slots never notice.
When the connection reaches ``renew_after_s`` the slot opens a second connection on the same
streams and hands each stream over once the two overlap (see :mod:`vps_brain.collect.router`),
then closes the old one: a renewal leaves neither a gap nor a duplicate.

Pings are answered by the read loop (the pong carries the ping's payload); a connection
silent for ``idle_timeout_s`` (no message, no ping) is presumed dead and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

import aiohttp
import yarl

from vps_brain.backoff import Backoff, is_permanent_status
from vps_brain.collect.rest import report_permanent
from vps_brain.collect.router import Router
from vps_brain.collect.stats import CollectorStats

log = logging.getLogger("vps_brain.collect.ws")

_conn_ids = itertools.count(1)


def group_streams(
    streams: list[str], *, per_connection: int, prefix_bytes: int, max_url_bytes: int
) -> list[list[str]]:
    """Streams in groups of at most ``per_connection`` whose URL stays within ``max_url_bytes``.

    The URL of a group is ``prefix_bytes`` (path and ``?streams=``) plus the names joined by
    ``/``. A symbol's streams go to one group when they fit in an empty one (else they fill the
    groups in turn); groups keep the order of ``streams``.
    """
    budget = max_url_bytes - prefix_bytes
    bundles: dict[str, list[str]] = {}
    for name in streams:
        bundles.setdefault(name.split("@", 1)[0], []).append(name)
    groups: list[list[str]] = []
    group: list[str] = []
    size = 0
    for bundle in bundles.values():
        extra = sum(len(n) + 1 for n in bundle)
        fits_alone = len(bundle) <= per_connection and extra - 1 <= budget
        if (
            fits_alone
            and group
            and (len(group) + len(bundle) > per_connection or size + extra > budget)
        ):
            groups.append(group)
            group, size = [], 0
        for name in bundle:  # a bundle too large for any group fills the groups in turn
            cost = len(name) + (1 if group else 0)
            if group and (len(group) + 1 > per_connection or size + cost > budget):
                groups.append(group)
                group, size, cost = [], 0, len(name)
            if cost > budget:
                raise ValueError(f"stream {name} alone makes a URL over {max_url_bytes} bytes")
            group.append(name)
            size += cost
    if group:
        groups.append(group)
    return groups


def url_prefix_bytes(url: str) -> int:
    """Bytes of ``url``'s path and query as sent in the request line."""
    return len(yarl.URL(url).raw_path_qs)


class ConnectionPacer:
    """At most ``attempts`` connection attempts in any ``window_s`` (one per venue and IP).

    A sliding window is at least as strict as the exchange's count, whatever its window's
    alignment; the window is lengthened by ``guard_s`` (a twentieth, at most 1 s) so that an
    attempt that takes longer to arrive cannot make the exchange see one more.
    """

    def __init__(self, attempts: int, window_s: float) -> None:
        self.attempts = attempts
        self.window_s = window_s + min(1.0, window_s / 20)
        self.times: deque[float] = deque()
        #: attempts made so far, and how many had to wait
        self.made = 0
        self.delayed = 0

    async def wait(self) -> None:
        waited = False
        while True:
            now = time.monotonic()
            times = self.times
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if len(times) < self.attempts:
                times.append(now)
                self.made += 1
                self.delayed += waited
                return
            waited = True
            await asyncio.sleep(times[0] + self.window_s - now + 0.001)


class RenewalSchedule:
    """When each slot renews: at its connection's ``renew_after_s`` or earlier, never within
    ``stagger_s`` of another slot's renewal (one schedule per collector).

    Invariants: renewals of different slots are planned at least ``stagger_s`` apart (a
    renewal starts at its plan, give or take the event loop's lag); a connection renews no
    earlier than ``renew_after_s - spread_s`` and no later than ``renew_after_s + spread_s``
    after it opened, ``spread_s`` being (slots - 1) x ``stagger_s`` (the collector checks that
    this fits within the venue's lifetime). A renewal forced by a ``serverShutdown`` notice
    starts at once and is not planned.
    """

    def __init__(self, stagger_s: float, slots: int = 1) -> None:
        self.stagger_s = stagger_s
        self.spread_s = max(0, slots - 1) * stagger_s
        #: slot index -> planned renewal (time.monotonic())
        self.planned: dict[int, float] = {}
        #: (slot, plan) of renewals started within the last ``stagger_s``
        self.recent: deque[tuple[int, float]] = deque()

    def _clashes(self, slot: int, t: float) -> list[float]:
        """Other slots' renewals (planned, or started lately) within the stagger of ``t``."""
        near = self.stagger_s - 1e-6  # t = r - stagger must not clash with r by rounding
        others = [r for i, r in (*self.planned.items(), *self.recent) if i != slot]
        return [r for r in others if abs(t - r) < near]

    def plan(self, slot: int, target: float, earliest: float) -> float:
        """A renewal time for ``slot``: the latest at or before ``target`` (and not before
        ``earliest``) clear of the others; if there is none, the first clear one after."""
        self.planned.pop(slot, None)
        while self.recent and self.recent[0][1] < earliest - self.stagger_s:
            self.recent.popleft()
        t = target
        while clash := self._clashes(slot, t):
            t = min(clash) - self.stagger_s
        if t < earliest - 1e-6:
            t = target
            while clash := self._clashes(slot, t):
                t = max(clash) + self.stagger_s
            if t > target + 0.001:
                log.warning(
                    "slot %d: renewal %.1fs later than planned to keep the stagger",
                    slot,
                    t - target,
                )
        self.planned[slot] = t
        return t

    def start(self, slot: int) -> float | None:
        """``slot``'s planned renewal starts now; returns its plan (None: it had none)."""
        at = self.planned.pop(slot, None)
        if at is not None:
            self.recent.append((slot, at))
        return at

    def drop(self, slot: int) -> None:
        """``slot``'s plan is void (its connection was lost, or the slot stops)."""
        self.planned.pop(slot, None)


class Connection:
    """One websocket: reads frames into the router until it closes."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse[bool],
        cid: int,
        *,
        router: Router,
        wait_room: Callable[[], Awaitable[None]],
        idle_timeout_s: float,
    ) -> None:
        self.ws = ws
        self.id = cid
        self.router = router
        self.wait_room = wait_room
        self.idle_timeout_s = idle_timeout_s
        self.opened = time.monotonic()
        self.last_activity = self.opened
        self.closed = asyncio.Event()
        self.reason = ""
        self.task: asyncio.Task[None] | None = None

    async def read(self) -> None:
        on_frame = self.router.on_frame
        ws = self.ws
        receive = ws.receive
        text = aiohttp.WSMsgType.TEXT
        ping = aiohttp.WSMsgType.PING
        monotonic = time.monotonic
        time_ns = time.time_ns
        router = self.router
        watchdog = asyncio.create_task(self._watchdog())
        try:
            while True:
                msg = await receive()  # no per-message timeout: the watchdog handles silence
                self.last_activity = monotonic()
                if msg.type is text:
                    on_frame(self.id, time_ns(), msg.data)
                    if router.backpressure:
                        await self.wait_room()
                elif msg.type is ping:
                    await ws.pong(msg.data)  # the pong copies the ping's payload
                elif msg.type is aiohttp.WSMsgType.PONG:
                    continue
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    router.quarantine(time_ns(), msg.data, "binary_frame")
                else:
                    if msg.type is aiohttp.WSMsgType.ERROR:
                        self.reason = f"error: {msg.data}"
                    elif self.reason == "":
                        self.reason = f"closed by server ({ws.close_code})"
                    break
        except (aiohttp.ClientError, ConnectionError) as exc:
            self.reason = f"error: {exc}"
        finally:
            watchdog.cancel()
            self.closed.set()
            with contextlib.suppress(Exception):
                await ws.close()

    async def _watchdog(self) -> None:
        """Close the connection when nothing (not even a ping) arrived for idle_timeout_s."""
        while True:
            idle = time.monotonic() - self.last_activity
            if idle >= self.idle_timeout_s:
                self.reason = f"idle for {idle:.1f}s"
                await self.ws.close()
                return
            await asyncio.sleep(min(1.0, self.idle_timeout_s - idle + 0.01))

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        with contextlib.suppress(Exception):
            await self.ws.close()
        self.closed.set()


class Slot:
    """One group of streams and its connection lifecycle."""

    def __init__(
        self,
        index: int,
        ws_url: str,
        *,
        streams: list[str],
        # Shared with the other slots.
        router: Router,
        stats: CollectorStats,
        session: aiohttp.ClientSession,
        wait_room: Callable[[], Awaitable[None]],
        # Shared pacing of connection attempts (the venue's) and plan of renewals (the collector's).
        pacer: ConnectionPacer,
        schedule: RenewalSchedule,
        # Renewal before the exchange's 24 h cut.
        renew_after_s: float,
        renew_overlap_s: float,
        # Reconnection and liveness.
        reconnect_min_s: float,
        reconnect_max_s: float,
        idle_timeout_s: float,
        max_msg_size: int,
    ) -> None:
        self.index = index
        self.base_url = ws_url.rstrip("/") + "/stream?streams="
        self.streams = list(streams)
        #: Streams the exchange refused for good (never subscribed again).
        self.refused: list[str] = []
        self.router = router
        self.stats = stats
        self.session = session
        self.wait_room = wait_room
        self.pacer = pacer
        self.schedule = schedule
        #: The plan (time.monotonic()) of each renewal started, in order: the stagger shows here.
        self.renewals_planned_at: list[float] = []
        self.renew_after_s = renew_after_s
        self.renew_overlap_s = renew_overlap_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.idle_timeout_s = idle_timeout_s
        self.max_msg_size = max_msg_size
        self.current: Connection | None = None
        self._switched: dict[int, asyncio.Event] = {}
        self._refusal = ""
        self._renew_now = asyncio.Event()

    @property
    def url(self) -> str:
        return self.base_url + "/".join(self.streams)

    @property
    def symbols(self) -> list[str]:
        return list(dict.fromkeys(s.split("@", 1)[0] for s in self.streams))

    def _control(self, event: str, **extra: object) -> None:
        self.router.control(
            self.symbols, time.time_ns(), {"event": event, "slot": self.index, **extra}
        )

    async def _open(self) -> Connection | None:
        """A connection on the slot's streams; None once the exchange refused every one of them.

        Transient failures are retried with backoff inside :meth:`_connect`; a permanent refusal
        drops the streams refused on their own (:meth:`_refused`) and tries again with the rest.
        """
        while self.streams:
            ws = await self._connect(self.streams)
            if ws is not None:
                return Connection(
                    ws,
                    next(_conn_ids),
                    router=self.router,
                    wait_room=self.wait_room,
                    idle_timeout_s=self.idle_timeout_s,
                )
            refused = await self._refused(self.streams)
            if not refused:
                refused = list(self.streams)  # refused together only: nothing tells which
            self.streams = [s for s in self.streams if s not in refused]
            self.refused.extend(refused)
            report_permanent(
                self.stats,
                "ws",
                refused,
                f"slot {self.index}: the exchange refused stream(s) {', '.join(refused)} "
                f"({self._refusal}): stopped for good, not retried; "
                f"{len(self.streams)} other stream(s) of this slot go on",
            )
        return None

    async def _connect(self, streams: list[str]) -> aiohttp.ClientWebSocketResponse[bool] | None:
        """A websocket on ``streams``, retrying transient failures; None if refused for good."""
        backoff = Backoff(self.reconnect_min_s, self.reconnect_max_s)
        attempt = 0
        while True:
            await self.pacer.wait()
            try:
                return await self.session.ws_connect(
                    self.base_url + "/".join(streams),
                    autoping=False,
                    max_msg_size=self.max_msg_size,
                    decode_text=False,
                    compress=0,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
                )
            except aiohttp.WSServerHandshakeError as exc:
                if is_permanent_status(exc.status):
                    self._refusal = f"handshake answered HTTP {exc.status}"
                    return None
                why: BaseException = exc
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                why = exc
            delay = backoff.next()
            level = (
                logging.WARNING if attempt in (0, 5, 20) or attempt % 100 == 0 else logging.DEBUG
            )
            log.log(level, "slot %d: connect failed (%s); retry in %.2fs", self.index, why, delay)
            attempt += 1
            await asyncio.sleep(delay)

    async def _refused(self, streams: list[str]) -> list[str]:
        """The streams of a refused group that the exchange refuses on their own (bisection)."""
        if len(streams) == 1:
            return list(streams)
        mid = len(streams) // 2
        out: list[str] = []
        for part in (streams[:mid], streams[mid:]):
            probe = await self._connect(part)
            if probe is None:
                out.extend(await self._refused(part))
            else:
                await probe.close()
        return out

    def _start(self, conn: Connection) -> None:
        conn.task = asyncio.create_task(conn.read(), name=f"ws-{conn.id}")

    def on_switched(self, cid: int) -> None:
        """Router callback: every stream of successor ``cid`` has been handed over."""
        ev = self._switched.get(cid)
        if ev is not None:
            ev.set()

    def on_server_shutdown(self, cid: int) -> None:
        """Router callback: connection ``cid`` announced a shutdown: renew it now."""
        if self.current is not None and self.current.id == cid:
            log.warning("slot %d: serverShutdown on connection %d: renewing", self.index, cid)
            self._renew_now.set()

    async def run(self) -> None:
        conn = await self._open()
        if conn is None:
            await self._idle_forever()
            return
        self.router.take_over(conn.id, self.streams)
        self._control("connection_opened", conn=conn.id, streams=len(self.streams))
        self._start(conn)
        self.current = conn
        log.info("slot %d: connected (%d streams)", self.index, len(self.streams))
        try:
            while True:
                now = time.monotonic()
                target = conn.opened + self.renew_after_s
                at = self.schedule.plan(
                    self.index, target, max(now, target - self.schedule.spread_s)
                )
                wait = max(0.0, at - now)
                closed = asyncio.ensure_future(conn.closed.wait())
                renew = asyncio.ensure_future(self._renew_now.wait())
                try:
                    await asyncio.wait(
                        [closed, renew], timeout=wait, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    closed.cancel()
                    renew.cancel()
                forced = self._renew_now.is_set()
                self._renew_now.clear()
                if conn.closed.is_set():
                    self.schedule.drop(self.index)
                    self.stats.reconnects += 1
                    log.warning("slot %d: connection %d lost: %s", self.index, conn.id, conn.reason)
                    self._control("connection_closed", conn=conn.id, reason=conn.reason)
                    self.current = None
                    reopened = await self._open()
                    if reopened is None:
                        await self._idle_forever()
                        return
                    conn = reopened
                    self.router.take_over(conn.id, self.streams)
                    self._control("connection_opened", conn=conn.id, streams=len(self.streams))
                    self._start(conn)
                    self.current = conn
                    continue
                if forced:  # serverShutdown: at once, not planned
                    self.schedule.drop(self.index)
                else:
                    self.renewals_planned_at.append(self.schedule.start(self.index) or now)
                renewed = await self._renew(conn)
                if renewed is None:
                    self.current = None
                    await self._idle_forever()
                    return
                conn = self.current = renewed
        finally:
            self.schedule.drop(self.index)
            if self.current is not None:
                await self.current.close()

    async def _idle_forever(self) -> None:
        """Every stream was refused: stay until cancelled (a slot ending stops the collector)."""
        log.info("slot %d: no stream left to collect: idle until the collector stops", self.index)
        await asyncio.Event().wait()

    async def _renew(self, old: Connection) -> Connection | None:
        """Open a successor, hand the streams over, close ``old``; returns the successor."""
        new = await self._open()
        if new is None:
            await old.close()
            return None
        switched = self._switched[new.id] = asyncio.Event()
        self.router.begin_successor(new.id, self.streams)
        self._start(new)
        self._control("connection_renewing", old=old.id, new=new.id)
        waiters = [
            asyncio.ensure_future(switched.wait()),
            asyncio.ensure_future(old.closed.wait()),
            asyncio.ensure_future(new.closed.wait()),
        ]
        try:
            await asyncio.wait(
                waiters, timeout=self.renew_overlap_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for w in waiters:
                w.cancel()
        self.router.force_switch(new.id)
        del self._switched[new.id]
        self.stats.renewals += 1
        self._control("connection_renewed", old=old.id, new=new.id)
        log.info("slot %d: connection %d renewed by %d", self.index, old.id, new.id)
        await old.close()
        return new
