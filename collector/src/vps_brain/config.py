"""Configuration: one typed model, :class:`Settings`, loaded from YAML (or TOML) plus environment.

Precedence: defaults < file < environment. An environment variable
``VPS_BRAIN__<SECTION>__<FIELD>`` (case-insensitive, ``__`` separates levels) overrides one field,
e.g. ``VPS_BRAIN__REDIS__URL=redis://10.8.0.1:6379/0`` or
``VPS_BRAIN__COLLECTOR__SYMBOLS='["ethusdt","btcusdt"]'`` (values starting with ``[`` or ``{`` are
parsed as JSON; everything else is handed to pydantic as a string and coerced by the field type).

Any problem raises :class:`ConfigError` whose message names each bad field as a dotted path
(``collector.batch_max_records: Input should be greater than 0``) and where the value came from.
Unknown keys are errors too (a typo must not be silently ignored).

No message shows a secret: values of secret fields and of unknown keys (a mistyped ``pasword``)
are never shown, URLs are shown through :func:`redact_url` (no userinfo password, no
``?password=``), YAML errors give the line and column but not the line itself, and pydantic's own
``ValidationError`` text leaves inputs out (``hide_input_in_errors``), so a caller that prints one
shows no input either. Command-line flags are applied and validated the same way
(:func:`vps_brain.commands.apply_overrides`, attributed to ``[command line]``).

Adding a section (e.g. the consumer's)::

    class ConsumerSettings(Section):
        group: str = "brain"
        ...

    class Settings(Section):
        ...
        consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)

i.e. one ``Section`` subclass and one field on :class:`Settings`; loading, env overrides and error
messages need no other change. Sections may nest further models; env paths follow the nesting.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from vps_brain.venues import DEFAULT_VENUE, VENUES, Venue, VenueError

ENV_PREFIX = "VPS_BRAIN__"

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class ConfigError(ValueError):
    """The configuration cannot be used; the message names every bad field."""


REDIS_SCHEMES = ("redis", "rediss", "unix")
# scheme://userinfo@ (userinfo up to the authority's last "@") and password-like query parameters
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/?#\s]*)@")
_SECRET_PARAM = re.compile(r"(?i)([?&;](?:password|passwd|pass|pwd|auth|token|secret)=)[^&#\s'\"]*")
_SECRET_KEYS = ("secret", "password", "passwd", "token", "auth")


def _userinfo(match: re.Match[str]) -> str:
    scheme, info = match.groups()
    user, colon, _password = info.partition(":")
    return f"{scheme}{user}:***@" if colon else f"{scheme}***@"


def redact_url(text: str) -> str:
    """``text`` with every URL's password replaced by ``***`` (userinfo and ``?password=``).

    ``redis://collector:s3cret@10.8.0.1:6379/0`` -> ``redis://collector:***@10.8.0.1:6379/0``;
    a userinfo without ``:`` is hidden whole (some clients read it as the password).
    """
    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(_userinfo, text))


def _check_redis_url(url: str, field: str) -> None:
    if url.split("://", 1)[0] not in REDIS_SCHEMES:
        raise ValueError(
            f"{field} must start with redis://, rediss:// or unix://: {redact_url(url)!r}"
        )


class Section(BaseModel):
    """Base of every config section: unknown keys are errors; errors never print their input."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class RedisSettings(Section):
    """How to reach Redis. Authenticate as a dedicated ACL user (``username`` + password)."""

    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password: SecretStr | None = None
    #: File holding the password (first line); used when ``password`` is not set.
    password_file: Path | None = None
    socket_timeout_s: PositiveFloat = 5.0
    connect_timeout_s: PositiveFloat = 2.0

    @model_validator(mode="after")
    def _password_sources(self) -> RedisSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set either password or password_file, not both")
        _check_redis_url(self.url, "url")
        return self

    def resolved_password(self) -> str | None:
        """The password from ``password`` or the first line of ``password_file``."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            try:
                text = self.password_file.read_text()
            except OSError as exc:
                raise ConfigError(f"redis.password_file: cannot read: {exc}") from exc
            return text.splitlines()[0].strip() if text else ""
        return None


def check_venue(name: str) -> str:
    """``name`` if it is a venue of :data:`vps_brain.venues.VENUES`; else a clear error."""
    if name not in VENUES:
        raise ValueError(f"unknown venue {name!r}: expected one of {', '.join(VENUES)}")
    return name


class MarketSettings(Section):
    """One venue's symbols and channels (``collector.markets``); endpoints default to the venue's.

    ``venue`` is a key of :data:`vps_brain.venues.VENUES`; every channel must be one the venue
    serves and can route (a USD-M stream goes to ``/public`` or ``/market``).
    """

    venue: str = DEFAULT_VENUE.name
    symbols: list[str] = Field(min_length=1)
    #: Channels per symbol; unset = the venue's defaults (trade, depth@100ms, bookTicker).
    channels: list[str] | None = Field(default=None, min_length=1)
    #: Base websocket URL (routed paths and ``/stream?streams=...`` are appended).
    ws_url: str | None = None
    #: Base REST URL (the venue's depth path is appended).
    rest_url: str | None = None
    #: Exchange part of the stream keys and partitions; unset = the venue's (``binance-usdm``).
    exchange: str | None = None
    #: Depth snapshot levels per symbol, overriding ``collector.snapshot_limit`` (each a limit the
    #: venue takes). A book synced from limit N knows only the top N levels at sync.
    snapshot_limits: dict[str, int] = Field(default_factory=dict)
    #: Symbols whose books sync first, in this order; then the busiest (most diffs seen so far),
    #: then the order of ``symbols``.
    snapshot_priority: list[str] = Field(default_factory=list)

    _lower_symbols = field_validator("symbols")(lambda v: [s.lower() for s in v])
    _known_venue = field_validator("venue")(lambda v: check_venue(v))
    _lower_limits = field_validator("snapshot_limits")(
        lambda v: {s.lower(): n for s, n in v.items()}
    )
    _lower_priority = field_validator("snapshot_priority")(lambda v: [s.lower() for s in v])

    @model_validator(mode="after")
    def _snapshot_symbols_known(self) -> MarketSettings:
        known = set(self.symbols)
        for name, named in (
            ("snapshot_limits", list(self.snapshot_limits)),
            ("snapshot_priority", self.snapshot_priority),
        ):
            unknown = [s for s in named if s not in known]
            if unknown:
                raise ValueError(f"{name} names {', '.join(unknown)}, not in this market's symbols")
        twice = sorted({s for s in self.snapshot_priority if self.snapshot_priority.count(s) > 1})
        if twice:
            raise ValueError(f"snapshot_priority names {', '.join(twice)} more than once")
        for symbol, limit in self.snapshot_limits.items():
            try:
                self.spec.check_depth_limit(limit)
            except VenueError as exc:
                raise ValueError(f"snapshot_limits.{symbol}: {exc}") from None
        return self

    def snapshot_limit_of(self, symbol: str, default: int) -> int:
        """The depth limit of ``symbol``'s snapshots: its own, else ``default``."""
        return self.snapshot_limits.get(symbol, default)

    @field_validator("channels")
    @classmethod
    def _served_by_the_venue(cls, channels: list[str] | None, info: ValidationInfo) -> Any:
        venue = VENUES.get(info.data.get("venue", ""))
        for channel in channels or ():
            if venue is not None:
                try:
                    venue.check_channel(channel)
                except VenueError as exc:
                    raise ValueError(str(exc)) from None
        return channels

    @property
    def spec(self) -> Venue:
        return VENUES[self.venue]

    @property
    def stream_channels(self) -> list[str]:
        return list(self.channels or self.spec.default_channels)

    @property
    def exchange_name(self) -> str:
        return self.exchange or self.spec.exchange

    @property
    def ws_base(self) -> str:
        return self.ws_url or self.spec.ws_url

    @property
    def rest_base(self) -> str:
        return self.rest_url or self.spec.rest_url


#: Keys of ``collector`` that describe the one spot market when ``markets`` is not given.
SPOT_SHORTHAND: Final = ("symbols", "channels", "ws_url", "rest_url", "exchange")


class CollectorSettings(Section):
    """``vps-brain collect``: exchange connections, framing, Redis writes, spool, trimming.

    ``markets`` lists what to collect, one entry per venue and set of channels. The keys
    ``symbols``, ``channels``, ``ws_url``, ``rest_url`` and ``exchange`` are a shorthand for a
    single spot market (what a collector of spot only writes); they cannot be mixed with
    ``markets``.
    """

    markets: list[MarketSettings] = Field(
        default_factory=lambda: [MarketSettings(symbols=["btcusdt", "ethusdt"])], min_length=1
    )
    #: Streams per connection, at most the venue's limit (unset = the venue's limit, 1024).
    max_streams_per_connection: Annotated[int, Field(gt=0, le=1024)] | None = None
    #: Depth snapshot levels; must be a limit every configured venue accepts.
    snapshot_limit: Annotated[int, Field(gt=0, le=5000)] = 1000
    #: REST weight per minute each venue may use (unset = the venue's whole budget: spot 6000,
    #: futures 2400), counted per fixed minute as the exchange counts it (per
    #: ``rest_weight_window_s``). Venues never share a budget: a resync storm on one never
    #: starves another.
    rest_weight_per_minute: PositiveInt | None = None
    #: A resync waits a random delay up to this, so many symbols never resync in a storm.
    resync_jitter_s: NonNegFloat = 0.5
    rest_timeout_s: PositiveFloat = 10.0
    #: The exchange's weight window (Binance: a fixed minute); ``rest_weight_per_minute`` is
    #: the weight per such window. Unset = the venue's. Only tests shorten it.
    rest_weight_window_s: PositiveFloat | None = None
    #: At start, when the books' snapshots weigh more than one window allows, the first snapshot
    #: waits this long so that every book's first request is queued and the first window already
    #: goes in sync order (each book asks on its first diff).
    snapshot_gather_s: NonNegFloat = 1.0

    #: Renew a connection when it is this old (Binance cuts at 24 h).
    renew_after_s: PositiveFloat = 23 * 3600.0
    #: Keep the old connection this long after the new one delivered its first message.
    renew_overlap_s: NonNegFloat = 5.0
    #: At least this long between two renewals of the collector's connections (60 s: never two
    #: in the same minute); a renewal comes early rather than close to another one.
    renew_stagger_s: NonNegFloat = 60.0
    #: Bound of a connection's subscription URL (path and query): streams are spread over more
    #: connections rather than exceed it (aiohttp servers refuse request lines over 8,190 bytes).
    max_url_bytes: Annotated[int, Field(ge=256)] = 8000
    #: Connection attempts per ``connection_window_s`` (unset = the venue's: 300 per 5 minutes);
    #: first opens, reconnects, renewals and probes all count. At most the venue's.
    connection_attempts: PositiveInt | None = None
    connection_window_s: PositiveFloat | None = None
    reconnect_min_s: PositiveFloat = 0.1
    reconnect_max_s: PositiveFloat = 30.0
    #: No message (nor ping) for this long: the connection is presumed dead and replaced.
    idle_timeout_s: PositiveFloat = 60.0
    #: Frames larger than this are quarantined (Binance frames are well under 1 MiB).
    max_frame_bytes: PositiveInt = 4 * 1024 * 1024

    framing: Literal["batch", "plain"] = "batch"
    codec: Literal["zstd", "none"] = "zstd"
    #: zstd level; unset = parameters tuned for exchange JSON (frame.market_data_params)
    zstd_level: Annotated[int, Field(ge=-7, le=22)] | None = None
    batch_max_records: PositiveInt = 2000
    batch_max_bytes: PositiveInt = 1024 * 1024
    batch_max_delay_ms: PositiveFloat = 5.0
    #: Bound of the in-memory queue between receivers and the writer (records).
    queue_max_records: PositiveInt = 200_000

    spool_dir: Path = Path("/var/lib/vps-brain-collector/spool")
    spool_max_bytes: PositiveInt = 8 * 1024**3
    spool_segment_bytes: PositiveInt = 64 * 1024**2
    #: Spill to the spool when Redis used_memory exceeds this fraction of maxmemory.
    redis_high_watermark: Annotated[float, Field(gt=0, le=1)] = 0.85
    #: Drain the spool back only when used_memory is below this fraction.
    redis_low_watermark: Annotated[float, Field(gt=0, le=1)] = 0.70
    memory_check_interval_s: PositiveFloat = 1.0

    trim_interval_s: NonNegFloat = 10.0  # 0 disables trimming inside collect
    #: Keep at least this many seconds of history even when acknowledged.
    trim_min_retention_s: NonNegFloat = 0.0
    #: Trim only if at least one consumer group exists (never trim unread data).
    trim_require_group: bool = True

    metrics_host: str = "127.0.0.1"
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9108  # 0 disables
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    @model_validator(mode="before")
    @classmethod
    def _spot_shorthand(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        given = [k for k in SPOT_SHORTHAND if k in data]
        if not given:
            return data
        if "markets" in data:
            raise ValueError(
                f"set either markets or the spot shorthand ({', '.join(given)}), not both"
            )
        data = dict(data)
        market = {k: data.pop(k) for k in given}
        if market.get("exchange") == DEFAULT_VENUE.exchange:
            del market["exchange"]
        market.setdefault("symbols", ["btcusdt", "ethusdt"])
        data["markets"] = [{"venue": DEFAULT_VENUE.name, **market}]
        return data

    @model_validator(mode="after")
    def _consistent(self) -> CollectorSettings:
        for i, m in enumerate(self.markets):
            venue = m.spec
            try:
                venue.check_depth_limit(self.snapshot_limit)
            except VenueError as exc:
                raise ValueError(f"snapshot_limit: {exc} (markets.{i})") from None
            if self.renew_after_s >= venue.lifetime_s:
                raise ValueError(
                    f"renew_after_s must be shorter than the {venue.name} connection lifetime "
                    f"({venue.lifetime_s:.0f} s)"
                )
            if self.connection_attempts and self.connection_attempts > venue.connection_attempts:
                raise ValueError(
                    f"connection_attempts must not exceed the {venue.name} limit "
                    f"({venue.connection_attempts} per {venue.connection_window_s:.0f} s)"
                )
        keys = [(m.exchange_name, s) for m in self.markets for s in m.symbols]
        twice = sorted({f"{e}:{s}" for e, s in keys if keys.count((e, s)) > 1})
        if twice:
            raise ValueError(
                f"markets name {', '.join(twice)} more than once: list each symbol of a venue "
                "in one market"
            )
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        if self.redis_low_watermark > self.redis_high_watermark:
            raise ValueError("redis_low_watermark must not exceed redis_high_watermark")
        if self.renew_overlap_s >= self.renew_after_s:
            raise ValueError("renew_overlap_s must be shorter than renew_after_s")
        return self


class FaultSettings(Section):
    """Fault injection of the simulator (all off by default), and the limits it enforces."""

    #: Drop every connection after this many messages (0 = never).
    drop_after_messages: Annotated[int, Field(ge=0)] = 0
    #: Close each connection when it is this old (the 24 h cut, in seconds; 0 = never).
    close_after_s: NonNegFloat = 0.0
    #: Skip this many depth update ids once, after ``gap_after_messages`` messages (0 = never).
    gap_after_messages: Annotated[int, Field(ge=0)] = 0
    gap_size: PositiveInt = 10
    #: Skip this many trade ids once, after ``trade_gap_after_messages`` messages (0 = never).
    trade_gap_after_messages: Annotated[int, Field(ge=0)] = 0
    #: Send one malformed (non-JSON) frame every N messages (0 = never).
    malformed_every: Annotated[int, Field(ge=0)] = 0
    #: Send one oversized frame every N messages (0 = never), of ``oversized_bytes``.
    oversized_every: Annotated[int, Field(ge=0)] = 0
    oversized_bytes: PositiveInt = 8 * 1024 * 1024
    #: Send one unknown-stream message every N messages (0 = never).
    unknown_stream_every: Annotated[int, Field(ge=0)] = 0
    #: Answer this many REST requests with 429 (+ Retry-After) before serving normally.
    rest_429_count: Annotated[int, Field(ge=0)] = 0
    retry_after_s: Annotated[int, Field(ge=0)] = 1
    # The exchange's limits, enforced as Binance does (on by default, at the venue's figures;
    # tests shrink them to run fast).
    #: REST weight allowed per fixed window of ``rest_window_s`` (unset = the venue's per
    #: minute); a request past it is answered 429 with Retry-After (the window's end).
    rest_weight_limit: PositiveInt | None = None
    rest_window_s: PositiveFloat = 60.0
    #: Websocket handshakes allowed per ``connection_window_s`` (unset = the venue's 300 per
    #: 5 minutes); one more is answered 429.
    connection_limit: PositiveInt | None = None
    connection_window_s: PositiveFloat | None = None


class SimulatorSettings(Section):
    """``vps-brain simulate``: a local fake Binance venue (websocket + REST)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8765
    mode: Literal["generated", "replay"] = "generated"
    #: The venue served (:data:`vps_brain.venues.VENUES`): its paths, routes, snapshot and events.
    venue: str = DEFAULT_VENUE.name
    symbols: list[str] = Field(default_factory=lambda: ["ethusdt"], min_length=1)
    #: Generated mode: depth events per second per symbol (``depth@100ms`` ignores the 100 ms).
    depth_rate: NonNegFloat = 10.0
    #: Generated mode: trades per second per symbol.
    trade_rate: NonNegFloat = 50.0
    #: Generated mode: bookTickers per second per symbol.
    ticker_rate: NonNegFloat = 100.0
    #: Generated mode: how unevenly depth, trades and bookTickers are spread over ``symbols``, a
    #: Zipf exponent s: the symbol of rank k (its place in ``symbols``, from 1) gets a weight of
    #: 1/k**s, normalised so that each channel's total stays ``len(symbols)`` x its rate above;
    #: 0 = every symbol at the same rates. Why Zipf with s near 1 for Binance spot: its traffic
    #: is concentrated in a few symbols (Binance Research put BTC's share of the platform's spot
    #: volume at 38-45 % in 2019-2020, on ~1,500 pairs), and rank-size plots of the crypto market
    #: fit a power law (market caps: s ~ 1.6-1.7, Sci. Rep. 2022). Messages are less
    #: concentrated than notional volume (a quiet book still moves), so s = 1 is an assumption,
    #: not a fit: with 1,500 symbols the top one carries 13 % of a channel, the top 10 37 %.
    rate_skew: NonNegFloat = 0.0
    #: Generated mode: no symbol sends more depth events per second than this, the excess going
    #: to the others (0 = no cap); ``depth@100ms`` never exceeds 10 a second on Binance.
    max_depth_rate: NonNegFloat = 0.0
    #: Generated mode: stop after this many messages per symbol (0 = endless).
    max_messages: Annotated[int, Field(ge=0)] = 0
    #: Price levels per side of the generated book.
    book_levels: PositiveInt = 200
    seed: int = 1
    #: Replay mode: recorded files (format of shared/data/binance/README.md), played in order.
    replay_files: list[Path] = Field(default_factory=list)
    #: Replay speed factor (1 = recorded pace, 0 = as fast as possible).
    replay_speed: NonNegFloat = 1.0
    #: The server pings this often; unset = the venue's (spot 20 s, futures 3 minutes).
    ping_interval_s: PositiveFloat | None = None
    faults: FaultSettings = Field(default_factory=FaultSettings)

    _lower_symbols = field_validator("symbols")(lambda v: [s.lower() for s in v])
    _known_venue = field_validator("venue")(lambda v: check_venue(v))

    @model_validator(mode="after")
    def _replay_needs_files(self) -> SimulatorSettings:
        if self.mode == "replay" and not self.replay_files:
            raise ValueError("mode 'replay' needs replay_files")
        if self.max_depth_rate and self.max_depth_rate < self.depth_rate:
            raise ValueError("max_depth_rate must not be below depth_rate (the mean per symbol)")
        return self


class ConsumerSettings(Section):
    """``vps-brain consume`` on the Brain: group reads from the VPS, durable store, live feed.

    ``redis`` is the VPS Redis (through the tunnel), as an ACL user that may read and acknowledge
    but not write market data (``vps_brain.consume.reader.READER_ACL``).
    """

    #: Streams to read; empty = every stream matching ``stream_pattern`` (re-discovered).
    streams: list[str] = Field(default_factory=list)
    stream_pattern: str = "md:*"
    discover_interval_s: PositiveFloat = 30.0
    group: str = "brain"
    #: Name within the group; empty = the host name.
    consumer_name: str = ""
    read_count: PositiveInt = 1000
    block_ms: PositiveInt = 1000
    #: Pending entries of another consumer of the group idle this long are claimed (XAUTOCLAIM).
    claim_min_idle_ms: Annotated[int, Field(ge=0)] = 10_000
    store_dir: Path = Path("/var/lib/vps-brain-consumer/store")
    #: A part file is written (then checkpointed, then acknowledged) at the first bound reached.
    flush_interval_s: PositiveFloat = 60.0
    flush_max_records: PositiveInt = 500_000
    flush_max_bytes: PositiveInt = 256 * 1024**2
    parquet_compression: Literal["zstd", "snappy", "none"] = "zstd"
    #: Merge each closed day's parts into one file per partition this often (0 = never).
    compact_interval_s: NonNegFloat = 3600.0
    #: Merge each closed hour's parts (hours of the stream entry ids) into one file per
    #: partition, ``compact_hours_after_s`` after every UTC hour ends (and once at start-up).
    #: Should exceed ``flush_interval_s`` plus the usual lag: parts of an hour committed after
    #: its pass are merged by the next one.
    compact_hours: bool = True
    compact_hours_after_s: NonNegFloat = 300.0
    #: A compaction pass holds the commit slot at most this long at a time (plus the merge of
    #: one partition); the rest of it follows between flushes.
    compact_slice_s: PositiveFloat = 5.0
    #: After each compaction, copy the closed compacted parts, layout unchanged, to this
    #: pyarrow filesystem URI (``file:///srv/md``, ``s3://bucket/md?endpoint_override=...``;
    #: credentials from the environment, e.g. AWS_ACCESS_KEY_ID); empty = no copy.
    archive_uri: str = ""
    retry_min_s: PositiveFloat = 0.1
    retry_max_s: PositiveFloat = 30.0
    #: Publish every entry to the Brain's local Redis (stream ``live_prefix + key``).
    live: bool = False
    live_redis_url: str = "redis://127.0.0.1:6379/0"
    live_prefix: str = "live:"
    live_maxlen: PositiveInt = 100_000
    #: Live first (vps_brain.consume.catchup): a stream whose group is more than this many
    #: entries behind, or has undelivered entries while the last delivered one is older than
    #: ``live_first_s``, is catching up: the live feed follows its newest entries (a tail read
    #: apart from the group) while the group drains the backlog for the store.
    live_first_entries: PositiveInt = 10_000
    live_first_s: PositiveFloat = 10.0
    #: Bytes per second the group's reads may take while any stream is catching up (0 = no
    #: limit): what the home link has left over live traffic. The live tail is never throttled.
    catchup_budget_bytes_s: NonNegFloat = 0.0
    #: Tunnel latency probe (PING to the VPS Redis) period.
    ping_interval_s: PositiveFloat = 1.0
    metrics_host: str = "127.0.0.1"
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9109  # 0 disables
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    @field_validator("live_redis_url")
    @classmethod
    def _live_redis_url(cls, url: str) -> str:
        _check_redis_url(url, "live_redis_url")
        return url

    @field_validator("archive_uri")
    @classmethod
    def _archive_uri(cls, uri: str) -> str:
        if uri and not re.match(r"[a-z][a-z0-9+.-]*://", uri):
            raise ValueError(
                f"archive_uri must be a URI such as file:///srv/md or s3://bucket/md: "
                f"{redact_url(uri)!r}"
            )
        return uri


class Settings(Section):
    """The whole configuration file. Sections: ``redis``, ``collector``, ``simulator``."""

    redis: RedisSettings = Field(default_factory=RedisSettings)
    collector: CollectorSettings = Field(default_factory=CollectorSettings)
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)


# ------------------------------------------------------------------------------------- loading


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        data: Any = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except tomllib.TOMLDecodeError as exc:  # its message holds a position, no text of the file
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What PyYAML found wrong and where, without its snippet of the line (it may hold a secret)."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return type(exc).__name__
    parts = [p for p in (exc.context, exc.problem) if p]
    mark = exc.problem_mark or exc.context_mark
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return redact_url(", ".join(parts) or type(exc).__name__) + where


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Nested overrides from ``VPS_BRAIN__A__B`` variables, and dotted path -> variable name."""
    tree: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, value in environ.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        parsed: Any = value
        if value[:1] in ("[", "{"):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{name}: value is not valid JSON: {exc}") from exc
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: conflicts with another VPS_BRAIN__ variable")
            node = child
        node[parts[-1]] = parsed
        origin[".".join(parts)] = name
    return tree, origin


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def format_validation_error(
    exc: ValidationError, source: str, origin: Mapping[str, str] | None = None
) -> str:
    """One line per error: dotted path, message, the value when harmless, where it came from.

    ``origin`` maps dotted paths to the environment variables that set them; other values are
    attributed to ``source`` (the file, or "command line"). Values are left out for secret
    fields and unknown keys, and URLs are redacted (module docstring).
    """
    origin = origin or {}
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        where = origin.get(path)
        if where is None:  # a model-level error: attribute it to the nearest env-set parent
            where = next((v for k, v in origin.items() if k.startswith(path + ".")), None)
        suffix = f" [from env {where}]" if where else f" [{source}]"
        value = err.get("input")
        shown = (
            ""
            if isinstance(value, dict | list)
            or value is None
            or err["type"] == "extra_forbidden"  # an unknown key may be a mistyped secret
            or any(k in path.lower() for k in _SECRET_KEYS)
            else f" (got {value!r})"
        )
        lines.append(redact_url(f"{path}: {err['msg']}{shown}{suffix}"))
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults, then the file at ``path`` (YAML, or TOML by suffix), then the environment."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        data = _read_file(p)
        source = str(p)
    tree, origin = _env_overrides(os.environ if environ is None else environ)
    data = _merge(data, tree)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, origin)) from None
