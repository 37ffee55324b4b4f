"""The fake Binance server: combined-stream websockets and the REST depth snapshot, per venue.

The venue is ``VENUES[settings.venue]`` (:mod:`vps_brain.venues`); endpoints are Binance's:

* websocket ``GET /stream?streams=a/b/c`` on a venue without routes (spot, COIN-M). On a venue
  with routes (USD-M) ``GET /public/stream``, ``GET /market/stream``, and ``GET /stream``, which
  is served as ``/public`` ("a connection with no routed path only receives /public data").
  Each event arrives as ``{"stream":..,"data":..}``. A stream requested on a path that does not
  carry it (``venue.route_of(channel)`` is another path) is accepted in the handshake and never
  delivered, as Binance fails silently; the connection's stats count what it withheld
  (``unrouted``). The server pings every ``ping_interval_s`` of the settings and closes a
  connection that has not ponged for 3 intervals.
* ``GET <venue.depth_path>?symbol=ETHUSDT&limit=1000`` (``/api/v3/depth``, ``/fapi/v1/depth``,
  ``/dapi/v1/depth``): snapshot with ``lastUpdateId`` (futures: ``E``, ``T``; COIN-M: ``symbol``,
  ``pair``); a limit the venue does not take answers 400 ``{"code": -1100, ...}``; 429 with
  ``Retry-After`` when that fault is armed. ``X-MBX-USED-WEIGHT-1M`` carries the weight used in
  the current minute (``venue.depth_weight``). ``.../ping`` beside it answers ``{}``.

Limits, as Binance enforces them (figures from :mod:`vps_brain.venues`, overridable in
:class:`~vps_brain.config.FaultSettings` so a test can use small ones and run fast):

* REST weight per fixed window (``rest_window_s``, aligned on the epoch like Binance's minutes):
  a depth request that would take the window past ``rest_weight_limit`` (the venue's per minute)
  is answered 429 ``{"code": -1003}`` with ``Retry-After`` (seconds to the window's end) and is
  not served; ``rest_over_limit`` counts them.
* connection attempts: more than ``connection_limit`` websocket handshakes (the venue's 300)
  within any ``connection_window_s`` (5 minutes) are answered 429; ``connections_refused``
  counts them. Every handshake counts, refused or not.

Incoming messages: a client that sends more than ``venue.messages_per_second`` frames (text,
binary, ping, pong) within one second is disconnected ("too many messages"), as Binance does.
Pongs answering this server's own pings are not counted (at most one per ping): Binance pings
every 20 s or more, but tests compress the interval, and a collector that only answers pings
must never trip the limit.

Control endpoints for tests and the lab (not Binance):

* ``GET /_sim/stats``: counters as JSON (published per stream, sent per connection, faults).
* ``POST /_sim/fault/<name>`` with query parameters: ``drop`` (``?conn=<id>``: that one only),
  ``gap?stream=&count=``,
  ``malformed``, ``oversized?bytes=``, ``unknown``, ``shutdown`` (serverShutdown notice),
  ``rest429?count=``, ``cut?after_s=``.

Faults from :class:`~vps_brain.config.FaultSettings` apply to every connection; injected bad
frames (malformed, oversized, unknown stream) are *extra* frames, so the real sequence is intact.
A gap skips messages of one stream on one connection: on futures the next diff's ``pu`` then
names an ``u`` the connection never saw (the "pu break").
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from vps_brain.config import FaultSettings, SimulatorSettings
from vps_brain.sim.market import GeneratedMarket, Hub, Market, ReplayMarket, envelope, shapes_of
from vps_brain.venues import VENUES, Venue, VenueError

log = logging.getLogger("vps_brain.sim")

OUTBOX_MAX = 500_000  # a client this far behind is disconnected (Binance does the same)
#: The routed path that a connection on the bare ``/stream`` is served as.
DEFAULT_ROUTE = "/public"
TOO_MANY = "too many messages"
_COUNTED = (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING, WSMsgType.PONG)


@dataclass
class ConnStats:
    id: int
    streams: list[str]
    opened_at: float
    #: The path the client connected to (``/stream``, ``/public/stream``) and the route it got
    #: (``""`` on a venue without routes).
    path: str = "/stream"
    route: str = ""
    sent: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    injected: dict[str, int] = field(default_factory=dict)
    #: Streams accepted on a path that does not carry them: messages withheld, per stream.
    unrouted: dict[str, int] = field(default_factory=dict)
    pings: int = 0
    pongs: int = 0
    #: Frames the client sent (text, binary, ping, pong).
    received: int = 0
    closed_reason: str | None = None


class SimConnection:
    """One websocket client: an outbox fed by the hub, a sender task applying the faults."""

    def __init__(
        self,
        sim: Simulator,
        ws: web.WebSocketResponse,
        cid: int,
        streams: list[str],
        path: str = "/stream",
        route: str = "",
        unrouted: frozenset[str] = frozenset(),
    ):
        self.sim = sim
        self.ws = ws
        self.stats = ConnStats(
            cid, streams, time.monotonic(), path, route, unrouted=dict.fromkeys(sorted(unrouted), 0)
        )
        self.unrouted = unrouted
        self.delivered = [s for s in streams if s not in unrouted]
        self.outbox: deque[tuple[str, bytes]] = deque()
        self.wake = asyncio.Event()
        self.total_sent = 0
        self.skip: dict[str, int] = {}
        self.extra: deque[tuple[str, bytes]] = deque()  # injected bad frames
        self.close_reason: str | None = None
        f = sim.faults
        self.gap_armed = f.gap_after_messages > 0
        self.trade_gap_armed = f.trade_gap_after_messages > 0
        self.last_pong = time.monotonic()
        self.pings_owed = 0  # pings sent and not yet answered
        self.recent: deque[float] = (
            deque()
        )  # when the counted client frames of the last second came

    def deliver(self, stream: str, payload: bytes) -> None:
        if stream in self.unrouted:
            self.stats.unrouted[stream] += 1
            return
        self.outbox.append((stream, payload))
        if len(self.outbox) > OUTBOX_MAX:
            self.close("slow client")
        self.wake.set()

    def close(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
            self.stats.closed_reason = reason
        self.wake.set()

    def inject(self, kind: str, frame: bytes) -> None:
        self.extra.append((kind, frame))
        self.wake.set()

    def _periodic_faults(self) -> None:
        f = self.sim.faults
        n = self.total_sent
        if f.malformed_every and n % f.malformed_every == 0:
            self.extra.append(("malformed", b'{"stream":"' + self.stats.streams[0].encode() + b'"'))
        if f.oversized_every and n % f.oversized_every == 0:
            self.extra.append(
                ("oversized", oversized_frame(self.stats.streams[0], f.oversized_bytes))
            )
        if f.unknown_stream_every and n % f.unknown_stream_every == 0:
            self.extra.append(("unknown", envelope("zzzusdt@trade", b'{"e":"trade","t":1}')))
        if self.gap_armed and n >= f.gap_after_messages:
            self.gap_armed = False
            depth = next((s for s in self.delivered if "@depth" in s), None)
            if depth:
                self.skip[depth] = self.skip.get(depth, 0) + f.gap_size
        if self.trade_gap_armed and n >= f.trade_gap_after_messages:
            self.trade_gap_armed = False
            trade = next((s for s in self.delivered if s.endswith("@trade")), None)
            if trade:
                self.skip[trade] = self.skip.get(trade, 0) + f.gap_size

    async def send_loop(self) -> None:
        try:
            await self._send_loop()
        except (ConnectionError, RuntimeError) as exc:
            self.close(f"send failed: {exc}")

    async def _send_loop(self) -> None:
        ws = self.ws
        stats = self.stats
        f = self.sim.faults
        while self.close_reason is None:
            await self.wake.wait()
            self.wake.clear()
            while self.close_reason is None and (self.outbox or self.extra):
                while self.extra:
                    kind, frame = self.extra.popleft()
                    await ws.send_frame(frame, WSMsgType.TEXT)
                    stats.injected[kind] = stats.injected.get(kind, 0) + 1
                if not self.outbox:
                    break
                stream, payload = self.outbox.popleft()
                if self.skip.get(stream):
                    self.skip[stream] -= 1
                    stats.skipped[stream] = stats.skipped.get(stream, 0) + 1
                    continue
                await ws.send_frame(payload, WSMsgType.TEXT)
                stats.sent[stream] = stats.sent.get(stream, 0) + 1
                self.total_sent += 1
                self._periodic_faults()
                if f.drop_after_messages and self.total_sent >= f.drop_after_messages:
                    self.close("drop fault")
        await ws.close(code=1001, message=(self.close_reason or "closed").encode()[:120])

    async def ping_loop(self) -> None:
        interval = self.sim.ping_interval_s
        n = 0
        while self.close_reason is None:
            await asyncio.sleep(interval)
            if time.monotonic() - self.last_pong > 3 * interval:
                self.close("no pong")
                return
            n += 1
            self.pings_owed += 1  # before sending: the pong may be read before ping() returns
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.ping(str(n).encode())
                self.stats.pings += 1

    async def cut_loop(self) -> None:
        while self.close_reason is None:
            after = self.sim.faults.close_after_s
            if after <= 0:
                await asyncio.sleep(0.05)
                continue
            left = after - (time.monotonic() - self.stats.opened_at)
            if left <= 0:
                self.close("24h cut")
                return
            await asyncio.sleep(min(left, 0.05))

    def _count_incoming(self, solicited: bool) -> None:
        """Count one client frame against the venue's per-second limit; close when over it."""
        self.stats.received += 1
        if solicited:
            return
        now = time.monotonic()
        recent = self.recent
        recent.append(now)
        while recent[0] <= now - 1.0:
            recent.popleft()
        if len(recent) > self.sim.venue.messages_per_second:
            self.close(TOO_MANY)

    async def read_loop(self) -> None:
        async for msg in self.ws:
            if msg.type in _COUNTED:
                solicited = msg.type is WSMsgType.PONG and self.pings_owed > 0
                if solicited:
                    self.pings_owed -= 1
                self._count_incoming(solicited)
            if msg.type == WSMsgType.PONG:
                self.last_pong = time.monotonic()
                self.stats.pongs += 1
            elif msg.type == WSMsgType.PING and self.close_reason is None:
                await self.ws.pong(msg.data)
            # Text from the client (SUBSCRIBE etc.) is ignored: subscriptions are in the URL.
        self.close(self.close_reason or "client closed")


def oversized_frame(stream: str, size: int) -> bytes:
    pad = b"x" * max(size, 0)
    return envelope(stream, b'{"e":"pad","pad":"' + pad + b'"}')


class Simulator:
    """The simulator as an object: ``await sim.start()``, ``sim.ws_url``, ``await sim.stop()``."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.venue: Venue = VENUES[settings.venue]
        self.shapes = shapes_of(self.venue)
        #: The settings' ping interval (the venue's if the settings ever leave it unset).
        self.ping_interval_s: float = settings.ping_interval_s or self.venue.ping_interval_s
        self.faults: FaultSettings = settings.faults.model_copy()
        self.hub = Hub()
        self.market: Market
        if settings.mode == "replay":
            self.market = ReplayMarket(
                self.hub, settings.replay_files, settings.replay_speed, venue=self.venue
            )
        else:
            self.market = GeneratedMarket.from_settings(self.hub, settings, self.venue)
        self.connections: dict[int, SimConnection] = {}
        self.closed: list[ConnStats] = []
        self._ids = itertools.count(1)
        self.rest_requests = 0
        self.rest_429_left = self.faults.rest_429_count
        self.rest_429_sent = 0
        self.rest_weight = 0  # weight of every depth snapshot served
        self._weight_minute = (0, 0)  # (window, weight used in it): X-MBX-USED-WEIGHT-1M
        f = self.faults
        self.rest_weight_limit = f.rest_weight_limit or self.venue.weight_per_minute
        self.connection_limit = f.connection_limit or self.venue.connection_attempts
        self.connection_window_s = f.connection_window_s or self.venue.connection_window_s
        self.rest_over_limit = 0
        self.connections_refused = 0
        self._attempts: deque[float] = deque()  # handshake times within the connection window
        #: (symbol, limit) of the depth snapshots served, in order (the newest 100,000)
        self.snapshot_log: deque[tuple[str, int]] = deque(maxlen=100_000)
        self._runner: web.AppRunner | None = None
        self._market_task: asyncio.Task[None] | None = None
        self.port = settings.port

    # ------------------------------------------------------------------------------ lifecycle
    @property
    def ws_paths(self) -> dict[str, str]:
        """Websocket path -> the route it is served as (``""``: no routes)."""
        if not self.venue.routes:
            return {"/stream": ""}
        paths = {f"{route}/stream": route for route, _bases in self.venue.routes}
        routes = {route for route, _ in self.venue.routes}
        paths["/stream"] = DEFAULT_ROUTE if DEFAULT_ROUTE in routes else ""
        return paths

    def app(self) -> web.Application:
        app = web.Application()
        for path in self.ws_paths:
            app.router.add_get(path, self._ws_handler)
        depth_path = self.venue.depth_path
        app.router.add_get(depth_path, self._depth_handler)
        app.router.add_get(depth_path.rsplit("/", 1)[0] + "/ping", self._ping_handler)
        app.router.add_get("/_sim/stats", self._stats_handler)
        app.router.add_post("/_sim/fault/{name}", self._fault_handler)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        self._market_task = asyncio.create_task(self.market.run(), name="sim-market")

    async def stop(self) -> None:
        for conn in list(self.connections.values()):
            conn.close("simulator stopping")
        if self._market_task:
            self._market_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._market_task
        if self._runner:
            await self._runner.cleanup()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.settings.host}:{self.port}"

    # ------------------------------------------------------------------------------- faults
    def drop_all(self) -> None:
        for conn in self.connections.values():
            conn.close("drop fault")

    def drop_connection(self, cid: int) -> None:
        """Drop one connection (its client sees the others go on)."""
        conn = self.connections.get(cid)
        if conn is not None:
            conn.close("drop fault")

    def inject_gap(self, stream: str, count: int) -> None:
        for conn in self.connections.values():
            if stream in conn.delivered:
                conn.skip[stream] = conn.skip.get(stream, 0) + count

    def inject_malformed(self) -> None:
        for conn in self.connections.values():
            conn.inject("malformed", b'{"stream":"' + conn.stats.streams[0].encode() + b'","da')

    def inject_oversized(self, size: int) -> None:
        for conn in self.connections.values():
            conn.inject("oversized", oversized_frame(conn.stats.streams[0], size))

    def inject_unknown(self) -> None:
        for conn in self.connections.values():
            conn.inject("unknown", envelope("zzzusdt@trade", b'{"e":"trade","t":1}'))

    def announce_shutdown(self) -> None:
        """Send Binance's ``serverShutdown`` notice to every connection."""
        frame = b'{"e":"serverShutdown","E":%d}' % (time.time_ns() // 1_000_000)
        for conn in self.connections.values():
            conn.inject("shutdown", frame)

    def arm_rest_429(self, count: int) -> None:
        self.rest_429_left = count

    def set_cut(self, after_s: float) -> None:
        self.faults.close_after_s = after_s

    # ------------------------------------------------------------------------------ handlers
    def _valid_stream(self, stream: str) -> bool:
        sym, sep, channel = stream.partition("@")
        if not (sep and channel and sym in self.market.symbols):
            return False
        if not isinstance(self.market, ReplayMarket) and channel not in self.venue.channels:
            return False  # replay: any channel of a recorded symbol
        try:
            self.venue.route_of(channel)
        except VenueError:
            return False
        return True

    def _connection_allowed(self) -> bool:
        """Count a handshake; False when it is one too many for the connection window."""
        now = time.monotonic()
        attempts = self._attempts
        attempts.append(now)
        while attempts[0] <= now - self.connection_window_s:
            attempts.popleft()
        return len(attempts) <= self.connection_limit

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        if not self._connection_allowed():
            self.connections_refused += 1
            log.warning(
                "connection attempt refused: over %d per %.0f s",
                self.connection_limit,
                self.connection_window_s,
            )
            return web.json_response(
                {"code": -1003, "msg": "Too many connection attempts"},
                status=429,
                headers={"Retry-After": str(max(1, int(self.connection_window_s)))},
            )
        streams = [s for s in request.query.get("streams", "").split("/") if s]
        bad = [s for s in streams if not self._valid_stream(s)]
        if not streams or bad or len(streams) > self.venue.max_streams_per_connection:
            return web.json_response(
                {"code": -1121, "msg": f"Invalid stream(s): {bad or streams}"}, status=400
            )
        route = self.ws_paths[request.path]
        unrouted = frozenset(
            s for s in streams if self.venue.route_of(s.partition("@")[2]) != route
        )
        ws = web.WebSocketResponse(autoping=False, compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        cid = next(self._ids)
        conn = SimConnection(self, ws, cid, streams, request.path, route, unrouted)
        self.connections[cid] = conn
        self.hub.subscribe(conn, streams)
        log.info(
            "connection %d opened on %s: %d streams (%d unrouted)",
            cid,
            request.path,
            len(streams),
            len(unrouted),
        )
        tasks = [
            asyncio.create_task(conn.send_loop()),
            asyncio.create_task(conn.ping_loop()),
            asyncio.create_task(conn.cut_loop()),
        ]
        try:
            await conn.read_loop()
        finally:
            self.hub.unsubscribe(conn)
            conn.close(conn.close_reason or "client closed")
            for t in tasks[1:]:
                t.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(tasks[0], 5)
            for t in tasks:
                t.cancel()
            del self.connections[cid]
            self.closed.append(conn.stats)
            log.info("connection %d closed: %s", cid, conn.close_reason)
        return ws

    def _illegal_limit(self) -> web.Response:
        v = self.venue
        legal = ", ".join(map(str, v.depth_limits)) if v.depth_limits else f"1 - {v.max_depth}"
        return web.json_response(
            {
                "code": -1100,
                "msg": f"Illegal characters found in parameter 'limit'; legal range is '{legal}'.",
            },
            status=400,
        )

    def _use_weight(self, weight: int) -> int | None:
        """Add ``weight`` to the current window's and return its total so far; None (nothing
        added) when that would pass the limit."""
        window = int(time.time() // self.faults.rest_window_s)
        seen, used = self._weight_minute
        used = used if seen == window else 0
        if used + weight > self.rest_weight_limit:
            self._weight_minute = (window, used)
            return None
        used += weight
        self._weight_minute = (window, used)
        self.rest_weight += weight
        return used

    def _over_limit(self) -> web.Response:
        self.rest_over_limit += 1
        self.rest_429_sent += 1
        w = self.faults.rest_window_s
        left = (int(time.time() // w) + 1) * w - time.time()
        log.warning("REST weight over %d per %.0f s: 429", self.rest_weight_limit, w)
        return web.json_response(
            {"code": -1003, "msg": "Too much request weight used; please use WebSocket Streams."},
            status=429,
            headers={"Retry-After": str(max(1, math.ceil(left)))},
        )

    async def _depth_handler(self, request: web.Request) -> web.Response:
        self.rest_requests += 1
        if self.rest_429_left > 0:
            self.rest_429_left -= 1
            self.rest_429_sent += 1
            return web.json_response(
                {"code": -1003, "msg": "Too many requests"},
                status=429,
                headers={"Retry-After": str(self.faults.retry_after_s)},
            )
        symbol = request.query.get("symbol", "").lower()
        try:
            limit = int(request.query.get("limit", str(self.shapes.default_limit)))
            self.venue.check_depth_limit(limit)
        except (ValueError, VenueError):  # VenueError is a ValueError; both named for the reader
            return self._illegal_limit()
        snap = self.market.snapshot(symbol) if symbol in self.market.symbols else None
        if snap is None:
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        used = self._use_weight(self.venue.depth_weight(limit))
        if used is None:
            return self._over_limit()
        self.snapshot_log.append((symbol, limit))
        return web.Response(
            body=snap.body(limit),
            content_type="application/json",
            headers={"X-MBX-USED-WEIGHT-1M": str(used)},
        )

    def stats(self) -> dict[str, Any]:
        conns = [*self.closed, *(c.stats for c in self.connections.values())]
        sent: dict[str, int] = {}
        unrouted: dict[str, int] = {}
        for c in conns:
            for s, n in c.sent.items():
                sent[s] = sent.get(s, 0) + n
            for s, n in c.unrouted.items():
                unrouted[s] = unrouted.get(s, 0) + n
        return {
            "venue": self.venue.name,
            "published": dict(self.hub.published),
            "sent": sent,
            "unrouted": unrouted,
            "finished": self.market.finished.is_set(),
            "open_connections": len(self.connections),
            "connections": [c.__dict__ | {"opened_at": None} for c in conns],
            "rate_limited": sum(c.closed_reason == TOO_MANY for c in conns),
            "rest_requests": self.rest_requests,
            "rest_429_sent": self.rest_429_sent,
            "rest_weight": self.rest_weight,
            "rest_over_limit": self.rest_over_limit,
            "connections_refused": self.connections_refused,
        }

    async def _ping_handler(self, _request: web.Request) -> web.Response:
        return web.json_response({})

    async def _stats_handler(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _fault_handler(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        q = request.query
        if name == "drop":
            if "conn" in q:
                self.drop_connection(int(q["conn"]))
            else:
                self.drop_all()
        elif name == "gap":
            self.inject_gap(q["stream"], int(q.get("count", "10")))
        elif name == "malformed":
            self.inject_malformed()
        elif name == "oversized":
            self.inject_oversized(int(q.get("bytes", str(self.faults.oversized_bytes))))
        elif name == "unknown":
            self.inject_unknown()
        elif name == "shutdown":
            self.announce_shutdown()
        elif name == "rest429":
            self.arm_rest_429(int(q.get("count", "1")))
        elif name == "cut":
            self.set_cut(float(q["after_s"]))
        else:
            return web.json_response({"error": f"unknown fault {name}"}, status=404)
        return web.json_response({"ok": name})


async def serve(settings: SimulatorSettings) -> None:
    """Run the simulator until cancelled."""
    sim = Simulator(settings)
    await sim.start()
    log.info(
        "simulator listening on %s (%s, %s mode, symbols %s, websocket paths %s)",
        sim.ws_url,
        sim.venue.name,
        settings.mode,
        ",".join(sim.market.symbols),
        ", ".join(sim.ws_paths),
    )
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
