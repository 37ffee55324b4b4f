"""The wire format of a stream entry, version 1: the one implementation of docs/frame-format.md.

Collector and consumer both import this module; nothing else builds or parses entries, stream
keys (:func:`stream_key`, :func:`stream_pattern`), entry ids (:func:`parse_id`, :func:`format_id`)
or the channel of a stream name (:func:`sequence_channel`, :func:`partition_channel`).

A *record* is one thing received from the exchange, kept byte for byte, plus its receive time in
ns and a kind (:class:`Kind`). Records travel in Redis stream entries of two shapes:

* batched (default): fields ``v=1``, ``c=zstd|none``, ``n=<count>``, ``d=codec(records)`` where
  each record is ``struct.pack("<QBI", recv_ns, kind, len(payload)) + payload``;
* plain (inspection): fields ``v=1``, ``k=<kind>``, ``t=<recv_ns>``, ``p=<payload>``.

:func:`decode_entry` accepts both shapes and raises :class:`FrameError` (or its subclass
:class:`UnknownVersionError`) for anything it cannot decode exactly; the caller quarantines it.

Example::

    enc = BatchEncoder()
    fields = enc.encode([Record(time.time_ns(), Kind.MESSAGE, raw)])
    await redis.xadd(stream_key("binance", "ETHUSDT"), fields)
    ...
    for rec in decode_entry(fields_from_xread):
        ...
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum, IntEnum
from typing import Final, NamedTuple

import zstandard

__all__ = [
    "CODECS",
    "FORMAT_VERSION",
    "HEADER",
    "INVALID_CHANNEL",
    "KIND_CHANNEL",
    "MAX_DECODED_BYTES",
    "RAW_CHANNELS",
    "ZERO_ID",
    "BatchEncoder",
    "Channel",
    "Decoder",
    "EntryFields",
    "FrameError",
    "Kind",
    "Record",
    "StreamId",
    "UnknownVersionError",
    "decode_entry",
    "encode_batch",
    "encode_plain",
    "encode_records",
    "format_id",
    "parse_id",
    "partition_channel",
    "quarantine_key",
    "sequence_channel",
    "stream_key",
    "stream_pattern",
]

FORMAT_VERSION: Final = 1
_VERSION_BYTES: Final = b"1"
#: ``<QBI``: recv_ns (u64), kind (u8), payload length (u32), little endian, no padding.
HEADER: Final = struct.Struct("<QBI")
CODECS: Final = ("zstd", "none")
#: A decoded ``d`` larger than this is refused (protects readers from a decompression bomb).
MAX_DECODED_BYTES: Final = 512 * 1024 * 1024
STREAM_PREFIX: Final = "md"
QUARANTINE_SYMBOL: Final = "_quarantine"

#: Fields of one stream entry as written by :func:`encode_batch` / :func:`encode_plain`.
EntryFields = dict[bytes, bytes]


class Kind(IntEnum):
    """What a record's payload is (docs/frame-format.md, "Records")."""

    MESSAGE = 1  # websocket text frame, combined-stream envelope as received
    SNAPSHOT = 2  # REST /api/v3/depth body as received
    GAP = 3  # collector JSON {"symbol","channel","reason","expected","got"}
    QUARANTINE = 4  # bytes that failed validation, as received
    CONTROL = 5  # collector JSON (connection opened/renewed/closed, resync started)


class Record(NamedTuple):
    """One received thing: receive time (ns since the epoch), kind and the raw bytes."""

    recv_ns: int
    kind: Kind
    payload: bytes


class FrameError(ValueError):
    """A stream entry that is not a valid version-1 frame (corrupt, truncated, wrong shape)."""


class UnknownVersionError(FrameError):
    """A stream entry whose ``v`` field is missing or is not a version this reader knows."""


def stream_key(exchange: str, symbol: str) -> str:
    """The stream of one exchange and symbol: ``md:binance:ethusdt`` (symbol lower-cased)."""
    return f"{STREAM_PREFIX}:{exchange.lower()}:{symbol.lower()}"


def quarantine_key(exchange: str) -> str:
    """The stream for records that cannot be attributed to a symbol: ``md:binance:_quarantine``."""
    return f"{STREAM_PREFIX}:{exchange.lower()}:{QUARANTINE_SYMBOL}"


def stream_pattern(exchange: str | None = None) -> str:
    """The SCAN pattern of the streams of ``exchange`` (``md:binance:*``), or of all (``md:*``)."""
    return f"{STREAM_PREFIX}:{exchange.lower()}:*" if exchange else f"{STREAM_PREFIX}:*"


# ------------------------------------------------------------------------------ stream ids

#: A stream entry id ``<ms>-<seq>`` as a tuple: tuples order as Redis orders entry ids.
StreamId = tuple[int, int]
ZERO_ID: Final[StreamId] = (0, 0)


def parse_id(raw: bytes | str) -> StreamId:
    """``b"1723161254024-3"`` -> ``(1723161254024, 3)``; ``"5"`` (no sequence) -> ``(5, 0)``."""
    s = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = s.partition("-")
    return int(ms), int(seq or 0)


def format_id(sid: StreamId) -> str:
    """``(1723161254024, 3)`` -> ``"1723161254024-3"`` (the inverse of :func:`parse_id`)."""
    return f"{sid[0]}-{sid[1]}"


# ---------------------------------------------------------------------------- channel names
#
# A MESSAGE record carries the exchange's combined-stream name, ``<symbol>@<channel>[@<speed>]``
# (``ethusdt@depth@100ms``). Two questions are asked of it, with different answers on purpose:
#
# * :func:`sequence_channel` (collector): which sequence rules apply? Trades and aggTrades have
#   consecutive ids, the diff-depth stream (``depth``, ``depth@100ms``, ``depth@0ms``) has U/u (or
#   pu/u) chains, bookTickers increasing ``u``; partial-book streams (``depth5``, ``depth20``)
#   are snapshots without a chain, so they are ``OTHER`` like any stream it does not check.
# * :func:`partition_channel` (store): which directory do the rows go to? The channel part as
#   written (``depth5`` stays ``depth5``), or :data:`INVALID_CHANNEL` when it cannot be a safe
#   directory name or would collide with a record kind's channel (:data:`KIND_CHANNEL`).


class Channel(Enum):
    """The sequence rules of a stream (:func:`sequence_channel`)."""

    TRADE = "trade"
    AGG_TRADE = "aggTrade"
    DEPTH = "depth"
    TICKER = "bookTicker"
    OTHER = "other"


def sequence_channel(stream_name: str) -> Channel:
    """``ethusdt@depth@100ms`` -> ``DEPTH``; ``ethusdt@depth5`` -> ``OTHER`` (no U/u chain)."""
    _, _, ch = stream_name.partition("@")
    if ch == "trade":
        return Channel.TRADE
    if ch == "aggTrade":
        return Channel.AGG_TRADE
    if ch.startswith("depth") and not ch[5:6].isdigit():  # depth, depth@100ms (not depth5/10/20)
        return Channel.DEPTH
    if ch == "bookTicker":
        return Channel.TICKER
    return Channel.OTHER


#: The store's channel of the records that are not websocket messages.
KIND_CHANNEL: Final[dict[int, str]] = {
    Kind.SNAPSHOT: "snapshot",
    Kind.GAP: "gap",
    Kind.QUARANTINE: "quarantine",
    Kind.CONTROL: "control",
}
#: The store's channel of a message whose stream name (or JSON) is unusable.
INVALID_CHANNEL: Final = "_invalid"
#: Channels whose rows carry no columns of their own.
RAW_CHANNELS: Final = frozenset({"gap", "quarantine", "control", INVALID_CHANNEL})
#: Channel names become directory names: nothing but these characters.
_CHANNEL_RE: Final = re.compile(r"[A-Za-z0-9_]{1,64}")
_partition_channels: dict[str, str] = {}


def partition_channel(stream_name: str) -> str:
    """``ethusdt@depth@100ms`` -> ``depth``, ``ethusdt@depth5`` -> ``depth5``;
    :data:`INVALID_CHANNEL` for an unusable name."""
    channel = _partition_channels.get(stream_name)
    if channel is None:
        parts = stream_name.split("@", 2) if isinstance(stream_name, str) else []
        channel = parts[1] if len(parts) > 1 else INVALID_CHANNEL
        if channel in RAW_CHANNELS or not _CHANNEL_RE.fullmatch(channel):
            channel = INVALID_CHANNEL
        if len(_partition_channels) < 100_000:  # bounded: names come from the network
            _partition_channels[stream_name] = channel
    return channel


# ---------------------------------------------------------------------------------------- encode


def encode_records(records: Iterable[Record]) -> bytes:
    """Concatenate records, each as ``HEADER`` + payload (the uncompressed ``d``)."""
    pack = HEADER.pack
    parts: list[bytes] = []
    for rec in records:
        parts.append(pack(rec.recv_ns, rec.kind, len(rec.payload)))
        parts.append(rec.payload)
    return b"".join(parts)


def market_data_params() -> zstandard.ZstdCompressionParameters:
    """zstd parameters tuned on the ETHUSDT recordings (batches of ~2000 records).

    lazy2 matching with small tables and min_match 7 compresses Binance JSON about 8.2x at
    ~3 us/record, where level 3 gives 7.0x at ~0.8 us and level 6 7.8x at ~4 us. Readers need
    nothing special: these are ordinary zstd frames (window 128 KiB).
    """
    return zstandard.ZstdCompressionParameters(
        window_log=17,
        hash_log=13,
        chain_log=12,
        search_log=1,
        min_match=7,
        target_length=0,
        strategy=zstandard.STRATEGY_LAZY2,
        write_content_size=True,
    )


class BatchEncoder:
    """Builds batched entries; keeps one zstd compressor (plain zstd frames, no dictionary).

    ``level=None`` (default) uses :func:`market_data_params`; an int uses that zstd level.
    """

    def __init__(self, codec: str = "zstd", level: int | None = None) -> None:
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}; expected one of {CODECS}")
        self.codec = codec
        self._cctx: zstandard.ZstdCompressor | None = None
        if codec == "zstd":
            self._cctx = (
                zstandard.ZstdCompressor(compression_params=market_data_params())
                if level is None
                else zstandard.ZstdCompressor(level=level, write_content_size=True)
            )
        self._codec_bytes = codec.encode()

    def encode_raw(self, raw: bytes, count: int) -> EntryFields:
        """Entry fields for ``count`` records already concatenated by :func:`encode_records`."""
        data = self._cctx.compress(raw) if self._cctx is not None else raw
        return {
            b"v": _VERSION_BYTES,
            b"c": self._codec_bytes,
            b"n": str(count).encode(),
            b"d": data,
        }

    def encode(self, records: Sequence[Record]) -> EntryFields:
        """Entry fields holding all ``records`` in order."""
        return self.encode_raw(encode_records(records), len(records))


def encode_batch(
    records: Sequence[Record], codec: str = "zstd", level: int | None = None
) -> EntryFields:
    """One batched entry for ``records`` (convenience; hot paths keep a :class:`BatchEncoder`)."""
    return BatchEncoder(codec, level).encode(records)


def encode_plain(record: Record) -> EntryFields:
    """One plain (inspection) entry for a single record."""
    return {
        b"v": _VERSION_BYTES,
        b"k": str(int(record.kind)).encode(),
        b"t": str(record.recv_ns).encode(),
        b"p": record.payload,
    }


# ---------------------------------------------------------------------------------------- decode


def _as_bytes(value: bytes | str | memoryview) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


def _field(fields: Mapping[bytes, bytes], name: bytes) -> bytes:
    try:
        return fields[name]
    except KeyError:
        raise FrameError(f"entry has no field {name.decode()!r}") from None


def _int_field(fields: Mapping[bytes, bytes], name: bytes) -> int:
    raw = _field(fields, name)
    if not raw.isdigit():
        raise FrameError(f"field {name.decode()!r} is not a decimal integer: {raw[:32]!r}")
    return int(raw)


def _kind(value: int) -> Kind:
    try:
        return Kind(value)
    except ValueError:
        raise FrameError(f"unknown record kind {value}") from None


class Decoder:
    """Decodes entries of either shape; keeps one zstd decompressor."""

    def __init__(self, max_decoded_bytes: int = MAX_DECODED_BYTES) -> None:
        self._dctx = zstandard.ZstdDecompressor()
        self._max = max_decoded_bytes

    def decode(self, fields: Mapping[bytes, bytes] | Mapping[str, bytes]) -> list[Record]:
        """The records of one stream entry, in order. Raises :class:`FrameError` if corrupt."""
        f = {_as_bytes(k): _as_bytes(v) for k, v in fields.items()}
        version = f.get(b"v")
        if version != _VERSION_BYTES:
            raise UnknownVersionError(
                f"unsupported frame version {version!r} (this reader knows {FORMAT_VERSION})"
            )
        if b"d" in f:
            return self._decode_batch(f)
        if b"p" in f:
            return [Record(_int_field(f, b"t"), _kind(_int_field(f, b"k")), f[b"p"])]
        raise FrameError("entry has neither 'd' (batched) nor 'p' (plain)")

    def _decompress(self, codec: bytes, data: bytes) -> bytes:
        if codec == b"none":
            return data
        if codec != b"zstd":
            raise FrameError(f"unknown codec {codec!r}")
        try:
            size = zstandard.get_frame_parameters(data).content_size
            if size == zstandard.CONTENTSIZE_ERROR:
                raise FrameError("invalid zstd frame header")
            if size != zstandard.CONTENTSIZE_UNKNOWN and size > self._max:
                raise FrameError(f"frame content size {size} over limit")
            dobj = self._dctx.decompressobj()
            out = dobj.decompress(data)
            if len(out) > self._max:
                raise FrameError("decoded frame over limit")
            if not dobj.eof:
                raise FrameError("truncated zstd frame")
            if dobj.unused_data:
                raise FrameError("bytes after the zstd frame")
            return out
        except zstandard.ZstdError as exc:
            raise FrameError(f"zstd: {exc}") from exc

    def _decode_batch(self, f: Mapping[bytes, bytes]) -> list[Record]:
        count = _int_field(f, b"n")
        codec = _field(f, b"c")
        raw = self._decompress(codec, f[b"d"])
        out: list[Record] = []
        unpack = HEADER.unpack_from
        hsize = HEADER.size
        pos = 0
        end = len(raw)
        kinds = _KINDS
        while pos < end:
            if pos + hsize > end:
                raise FrameError(f"truncated record header at offset {pos}")
            recv_ns, kind, length = unpack(raw, pos)
            pos += hsize
            if pos + length > end:
                raise FrameError(f"record at offset {pos - hsize} runs past the end")
            k = kinds.get(kind)
            if k is None:
                raise FrameError(f"unknown record kind {kind}")
            out.append(Record(recv_ns, k, raw[pos : pos + length]))
            pos += length
            if len(out) > count:
                raise FrameError(f"entry says n={count} but holds more records")
        if len(out) != count:
            raise FrameError(f"entry says n={count} but holds {len(out)} records")
        if pos != end:
            raise FrameError(f"{end - pos} bytes left over after {count} records")
        return out


_KINDS: Final = {int(k): k for k in Kind}
_DEFAULT_DECODER: Decoder | None = None


def decode_entry(fields: Mapping[bytes, bytes] | Mapping[str, bytes]) -> list[Record]:
    """Decode one stream entry (batched or plain) with a shared :class:`Decoder`."""
    global _DEFAULT_DECODER
    if _DEFAULT_DECODER is None:
        _DEFAULT_DECODER = Decoder()
    return _DEFAULT_DECODER.decode(fields)
