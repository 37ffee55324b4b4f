"""Readers for recorded Binance market data (shared/data/binance/README.md).

Two formats:

* hftbacktest (``spot_*.gz``, ``usdm_*.gz``, gzip or plain text): ``<recv_ts> <raw JSON>`` per
  line; the JSON is a combined-stream envelope, except REST snapshots written as bare
  ``{"lastUpdateId": ...}``. The timestamp is in ns (19 digits); hftbacktest's older files wrote
  µs (16 digits): a timestamp of 16 digits or fewer is read as µs.
* cryptofeed (``*.ws.*``): first line the websocket URL, then ``<recv_ts_s>: <raw JSON>``.

Both yield :class:`Recorded` items whose ``raw`` is the JSON exactly as recorded (bytes).
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

__all__ = ["Recorded", "read_recording", "stream_of"]

_STREAM_RE = re.compile(rb'^\{\s*"stream"\s*:\s*"([^"]+)"')
#: Timestamps with at most this many digits are µs, not ns (ns have 19 digits since 2001-09).
MICROS_MAX_DIGITS = 16


@dataclass(frozen=True, slots=True)
class Recorded:
    """One recorded line: receive time (ns), raw JSON bytes, and whether it is a REST snapshot."""

    recv_ns: int
    raw: bytes
    is_snapshot: bool

    @property
    def stream(self) -> str | None:
        """The combined-stream name (``ethusdt@trade``), or None for a snapshot."""
        return stream_of(self.raw)


def stream_of(raw: bytes) -> str | None:
    """The ``stream`` of a combined-stream envelope (first key, as Binance sends it)."""
    m = _STREAM_RE.match(raw)
    return m.group(1).decode() if m else None


def _open(path: Path) -> Iterator[bytes]:
    with path.open("rb") as probe:
        magic = probe.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    with opener(path, "rb") as fh:
        yield from fh


def read_recording(path: str | Path) -> Iterator[Recorded]:
    """Every line of a recorded file, in file order, in either supported format."""
    p = Path(path)
    lines = _open(p)
    first = True
    for line in lines:
        line = line.rstrip(b"\r\n")
        if not line:
            continue
        if first:
            first = False
            if line.startswith((b"wss://", b"ws://")):
                continue  # cryptofeed header: the websocket URL
        head, sep, raw = line.partition(b" ")
        if not sep:
            raise ValueError(f"{p}: line without a timestamp: {line[:60]!r}")
        if head.endswith(b":"):  # cryptofeed: "<seconds>: <json>"
            recv_ns = int(Decimal(head[:-1].decode()) * 1_000_000_000)
        else:
            recv_ns = int(head)
            if len(head) <= MICROS_MAX_DIGITS:
                recv_ns *= 1000  # hftbacktest's older files: µs
        yield Recorded(recv_ns, raw, raw.startswith(b'{"lastUpdateId"'))
