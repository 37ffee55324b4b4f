"""The router under malformed frames: nothing escapes ``on_frame``, good frames pass exactly once.

A seeded mutation fuzzer over the real ETHUSDT recording (2024-08-08, 33,617 frames): about 30% of
the frames are replaced by a mutated copy (bit flips, truncation, wrong types, ``"U":1e308`` and
other numbers outside Binance's 64-bit ids, nested garbage). Each mutated frame is classified
against the wire format (docs/frame-format.md: a combined-stream envelope whose ids are JSON
integers in ``0 <= id < 2**63``, depth ``U <= u``) by an oracle independent of the router:

* malformed: it must be quarantined (a QUARANTINE record), never emitted as a message;
* well formed with the original's ids (a flipped price digit, an extra key): it takes the
  original's place and is emitted once;
* well formed with *other* ids (a flipped id digit): indistinguishable from a real gap or
  duplicate, whose handling the sequence tests prove, so the fuzzer draws another mutation.

Every frame left unmutated must then be emitted as a message exactly once, whatever came before.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from vps_brain.collect.router import Router
from vps_brain.collect.stats import CollectorStats
from vps_brain.frame import Kind
from vps_brain.recordings import read_recording

STREAMS = ["ethusdt@trade", "ethusdt@depth@100ms", "ethusdt@bookTicker"]
#: The id fields of each stream, in the order the router reads them.
ID_FIELDS = {
    "ethusdt@depth@100ms": ("U", "u"),
    "ethusdt@trade": ("t",),
    "ethusdt@bookTicker": ("u",),
}
MUTATED_SHARE = 0.3
SEEDS = (1, 2, 3)
ID_LIMIT = 2**63


@pytest.fixture(scope="module")
def frames(binance_data: Path) -> list[tuple[int, bytes]]:
    """The websocket frames of the 2024-08-08 recording (its REST snapshot line is not a frame)."""
    path = binance_data / "spot_ethusdt_20240808.gz"
    return [(r.recv_ns, r.raw) for r in read_recording(path) if not r.is_snapshot]


# ------------------------------------------------------------------------------------- oracle


def spec_ids(raw: bytes) -> tuple[str, tuple[int, ...]] | None:
    """The stream and ids of a well-formed frame by the wire format, or None if malformed."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(msg, dict):
        return None
    name, data = msg.get("stream"), msg.get("data")
    if not isinstance(name, str) or name not in ID_FIELDS or not isinstance(data, dict):
        return None
    ids: list[int] = []
    for key in ID_FIELDS[name]:
        value = data.get(key)
        if type(value) is not int or not 0 <= value < ID_LIMIT:
            return None
        ids.append(value)
    if len(ids) == 2 and ids[0] > ids[1]:
        return None
    return name, tuple(ids)


# ---------------------------------------------------------------------------------- mutations

Mutation = Callable[[random.Random, bytes], bytes]


def bit_flips(rng: random.Random, raw: bytes) -> bytes:
    out = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncation(rng: random.Random, raw: bytes) -> bytes:
    return raw[: rng.randrange(len(raw))]


def _dumps(msg: Any) -> bytes:
    # json, not orjson: it writes integers of any size, as a broken or hostile peer could.
    return json.dumps(msg, separators=(",", ":")).encode()


def _id_field(rng: random.Random, msg: dict[str, Any]) -> str:
    return rng.choice(ID_FIELDS[msg["stream"]])


WRONG_TYPES: tuple[Callable[[int], Any], ...] = (
    str,
    float,
    lambda i: None,
    lambda i: True,
    lambda i: [i],
    lambda i: {"id": i},
    lambda i: "not a number",
)


def wrong_type(rng: random.Random, raw: bytes) -> bytes:
    msg = orjson.loads(raw)
    where = rng.randrange(4)
    if where == 0:  # an id
        key = _id_field(rng, msg)
        msg["data"][key] = rng.choice(WRONG_TYPES)(msg["data"][key])
    elif where == 1:  # the data
        msg["data"] = rng.choice([None, 1, "data", [msg["data"]], True])
    elif where == 2:  # the stream name
        msg["stream"] = rng.choice([None, 7, ["ethusdt@trade"], {"s": 1}, 1.5])
    else:  # the envelope
        msg = rng.choice([[msg], "frame", 42, None, 2.5e300])
    return _dumps(msg)


HUGE = (1e308, -1e308, 2**64, 2**64 + 12345, 10**30, -(2**63) - 1, -1, 2**63, 1.8e19)


def huge_number(rng: random.Random, raw: bytes) -> bytes:
    msg = orjson.loads(raw)
    data = msg["data"]
    if msg["stream"] == "ethusdt@depth@100ms" and rng.random() < 0.3:
        data["U"] = 1e308  # the frame of the issue
    else:
        data[_id_field(rng, msg)] = rng.choice(HUGE)
    return _dumps(msg)


def depth_inverted(rng: random.Random, raw: bytes) -> bytes:
    """A depth event whose first id is past its last one; other streams get a negative id."""
    msg = orjson.loads(raw)
    data = msg["data"]
    if msg["stream"] == "ethusdt@depth@100ms":
        data["U"] = data["u"] + rng.randint(1, 10**6)
    else:
        data[_id_field(rng, msg)] = -rng.randint(1, 10**6)
    return _dumps(msg)


def _garbage(rng: random.Random, depth: int) -> Any:
    if depth <= 0:
        return rng.choice([None, True, 0, -1, 1e308, "x", "\u0000\ud7ff", 2**70])
    if rng.random() < 0.5:
        return [_garbage(rng, depth - 1) for _ in range(rng.randint(1, 3))]
    return {str(rng.randrange(99)): _garbage(rng, depth - 1) for _ in range(rng.randint(1, 3))}


def nested_garbage(rng: random.Random, raw: bytes) -> bytes:
    where = rng.randrange(5)
    if where == 0:  # nesting past any parser's limit
        n = rng.randint(1_000, 5_000)
        return b'{"stream":"ethusdt@trade","data":' + b"[" * n + b"]" * n + b"}"
    msg = orjson.loads(raw)
    junk = _garbage(rng, rng.randint(1, 6))
    if where == 1:
        msg["data"][_id_field(rng, msg)] = junk
    elif where == 2:
        msg["data"] = junk
    elif where == 3:
        msg["data"]["zz"] = junk  # an extra key: well formed, same ids
    else:
        msg = {"stream": msg["stream"], "data": msg["data"], "stream2": junk}
    return _dumps(msg)


MUTATIONS: dict[str, Mutation] = {
    "bit_flips": bit_flips,
    "truncation": truncation,
    "wrong_type": wrong_type,
    "huge_number": huge_number,
    "depth_inverted": depth_inverted,
    "nested_garbage": nested_garbage,
}


@dataclass
class Fed:
    raw: bytes
    mutation: str | None  # None: the recorded frame, unchanged
    malformed: bool


def mutate(rng: random.Random, raw: bytes) -> Fed:
    """A mutated copy of ``raw`` that is malformed or keeps its ids (never a forged id)."""
    original = spec_ids(raw)
    assert original is not None, raw[:80]
    while True:
        name = rng.choice(list(MUTATIONS))
        out = MUTATIONS[name](rng, raw)
        ids = spec_ids(out)
        if ids is None:
            return Fed(out, name, malformed=True)
        if ids == original:
            return Fed(out, name, malformed=False)
        # well formed with other ids: a forged gap or duplicate, not a malformed frame


# -------------------------------------------------------------------------------------- tests


class Sink:
    def __init__(self) -> None:
        self.by_kind: dict[int, Counter[bytes]] = {int(k): Counter() for k in Kind}

    def emit(self, _key: str, _recv_ns: int, kind: int, payload: bytes) -> None:
        self.by_kind[kind][payload] += 1


@pytest.mark.parametrize("seed", SEEDS)
def test_no_malformed_frame_escapes_and_every_good_frame_is_emitted_once(
    frames: list[tuple[int, bytes]], seed: int
) -> None:
    rng = random.Random(seed)
    sink = Sink()
    stats = CollectorStats()
    router = Router(
        "binance", STREAMS, emit=sink.emit, request_snapshot=lambda _symbol: None, stats=stats
    )
    fed: list[Fed] = []
    for i, (recv_ns, raw) in enumerate(frames):
        item = mutate(rng, raw) if rng.random() < MUTATED_SHARE else Fed(raw, None, False)
        fed.append(item)
        try:
            router.on_frame(1, recv_ns, item.raw)
        except Exception as exc:
            pytest.fail(
                f"seed {seed}, frame {i} ({item.mutation}): {exc!r} escaped on_frame "
                f"for {item.raw[:120]!r}"
            )

    messages = sink.by_kind[Kind.MESSAGE]
    quarantined = sink.by_kind[Kind.QUARANTINE]
    good = [f for f in fed if f.mutation is None]
    malformed = [f for f in fed if f.malformed]
    assert len(good) > 0.65 * len(frames) and len(malformed) > 0.15 * len(frames)
    lost = [f.raw[:120] for f in good if messages[f.raw] != 1]
    assert not lost, f"{len(lost)} unmutated frames not emitted exactly once, first {lost[0]!r}"
    emitted = [(f.mutation, f.raw[:120]) for f in malformed if messages[f.raw]]
    assert not emitted, f"{len(emitted)} malformed frames emitted as messages, first {emitted[0]}"
    missed = [(f.mutation, f.raw[:120]) for f in malformed if not quarantined[f.raw]]
    assert not missed, f"{len(missed)} malformed frames not quarantined, first {missed[0]}"
    assert sum(stats.quarantined.values()) == sum(quarantined.values()) == len(malformed)
    assert sum(messages.values()) == len(fed) - len(malformed)
    for payload in sink.by_kind[Kind.GAP]:
        gap = orjson.loads(payload)
        assert 0 <= gap["expected"] < ID_LIMIT and 0 <= gap["got"] < ID_LIMIT


def depth(lo: object, hi: object) -> bytes:
    return _dumps({"stream": "ethusdt@depth@100ms", "data": {"U": lo, "u": hi, "b": [], "a": []}})


def trade(t: object) -> bytes:
    return _dumps({"stream": "ethusdt@trade", "data": {"e": "trade", "t": t, "p": "1", "q": "2"}})


@pytest.mark.parametrize(
    "bad",
    [
        depth(1e308, 20),
        depth(11, 2**64),
        depth(11, 1e308),
        depth(30, 20),
        depth(-5, 20),
        depth("11", 20),
        depth(True, 20),
        trade(10**30),
        trade(-1),
        trade(11.0),
        trade([11]),
    ],
)
def test_a_frame_with_ids_outside_the_format_is_quarantined_and_the_stream_goes_on(
    bad: bytes,
) -> None:
    sink = Sink()
    stats = CollectorStats()
    router = Router(
        "binance", STREAMS, emit=sink.emit, request_snapshot=lambda _symbol: None, stats=stats
    )
    before = [depth(1, 10), trade(1)]
    after = [depth(11, 20), depth(21, 30), trade(2), trade(3)]
    for raw in before:
        router.on_frame(1, 1, raw)
    router.on_frame(1, 2, bad)
    for raw in after:
        router.on_frame(1, 3, raw)
    assert sink.by_kind[Kind.QUARANTINE] == Counter({bad: 1})
    assert dict(stats.quarantined) == {"malformed": 1}
    assert sink.by_kind[Kind.MESSAGE] == Counter(before + after)
    assert not sink.by_kind[Kind.GAP]
