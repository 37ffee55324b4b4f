"""The Binance venues as data: one :class:`Venue` per market (spot, USD-M and COIN-M futures).

Everything that differs between the venues lives here and nowhere else: websocket and REST bases,
the websocket paths that streams are routed to, the REST depth path with its limits and weights,
the request-weight budget, the per-connection limits and the sequence rule of the diff-depth
stream. The collector, the simulator, the consumer's book check and the roles read it (the roles'
copy of the venue and channel lists is tested equal to :data:`VENUES`); adding a venue is one
entry here plus its tests.

Facts as documented by Binance (checked 2026-12; see docs/venues.md for the sources):

* spot: ``wss://data-stream.binance.vision``, ``/api/v3/depth`` (limit 1..5000, weight
  5/25/50/250 up to 100/500/1000/5000), 6,000 weight per minute, 1024 streams and 5 incoming
  messages per second per connection, pings every 20 s; diffs chain by ``U == previous u + 1``;
  at most 300 connection attempts per 5 minutes per IP (web-socket-streams.md, "Websocket
  Limits": "a limit of 300 connections per attempt every 5 minutes per IP").
* REST weight is counted per fixed minute of the exchange's clock, not per sliding minute:
  "a 1 MINUTE interval starts every minute. Request submitted at 00:01:23.456 counts towards
  the 00:01:00 minute's limit. Once the 00:02:00 minute starts, the count will reset to zero
  again" (developers.binance.com/docs/binance-spot-api-docs/websocket-api/rate-limits, the same
  rule as the REST API's ``X-MBX-USED-WEIGHT-1M``).
* USD-M: ``wss://fstream.binance.com`` routes streams by path since 2026: ``/public`` carries the
  high-frequency data (depth, bookTicker, trade), ``/market`` the regular data (aggTrade,
  markPrice, forceOrder, kline); a connection on the wrong path silently gets nothing for such a
  stream. ``/fapi/v1/depth`` (limits 5, 10, 20, 50, 100, 500, 1000; weight 2/5/10/20), 2,400
  weight per minute, 1024 streams and 10 incoming messages per second, pings every 3 minutes.
  The futures pages document no connection-attempt limit: spot's 300 per 5 minutes is applied
  (a guess on the safe side, not a documented figure).
* COIN-M: ``wss://dstream.binance.com`` (no routes), ``/dapi/v1/depth`` with the USD-M limits
  and weights, 2,400 weight per minute; quantities are contracts.
* futures diffs chain by ``pu == previous u``; after a snapshot the first diff applied has
  ``U <= lastUpdateId <= u`` (spot: ``U <= lastUpdateId + 1 <= u``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from types import MappingProxyType
from typing import Final

__all__ = [
    "DEFAULT_VENUE",
    "VENUES",
    "SequenceRule",
    "Venue",
    "VenueError",
    "venue_of_exchange",
]


class VenueError(ValueError):
    """A venue, channel or limit that the venue does not have."""


class SequenceRule(Enum):
    """How consecutive diff-depth events chain."""

    #: ``U == previous u + 1`` (an event straddling the previous ``u`` is applied idempotently).
    SPOT = "spot"
    #: ``pu == previous u``.
    FUTURES = "futures"


@dataclass(frozen=True, slots=True)
class Venue:
    """One Binance market and every limit the collector must respect on it."""

    #: Short name used in settings and inventories (``spot``, ``usdm``, ``coinm``).
    name: str
    #: The exchange part of the stream keys and of the store's partitions (``binance-usdm``).
    exchange: str
    ws_url: str
    rest_url: str
    #: REST path of the depth snapshot.
    depth_path: str
    #: The limits the depth endpoint accepts (sorted), or ``None`` for any in ``1..max_depth``.
    depth_limits: tuple[int, ...] | None
    max_depth: int
    #: ``(up to this limit, weight)`` pairs, ascending.
    depth_weights: tuple[tuple[int, int], ...]
    #: Request weight per minute per IP on this venue's REST host.
    weight_per_minute: int
    max_streams_per_connection: int
    #: Messages a client may send per second on one connection (pongs included).
    messages_per_second: int
    #: A connection is cut at this age.
    lifetime_s: float
    #: The server pings this often.
    ping_interval_s: float
    sequence: SequenceRule
    #: Channels this venue serves, as written in a stream name after ``<symbol>@``.
    channels: tuple[str, ...]
    #: Channels collected when a market names none.
    default_channels: tuple[str, ...]
    #: ``(path, channel bases)``: each stream goes to the path that carries its base channel
    #: (``depth@100ms`` -> ``depth``). Empty: every stream on the root path.
    routes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Websocket connection attempts allowed per IP within ``connection_window_s`` (spot: 300 per
    #: 5 minutes, documented; futures: undocumented, spot's figure applied).
    connection_attempts: int = 300
    connection_window_s: float = 300.0
    #: REST weight is counted per fixed window of this length on the exchange's clock (1 minute).
    weight_window_s: float = 60.0

    def check_channel(self, channel: str) -> None:
        """Raise :class:`VenueError` unless this venue serves ``channel`` and can route it."""
        if channel not in self.channels:
            raise VenueError(
                f"venue {self.name} has no channel {channel!r} (it has {', '.join(self.channels)})"
            )
        self.route_of(channel)

    def route_of(self, channel: str) -> str:
        """The websocket path (``/public``, ``/market`` or ``""``) that carries ``channel``.

        The route is chosen by the channel's base: ``depth20@100ms`` -> ``depth``,
        ``kline_1m`` -> ``kline``, ``markPrice@1s`` -> ``markPrice``.
        """
        if not self.routes:
            return ""
        base = channel.split("@", 1)[0].split("_", 1)[0].rstrip("0123456789")
        for path, bases in self.routes:
            if base in bases:
                return path
        raise VenueError(f"venue {self.name} routes no path for channel {channel!r}")

    def check_depth_limit(self, limit: int) -> None:
        ok = 1 <= limit <= self.max_depth and (
            self.depth_limits is None or limit in self.depth_limits
        )
        if not ok:
            allowed = (
                ", ".join(map(str, self.depth_limits))
                if self.depth_limits is not None
                else f"1..{self.max_depth}"
            )
            raise VenueError(f"venue {self.name} takes depth limits {allowed}, not {limit}")

    def depth_weight(self, limit: int) -> int:
        """Request weight of one depth snapshot of ``limit`` levels."""
        for up_to, weight in self.depth_weights:
            if limit <= up_to:
                return weight
        return self.depth_weights[-1][1]


_DAY: Final = 24 * 3600.0
_KLINES: Final = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d")
_SPOT_CHANNELS: Final = (
    "trade",
    "aggTrade",
    "depth",
    "depth@100ms",
    "bookTicker",
    *(f"depth{n}{speed}" for n in (5, 10, 20) for speed in ("", "@100ms")),
    *(f"kline_{i}" for i in ("1s", *_KLINES, "1w", "1M")),
)
_FUTURES_CHANNELS: Final = (
    "trade",
    "aggTrade",
    "depth",
    "depth@100ms",
    "depth@500ms",
    "depth@0ms",
    "bookTicker",
    "markPrice",
    "markPrice@1s",
    "forceOrder",
    *(f"depth{n}{speed}" for n in (5, 10, 20) for speed in ("", "@100ms", "@500ms")),
    *(f"kline_{i}" for i in (*_KLINES, "1w", "1M")),
)
_FUTURES_LIMITS: Final = (5, 10, 20, 50, 100, 500, 1000)
_FUTURES_WEIGHTS: Final = ((50, 2), (100, 5), (500, 10), (1000, 20))

_SPOT: Final = Venue(
    name="spot",
    exchange="binance",
    ws_url="wss://data-stream.binance.vision",
    rest_url="https://data-api.binance.vision",
    depth_path="/api/v3/depth",
    depth_limits=None,
    max_depth=5000,
    depth_weights=((100, 5), (500, 25), (1000, 50), (5000, 250)),
    weight_per_minute=6000,
    max_streams_per_connection=1024,
    messages_per_second=5,
    lifetime_s=_DAY,
    ping_interval_s=20.0,
    sequence=SequenceRule.SPOT,
    channels=_SPOT_CHANNELS,
    default_channels=("trade", "depth@100ms", "bookTicker"),
)
_USDM: Final = Venue(
    name="usdm",
    exchange="binance-usdm",
    ws_url="wss://fstream.binance.com",
    rest_url="https://fapi.binance.com",
    depth_path="/fapi/v1/depth",
    depth_limits=_FUTURES_LIMITS,
    max_depth=1000,
    depth_weights=_FUTURES_WEIGHTS,
    weight_per_minute=2400,
    max_streams_per_connection=1024,
    messages_per_second=10,
    lifetime_s=_DAY,
    ping_interval_s=180.0,
    sequence=SequenceRule.FUTURES,
    channels=_FUTURES_CHANNELS,
    default_channels=("trade", "depth@100ms", "bookTicker"),
    routes=(
        ("/public", ("depth", "bookTicker", "trade")),
        ("/market", ("aggTrade", "markPrice", "forceOrder", "kline")),
    ),
)
#: COIN-M: USD-M's limits and rules on its own hosts, without routed paths.
_COINM: Final = replace(
    _USDM,
    name="coinm",
    exchange="binance-coinm",
    ws_url="wss://dstream.binance.com",
    rest_url="https://dapi.binance.com",
    depth_path="/dapi/v1/depth",
    routes=(),
)
_ALL: Final = (_SPOT, _USDM, _COINM)

#: Every venue by name, in a fixed order (spot first).
VENUES: Final[Mapping[str, Venue]] = MappingProxyType({v.name: v for v in _ALL})
DEFAULT_VENUE: Final = VENUES["spot"]
_BY_EXCHANGE: Final = {v.exchange: v for v in _ALL}


def venue_of_exchange(exchange: str) -> Venue:
    """The venue whose stream keys and partitions carry ``exchange`` (``binance-usdm``)."""
    try:
        return _BY_EXCHANGE[exchange]
    except KeyError:
        raise VenueError(
            f"no venue writes exchange {exchange!r} (known: {', '.join(_BY_EXCHANGE)})"
        ) from None
