"""From websocket frames to records: validation, renewal de-duplication, sequence checks.

Every frame a connection receives goes through :meth:`Router.on_frame`, synchronously:

1. validation: oversized, malformed JSON, unknown stream, missing ids or ids that are not JSON
   integers in ``0 <= id < 2**63`` with depth ``U <= u`` -> QUARANTINE record in
   ``md:<exchange>:_quarantine`` (counted, logged once per reason). Whatever a frame's shape,
   ``on_frame`` returns normally: the sequence state only ever holds int64 ids, so nothing past
   validation (gap records, logs) can fail on a frame's content;
2. ownership: each stream is owned by one connection. During a renewal the new connection is the
   stream's *successor*: its messages are held until they overlap what the owner delivered
   (depth by ``U``/``u``, trades by ``t``, bookTickers by ``u``), then ownership switches and only
   messages past the last delivered id are kept, so a renewal neither drops nor repeats anything;
3. sequence: trades (``t``) and aggTrades (``a``) must have consecutive ids, depth events chain by
   the venue's rule (:class:`vps_brain.venues.SequenceRule`: spot ``U == previous u + 1``,
   futures ``pu == previous u``). A break writes a GAP record and (depth) starts a resync: a REST
   snapshot is fetched after the first buffered event, refetched while ``lastUpdateId < first U``,
   and written as a SNAPSHOT record.

Every event is reduced to ``lo``, ``hi`` (its first and last id) and ``link``, the id it says
precedes it (``U - 1`` on spot, ``pu`` on futures, ``t - 1`` for a trade): an event continues the
stream when ``link`` equals the last id delivered, whatever the venue.

Raw frames are never altered or dropped (except exact duplicates of the renewal overlap):
diffs with ``u <= lastUpdateId`` stay in the log and the reader skips them, which keeps the log a
byte-for-byte copy of what the exchange sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import orjson

from vps_brain.collect.stats import CollectorStats
from vps_brain.frame import Channel, Kind, quarantine_key, sequence_channel, stream_key
from vps_brain.venues import SequenceRule

log = logging.getLogger("vps_brain.collect")

MAX_SUCCESSOR_PENDING = 200_000
#: Exchange ids are JSON integers in ``0 <= id < ID_LIMIT`` (Binance's are int64).
ID_LIMIT = 1 << 63

#: ``emit(key, recv_ns, kind, payload)``: hand one record to the batcher.
Emit = Callable[[str, int, int, bytes], None]

_MESSAGE = int(Kind.MESSAGE)


class DepthSync(Enum):
    INIT = "init"  # no event yet: the first one triggers a snapshot
    WAITING = "waiting"  # events buffered (written), snapshot requested
    SYNCED = "synced"


@dataclass(slots=True)
class Held:
    recv_ns: int
    raw: bytes
    lo: int
    hi: int
    link: int


@dataclass(slots=True)
class StreamState:
    name: str
    symbol: str
    channel: Channel
    key: str
    exchange: str
    #: depth chains by ``pu`` (futures) rather than by ``U`` (spot)
    by_pu: bool = False
    last: int = -1  # last written id: u (depth, ticker) or t (trade); -1 = none yet
    owner: int | None = None
    successor: int | None = None
    held: list[Held] = field(default_factory=list)
    sync: DepthSync = DepthSync.INIT
    first_u: int = 0  # first U buffered since the last (re)start of the depth sync
    n_in: int = 0
    bytes_in: int = 0
    reconnected: bool = False  # the next gap is explained by a reconnect
    #: 1 trade, 2 depth, 3 bookTicker, 4 aggTrade, 0 other (ints: cheaper than enum checks on
    #: the hot path)
    code: int = 0

    @property
    def in_sync(self) -> bool:
        """A depth stream whose book is synced (its snapshot taken, no gap since)."""
        return self.sync is DepthSync.SYNCED

    def __post_init__(self) -> None:
        self.code = {
            Channel.TRADE: 1,
            Channel.DEPTH: 2,
            Channel.TICKER: 3,
            Channel.AGG_TRADE: 4,
        }.get(self.channel, 0)


class Router:
    """Validates frames, de-duplicates renewals, checks sequences and emits records."""

    def __init__(
        self,
        exchange: str,
        streams: list[str],
        *,
        # Where records and snapshot requests go.
        emit: Emit,
        request_snapshot: Callable[[str], None],
        stats: CollectorStats,
        # Validation.
        max_frame_bytes: int = 4 * 1024 * 1024,
        # How depth events chain on this venue.
        sequence: SequenceRule = SequenceRule.SPOT,
    ) -> None:
        self.exchange = exchange
        self.emit = emit
        self.stats = stats
        self.request_snapshot = request_snapshot
        self.max_frame_bytes = max_frame_bytes
        self.qkey = quarantine_key(exchange)
        self.streams: dict[str, StreamState] = {}
        by_pu = sequence is SequenceRule.FUTURES
        for s in streams:
            sym = s.split("@", 1)[0].lower()
            self.streams[s] = StreamState(
                s, sym, sequence_channel(s), stream_key(exchange, sym), exchange, by_pu
            )
        self.depth_of: dict[str, StreamState] = {
            st.symbol: st for st in self.streams.values() if st.channel is Channel.DEPTH
        }
        stats.streams.extend(self.streams.values())
        stats.add_books(list(self.depth_of.values()))
        #: Books that were in sync at least once (``all_books_synced_seconds``).
        self.ever_synced: set[str] = set()
        self._logged: set[str] = set()
        #: True while the writer's queue is full: readers await room after each frame.
        self.backpressure = False
        #: Called with a connection id when all its streams moved to the successor.
        self.on_switched: Callable[[int], None] = lambda _cid: None
        #: Called with a connection id that announced a ``serverShutdown``.
        self.on_server_shutdown: Callable[[int], None] = lambda _cid: None

    # ---------------------------------------------------------------------------- frames
    def on_frame(self, cid: int, recv_ns: int, raw: bytes) -> None:
        size = len(raw)
        if size > self.max_frame_bytes:
            self.quarantine(recv_ns, raw, "oversized", f"{size} bytes")
            return
        try:
            msg = orjson.loads(raw)
            name = msg["stream"]
            data = msg["data"]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            if self._is_shutdown_notice(raw):
                self.on_server_shutdown(cid)
                self.quarantine(recv_ns, raw, "server_shutdown", "renewing the connection")
                return
            self.quarantine(recv_ns, raw, "malformed", raw[:80].decode(errors="replace"))
            return
        st = self.streams.get(name) if isinstance(name, str) else None
        if st is None:
            if self._is_shutdown_notice(raw):
                self.on_server_shutdown(cid)
                self.quarantine(recv_ns, raw, "server_shutdown", "renewing the connection")
                return
            self.quarantine(recv_ns, raw, "unknown_stream", str(name)[:80])
            return
        code = st.code
        try:
            if code == 2:
                lo, hi = data["U"], data["u"]
                link = data["pu"] if st.by_pu else lo - 1 if type(lo) is int else lo
            elif code == 1:
                lo = hi = data["t"]
                link = lo - 1 if type(lo) is int else lo
            elif code == 3:
                lo = hi = link = data["u"]
            elif code == 4:
                lo = hi = data["a"]
                link = lo - 1 if type(lo) is int else lo
            else:
                lo = hi = link = -1
        except (KeyError, TypeError):
            self.quarantine(recv_ns, raw, "malformed", f"{name}: missing ids")
            return
        if code and not (
            type(lo) is int
            and type(hi) is int
            and type(link) is int
            and 0 <= lo <= hi < ID_LIMIT
            and -1 <= link < ID_LIMIT
        ):
            # a float (1e308), a string, a bool, a number past int64 or U > u: never an id
            self.quarantine(recv_ns, raw, "malformed", f"{name}: ids out of format")
            return
        st.n_in += 1
        st.bytes_in += size

        if cid == st.owner and st.successor is None:
            # Fast path: the owner continues its sequence.
            if (
                link == st.last
                and code != 3  # a bookTicker's u only increases: _check decides
                and (code != 2 or st.sync is not DepthSync.INIT)
                and not st.reconnected
            ):
                self.emit(st.key, recv_ns, _MESSAGE, raw)
                st.last = hi
                return
            self._accept(st, recv_ns, raw, lo, hi, link)
            return
        if st.owner is None:
            st.owner = cid
        if cid == st.owner:
            self._accept(st, recv_ns, raw, lo, hi, link)
            if st.successor is not None and st.held:
                self._try_switch(st)
        elif cid == st.successor:
            st.held.append(Held(recv_ns, raw, lo, hi, link))
            self._try_switch(st)
        else:
            self.stats.duplicates[(st.exchange, name)] += 1  # a retired connection draining

    @staticmethod
    def _is_shutdown_notice(raw: bytes) -> bool:
        """Binance's ``serverShutdown`` event (bare or enveloped): renew the connection early."""
        if b"serverShutdown" not in raw:
            return False
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(msg, dict):
            return False
        data = msg.get("data")
        return msg.get("e") == "serverShutdown" or (
            isinstance(data, dict) and data.get("e") == "serverShutdown"
        )

    def quarantine(self, recv_ns: int, raw: bytes, reason: str, detail: str = "") -> None:
        self.stats.quarantined[reason] += 1
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning(
                "quarantined a frame (%s): %s; further ones are only counted",
                reason,
                detail,
                extra={"fields": {"reason": reason}},
            )
        self.emit(self.qkey, recv_ns, Kind.QUARANTINE, raw)

    # ------------------------------------------------------------------------- sequences
    def _accept(
        self, st: StreamState, recv_ns: int, raw: bytes, lo: int, hi: int, link: int
    ) -> None:
        self._check(st, recv_ns, raw, lo, hi, link)
        st.reconnected = False

    def _check(
        self, st: StreamState, recv_ns: int, raw: bytes, lo: int, hi: int, link: int
    ) -> None:
        ch = st.channel
        if ch is Channel.DEPTH:
            # Spot: U <= previous u + 1 <= u (an event straddling the previous one, as after a
            # renewal with different aggregation windows, is applied idempotently). Futures: the
            # event's pu is the previous u.
            if st.last >= 0 and hi <= st.last:
                self.stats.duplicates[(st.exchange, st.name)] += 1
                return
            if st.last >= 0 and (link != st.last if st.by_pu else lo > st.last + 1):
                self._gap(st, recv_ns, "depth", st.last + 1, lo)
                st.sync = DepthSync.INIT
            self.emit(st.key, recv_ns, _MESSAGE, raw)
            st.last = hi
            if st.sync is DepthSync.INIT:
                st.sync = DepthSync.WAITING
                st.first_u = lo
                self.stats.resyncs[(st.exchange, st.symbol)] += 1
                self.control([st.symbol], recv_ns, {"event": "resync_started", "symbol": st.symbol})
                self.request_snapshot(st.symbol)
        elif ch is Channel.TRADE or ch is Channel.AGG_TRADE:
            if st.last >= 0 and lo != st.last + 1:
                if lo <= st.last:
                    self.stats.duplicates[(st.exchange, st.name)] += 1
                    return
                self._gap(st, recv_ns, ch.value, st.last + 1, lo)
            self.emit(st.key, recv_ns, _MESSAGE, raw)
            st.last = hi
        elif ch is Channel.TICKER:
            if hi <= st.last:
                self.stats.duplicates[(st.exchange, st.name)] += 1
                return
            self.emit(st.key, recv_ns, _MESSAGE, raw)
            st.last = hi
        else:
            self.emit(st.key, recv_ns, _MESSAGE, raw)

    def _gap(self, st: StreamState, recv_ns: int, channel: str, expected: int, got: int) -> None:
        self.stats.gaps[(st.exchange, st.symbol, channel)] += 1
        reason = "reconnect" if st.reconnected else "sequence"
        st.reconnected = False
        log.warning(
            "gap on %s: expected %d, got %d",
            st.name,
            expected,
            got,
            extra={"fields": {"stream": st.name, "expected": expected, "got": got}},
        )
        payload = orjson.dumps(
            {
                "symbol": st.symbol,
                "channel": channel,
                "reason": reason,
                "expected": expected,
                "got": got,
            }
        )
        self.emit(st.key, recv_ns, Kind.GAP, payload)

    def on_snapshot(self, symbol: str, recv_ns: int, body: bytes) -> bool:
        """A REST snapshot arrived; returns False when it is too old and must be refetched."""
        st = self.depth_of.get(symbol)
        if st is None:
            return True
        try:
            last_update_id = int(orjson.loads(body)["lastUpdateId"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.quarantine(recv_ns, body, "malformed_snapshot", symbol)
            return False
        if last_update_id < st.first_u:
            log.info(
                "snapshot of %s too old (%d < %d): refetching", symbol, last_update_id, st.first_u
            )
            return False
        self.emit(st.key, recv_ns, Kind.SNAPSHOT, body)
        self.stats.snapshots[(self.exchange, symbol)] += 1
        st.sync = DepthSync.SYNCED
        if symbol not in self.ever_synced:
            self.ever_synced.add(symbol)
            self.stats.book_first_synced(self.exchange)
        return True

    def depth_seen(self, symbol: str) -> int:
        """Depth diffs received for ``symbol`` so far (how busy its book is)."""
        st = self.depth_of.get(symbol)
        return st.n_in if st is not None else 0

    def snapshot_wanted(self, symbol: str) -> bool:
        st = self.depth_of.get(symbol)
        return st is not None and st.sync is DepthSync.WAITING

    # -------------------------------------------------------------------------- renewal
    def take_over(self, cid: int, streams: list[str]) -> None:
        """A replacement connection (after a drop): it owns its streams at once."""
        for s in streams:
            st = self.streams[s]
            st.reconnected = st.owner is not None
            st.owner = cid
            st.successor = None
            st.held.clear()

    def begin_successor(self, cid: int, streams: list[str]) -> None:
        """A renewal connection: it takes over each stream once it overlaps the owner."""
        for s in streams:
            st = self.streams[s]
            st.successor = cid
            st.held.clear()

    def pending_switch(self, cid: int) -> int:
        return sum(1 for st in self.streams.values() if st.successor == cid)

    def _try_switch(self, st: StreamState) -> None:
        held = st.held
        if st.last < 0:
            self._switch(st)
            return
        # drop what the owner already delivered
        last = st.last
        i = 0
        while i < len(held) and held[i].hi <= last:
            i += 1
        seen_overlap = i > 0
        if i:
            self.stats.duplicates[(st.exchange, st.name)] += i
            del held[:i]
        if not held:
            if seen_overlap:
                self._switch(st)
            return
        first = held[0]
        if st.channel in (Channel.DEPTH, Channel.TRADE, Channel.AGG_TRADE):
            if first.link <= last:  # continues (or straddles) what the owner delivered
                self._switch(st)
        elif seen_overlap:
            self._switch(st)
        if st.successor is not None and len(held) > MAX_SUCCESSOR_PENDING:
            self._switch(st)

    def _switch(self, st: StreamState) -> None:
        cid = st.successor
        if cid is None:
            return
        st.owner = cid
        st.successor = None
        held, st.held = st.held, []
        for h in held:
            self._accept(st, h.recv_ns, h.raw, h.lo, h.hi, h.link)
        if self.pending_switch(cid) == 0:
            self.on_switched(cid)

    def force_switch(self, cid: int) -> None:
        """End of the overlap (deadline or old connection gone): switch every remaining stream."""
        for st in self.streams.values():
            if st.successor == cid:
                self._switch(st)

    # -------------------------------------------------------------------------- control
    def control(self, symbols: list[str], recv_ns: int, event: dict[str, object]) -> None:
        payload = orjson.dumps(event)
        for sym in dict.fromkeys(symbols):
            self.emit(stream_key(self.exchange, sym), recv_ns, Kind.CONTROL, payload)
