"""Records -> rows of the store: the raw payload plus the columns a strategy filters on.

One row per record. Every row carries its position in the VPS stream (``entry_ms``, ``entry_seq``
of the stream entry id, ``rec`` = index of the record inside the entry), which is the store's
order, and ``recv_ns``, the collector's receive time. Prices and quantities stay the exchange's
strings (exact); ids and times are int64. Columns that do not apply to a channel are null.

The channel (the partition) of a websocket message is :func:`vps_brain.frame.partition_channel` of
its stream name (``ethusdt@depth@100ms`` -> ``depth``); the other record kinds go to
:data:`vps_brain.frame.KIND_CHANNEL` (``snapshot``, ``gap``, ``quarantine``, ``control``). A
message whose JSON or stream name cannot be used goes to the ``_invalid`` channel, raw.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Final

import orjson
import pyarrow as pa

from vps_brain.frame import (
    INVALID_CHANNEL,
    KIND_CHANNEL,
    RAW_CHANNELS,
    Kind,
    partition_channel,
)

SCHEMA: Final = pa.schema(
    [
        ("entry_ms", pa.int64()),
        ("entry_seq", pa.int64()),
        ("rec", pa.int32()),
        ("recv_ns", pa.int64()),
        ("kind", pa.int8()),
        ("event_ms", pa.int64()),
        ("trade_ms", pa.int64()),
        ("first_update_id", pa.int64()),
        ("update_id", pa.int64()),
        ("trade_id", pa.int64()),
        ("price", pa.string()),
        ("qty", pa.string()),
        ("side", pa.string()),
        ("bid_price", pa.string()),
        ("bid_qty", pa.string()),
        ("ask_price", pa.string()),
        ("ask_qty", pa.string()),
        ("payload", pa.binary()),
    ]
)

#: Columns every row has, before the channel's own columns; ``payload`` always comes last.
COMMON: Final = ("entry_ms", "entry_seq", "rec", "recv_ns", "kind")

Row = tuple[Any, ...]
Extractor = Callable[[dict[str, Any]], tuple[Any, ...]]


def _side(m: Any) -> str | None:
    # Binance "m": the buyer is the maker, so the aggressor (taker) sold.
    if m is True:
        return "sell"
    if m is False:
        return "buy"
    return None


def _trade(d: dict[str, Any]) -> tuple[Any, ...]:
    g = d.get
    return g("E"), g("T"), g("t"), g("p"), g("q"), _side(g("m"))


def _agg_trade(d: dict[str, Any]) -> tuple[Any, ...]:
    g = d.get
    return g("E"), g("T"), g("a"), g("p"), g("q"), _side(g("m"))


def _depth(d: dict[str, Any]) -> tuple[Any, ...]:
    g = d.get
    return g("E"), g("U"), g("u")


def _book_ticker(d: dict[str, Any]) -> tuple[Any, ...]:
    g = d.get
    return g("u"), g("b"), g("B"), g("a"), g("A")


def _event(d: dict[str, Any]) -> tuple[Any, ...]:
    return (d.get("E"),)


def _snapshot(d: dict[str, Any]) -> tuple[Any, ...]:
    return (d.get("lastUpdateId"),)


def _none(d: dict[str, Any]) -> tuple[Any, ...]:
    return ()


_TRADE_COLS = ("event_ms", "trade_ms", "trade_id", "price", "qty", "side")
#: channel -> (its columns, the function that extracts them from the event's ``data``)
LAYOUTS: Final[dict[str, tuple[tuple[str, ...], Extractor]]] = {
    "trade": (_TRADE_COLS, _trade),
    "aggTrade": (_TRADE_COLS, _agg_trade),
    "depth": (("event_ms", "first_update_id", "update_id"), _depth),
    "bookTicker": (("update_id", "bid_price", "bid_qty", "ask_price", "ask_qty"), _book_ticker),
    "snapshot": (("update_id",), _snapshot),
}
_GENERIC: Final = (("event_ms",), _event)
_RAW: Final = ((), _none)


NS_PER_DAY: Final = 86_400 * 1_000_000_000
_day_names: dict[int, str] = {}


def day_name(recv_ns: int) -> str:
    """``YYYY-MM-DD`` (UTC) of a receive time; the store's date partition."""
    day = recv_ns // NS_PER_DAY
    name = _day_names.get(day)
    if name is None:
        name = (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()
        _day_names[day] = name
    return name


def layout(channel: str) -> tuple[tuple[str, ...], Extractor]:
    return LAYOUTS.get(channel) or (_RAW if channel in RAW_CHANNELS else _GENERIC)


_loads = orjson.loads
_JSONError = orjson.JSONDecodeError


def classify(kind: int, payload: bytes) -> tuple[str, tuple[Any, ...]]:
    """The channel of a record and its channel columns (see :data:`LAYOUTS`)."""
    if kind == 1:  # Kind.MESSAGE
        try:
            env = _loads(payload)
            data = env["data"]
            channel = partition_channel(env["stream"])
            # Fast paths for the common channels; any surprise falls back to .get() below.
            if channel == "bookTicker":
                return channel, (data["u"], data["b"], data["B"], data["a"], data["A"])
            if channel == "trade":
                m = data["m"]
                return channel, (
                    data["E"], data["T"], data["t"], data["p"], data["q"],
                    "sell" if m is True else "buy" if m is False else None,
                )  # fmt: skip
            if channel == "depth":
                return channel, (data["E"], data["U"], data["u"])
        except (_JSONError, KeyError, TypeError):
            pass
        return _classify_slow(payload)
    if kind == Kind.SNAPSHOT:
        try:
            snap = _loads(payload)
            return "snapshot", (snap.get("lastUpdateId"),)
        except (_JSONError, AttributeError):
            return INVALID_CHANNEL, ()
    return KIND_CHANNEL.get(kind, INVALID_CHANNEL), ()


def _classify_slow(payload: bytes) -> tuple[str, tuple[Any, ...]]:
    try:
        env = _loads(payload)
        stream = env["stream"]
        data = env["data"]
    except (_JSONError, KeyError, TypeError, IndexError):
        return INVALID_CHANNEL, ()
    if not isinstance(data, dict) or not isinstance(stream, str):
        return INVALID_CHANNEL, ()
    channel = partition_channel(stream)
    if channel == INVALID_CHANNEL:
        return channel, ()
    lay = LAYOUTS.get(channel)
    if lay is not None:
        return channel, lay[1](data)
    return channel, (data.get("E"),)


def columns_of(channel: str) -> tuple[str, ...]:
    """All columns of a row of ``channel``, in row order."""
    return (*COMMON, *layout(channel)[0], "payload")
