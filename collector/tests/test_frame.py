"""The version-1 wire format (docs/frame-format.md) round-trips and rejects corrupt entries."""

from __future__ import annotations

import fnmatch
import struct

import pytest
import zstandard
from conftest import RedisServer

from vps_brain.frame import (
    HEADER,
    INVALID_CHANNEL,
    BatchEncoder,
    Channel,
    FrameError,
    Kind,
    Record,
    UnknownVersionError,
    decode_entry,
    encode_batch,
    encode_plain,
    encode_records,
    format_id,
    parse_id,
    partition_channel,
    quarantine_key,
    sequence_channel,
    stream_key,
    stream_pattern,
)

RECORDS = [
    Record(1_723_075_200_000_000_001, Kind.MESSAGE, b'{"stream":"ethusdt@trade","data":{"t":1}}'),
    Record(1_723_075_200_000_000_002, Kind.SNAPSHOT, b'{"lastUpdateId":7,"bids":[],"asks":[]}'),
    Record(1_723_075_200_000_000_003, Kind.GAP, b""),
    Record(2**64 - 1, Kind.QUARANTINE, bytes(range(256))),
    Record(0, Kind.CONTROL, b'{"event":"opened"}'),
]


def test_stream_keys_are_lower_case_per_exchange_and_symbol() -> None:
    assert stream_key("binance", "ETHUSDT") == "md:binance:ethusdt"
    assert quarantine_key("binance") == "md:binance:_quarantine"


def test_header_layout_is_the_documented_struct() -> None:
    assert HEADER.format == "<QBI"
    assert HEADER.size == 13
    raw = encode_records(RECORDS[:1])
    assert raw[:13] == struct.pack("<QBI", RECORDS[0].recv_ns, 1, len(RECORDS[0].payload))
    assert raw[13:] == RECORDS[0].payload


@pytest.mark.parametrize("codec", ["zstd", "none"])
def test_batched_entry_round_trips_records_byte_for_byte(codec: str) -> None:
    fields = encode_batch(RECORDS, codec=codec)
    assert fields[b"v"] == b"1"
    assert fields[b"c"] == codec.encode()
    assert fields[b"n"] == b"5"
    decoded = decode_entry(fields)
    assert decoded == RECORDS
    assert all(isinstance(r.kind, Kind) for r in decoded)


def test_uncompressed_batch_d_is_the_plain_concatenation() -> None:
    assert encode_batch(RECORDS, codec="none")[b"d"] == encode_records(RECORDS)


def test_empty_batch_round_trips() -> None:
    assert decode_entry(encode_batch([])) == []


def test_plain_entry_round_trips_and_is_readable_text() -> None:
    rec = RECORDS[0]
    fields = encode_plain(rec)
    assert fields == {b"v": b"1", b"k": b"1", b"t": str(rec.recv_ns).encode(), b"p": rec.payload}
    assert decode_entry(fields) == [rec]


def test_decoder_accepts_str_keys() -> None:
    fields = {k.decode(): v for k, v in encode_batch(RECORDS).items()}
    assert decode_entry(fields) == RECORDS


def test_unknown_or_missing_version_is_rejected_with_its_own_class() -> None:
    fields = encode_batch(RECORDS)
    with pytest.raises(UnknownVersionError):
        decode_entry({**fields, b"v": b"2"})
    del fields[b"v"]
    with pytest.raises(UnknownVersionError):
        decode_entry(fields)
    assert issubclass(UnknownVersionError, FrameError)


def _corrupt_variants() -> list[tuple[str, dict[bytes, bytes]]]:
    good = encode_batch(RECORDS)
    raw = encode_records(RECORDS)
    cctx = zstandard.ZstdCompressor()
    return [
        ("wrong count", {**good, b"n": b"4"}),
        ("count too high", {**good, b"n": b"6"}),
        ("count not a number", {**good, b"n": b"x"}),
        ("missing count", {k: v for k, v in good.items() if k != b"n"}),
        ("unknown codec", {**good, b"c": b"lz4"}),
        ("garbage data", {**good, b"d": b"not zstd at all"}),
        ("truncated zstd", {**good, b"d": good[b"d"][:-4]}),
        ("bytes after zstd", {**good, b"d": good[b"d"] + b"xx"}),
        ("truncated record", {**good, b"d": cctx.compress(raw[:-1])}),
        ("leftover bytes", {**good, b"d": cctx.compress(raw + b"\x00")}),
        ("unknown kind", {**good, b"n": b"1", b"d": cctx.compress(HEADER.pack(1, 9, 0))}),
        ("neither d nor p", {b"v": b"1", b"n": b"1"}),
        ("plain bad kind", {**encode_plain(RECORDS[0]), b"k": b"77"}),
        ("plain bad time", {**encode_plain(RECORDS[0]), b"t": b"-1"}),
    ]


@pytest.mark.parametrize(("name", "fields"), _corrupt_variants())
def test_corrupt_entries_raise_frame_error(name: str, fields: dict[bytes, bytes]) -> None:
    with pytest.raises(FrameError):
        decode_entry(fields)


def test_encoder_rejects_unknown_codec() -> None:
    with pytest.raises(ValueError, match="codec"):
        BatchEncoder("lz4")


def test_entries_round_trip_through_a_real_redis(redis_server: RedisServer) -> None:
    r = redis_server.client()
    key = stream_key("binance", "ethusdt")
    r.xadd(key, encode_batch(RECORDS))  # type: ignore[arg-type]
    r.xadd(key, encode_plain(RECORDS[1]))  # type: ignore[arg-type]
    entries = r.xrange(key)
    got = [rec for _id, fields in entries for rec in decode_entry(fields)]
    assert got == [*RECORDS, RECORDS[1]]


def test_stream_ids_parse_to_tuples_that_order_like_redis_and_format_back() -> None:
    assert parse_id(b"1723161254024-3") == parse_id("1723161254024-3") == (1723161254024, 3)
    assert parse_id("5") == (5, 0)
    assert parse_id(b"9-10") > parse_id(b"9-9") > parse_id(b"8-100")
    assert format_id(parse_id("1723161254024-3")) == "1723161254024-3"


@pytest.mark.parametrize(
    ("name", "sequence", "partition"),
    [
        ("ethusdt@trade", Channel.TRADE, "trade"),
        ("ethusdt@depth", Channel.DEPTH, "depth"),
        ("ethusdt@depth@100ms", Channel.DEPTH, "depth"),
        ("ethusdt@bookTicker", Channel.TICKER, "bookTicker"),
        ("ethusdt@aggTrade", Channel.AGG_TRADE, "aggTrade"),
        ("ethusdt@depth@0ms", Channel.DEPTH, "depth"),  # futures
        ("ethusdt@markPrice@1s", Channel.OTHER, "markPrice"),
        # They differ: a partial book has no U/u chain to check, but is stored as its own channel.
        ("ethusdt@depth5", Channel.OTHER, "depth5"),
        ("ethusdt@depth20@100ms", Channel.OTHER, "depth20"),
        # A name that is no safe directory, or that is a record kind's channel, is not stored
        # under its own name; the collector simply does not check it.
        ("ethusdt@gap", Channel.OTHER, INVALID_CHANNEL),
        ("ethusdt@../x", Channel.OTHER, INVALID_CHANNEL),
        ("ethusdt", Channel.OTHER, INVALID_CHANNEL),
    ],
)
def test_sequence_and_partition_channels_answer_different_questions(
    name: str, sequence: Channel, partition: str
) -> None:
    assert sequence_channel(name) is sequence
    assert partition_channel(name) == partition


def test_stream_pattern_matches_the_stream_keys() -> None:
    assert fnmatch.fnmatchcase(stream_key("binance", "ETHUSDT"), stream_pattern("binance"))
    assert fnmatch.fnmatchcase(quarantine_key("binance"), stream_pattern())
    assert not fnmatch.fnmatchcase(stream_key("binance", "ethusdt"), stream_pattern("kraken"))
