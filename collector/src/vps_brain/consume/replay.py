"""Reading the store back in stream order (the library behind ``vps-brain replay``).

Within one stream (one exchange + symbol) records come back in the order of the VPS stream:
``(entry id, index in entry)``, merged across the channel and date partitions (a snapshot, the
diffs around it and the trades interleave exactly as received). Several streams are merged by
receive time.

For analysis, the same files open directly as a hive-partitioned dataset::

    pyarrow.dataset.dataset("<store>/data", partitioning="hive")
    duckdb: SELECT * FROM read_parquet('<store>/data/**/*.parquet', hive_partitioning = true)
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pyarrow.parquet as pq

from vps_brain.consume.store import part_range, uncovered
from vps_brain.frame import StreamId

_COLUMNS = ["entry_ms", "entry_seq", "rec", "recv_ns", "kind", "payload"]


class StoredRecord(NamedTuple):
    """One record read back from the store."""

    recv_ns: int
    stream: str
    entry_id: StreamId
    rec: int
    kind: int
    channel: str
    payload: bytes


@dataclass(frozen=True)
class PartFile:
    path: Path
    exchange: str
    channel: str
    symbol: str
    date: str
    first: StreamId
    last: StreamId

    @property
    def stream(self) -> str:
        return f"md:{self.exchange}:{self.symbol}" if self.exchange != "_" else self.symbol


def _value(dirname: str, key: str) -> str | None:
    prefix = key + "="
    return dirname[len(prefix) :] if dirname.startswith(prefix) else None


def list_parts(
    root: Path,
    *,
    exchanges: Iterable[str] | None = None,
    symbols: Iterable[str] | None = None,
    channels: Iterable[str] | None = None,
) -> list[PartFile]:
    """Committed part files of the store (hidden work files are skipped), filtered."""
    ex_f = {e.lower() for e in exchanges} if exchanges else None
    sy_f = {s.lower() for s in symbols} if symbols else None
    ch_f = set(channels) if channels else None
    out: list[PartFile] = []
    data = Path(root) / "data"
    if not data.is_dir():
        return out
    for ex_dir in sorted(data.iterdir()):
        exchange = _value(ex_dir.name, "exchange")
        if exchange is None or (ex_f is not None and exchange.lower() not in ex_f):
            continue
        for ch_dir in sorted(ex_dir.iterdir()):
            channel = _value(ch_dir.name, "channel")
            if channel is None or (ch_f is not None and channel not in ch_f):
                continue
            for sy_dir in sorted(ch_dir.iterdir()):
                symbol = _value(sy_dir.name, "symbol")
                if symbol is None or (sy_f is not None and symbol.lower() not in sy_f):
                    continue
                for date_dir in sorted(sy_dir.iterdir()):
                    date = _value(date_dir.name, "date")
                    if date is None:
                        continue
                    found = []
                    for f in date_dir.iterdir():
                        rng = part_range(f.name)
                        if rng is not None:
                            found.append((*rng, PartFile(f, exchange, channel, symbol, date, *rng)))
                    out.extend(uncovered(found)[0])  # skip inputs of an unfinished compaction
    return out


def _read_part(part: PartFile) -> Iterator[StoredRecord]:
    t = pq.read_table(part.path, columns=_COLUMNS)
    cols = [t.column(c).to_pylist() for c in _COLUMNS]
    stream, channel = part.stream, part.channel
    for ms, seq, rec, recv_ns, kind, payload in zip(*cols, strict=True):
        yield StoredRecord(recv_ns, stream, (ms, seq), rec, kind, channel, payload)


def iter_stream(parts: Iterable[PartFile]) -> Iterator[StoredRecord]:
    """Records of the parts of one stream, in stream order; parts are opened only when due."""
    pending = sorted(parts, key=lambda p: p.first)
    heap: list[tuple[tuple[int, int, int], int, StoredRecord, Iterator[StoredRecord]]] = []
    i = 0
    while True:
        while i < len(pending) and (not heap or pending[i].first <= heap[0][0][:2]):
            it = _read_part(pending[i])
            first = next(it, None)
            if first is not None:
                heapq.heappush(heap, ((*first.entry_id, first.rec), i, first, it))
            i += 1
        if not heap:
            return
        _, idx, rec, it = heap[0]
        yield rec
        nxt = next(it, None)
        if nxt is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, ((*nxt.entry_id, nxt.rec), idx, nxt, it))


def iter_store(
    root: Path,
    *,
    exchanges: Iterable[str] | None = None,
    symbols: Iterable[str] | None = None,
    channels: Iterable[str] | None = None,
) -> Iterator[StoredRecord]:
    """Every stored record: each stream in stream order, streams merged by receive time."""
    by_stream: dict[str, list[PartFile]] = {}
    for p in list_parts(root, exchanges=exchanges, symbols=symbols, channels=channels):
        by_stream.setdefault(p.stream, []).append(p)
    iters = [iter_stream(ps) for _, ps in sorted(by_stream.items())]
    if len(iters) == 1:
        yield from iters[0]
    else:
        yield from heapq.merge(*iters, key=lambda r: (r.recv_ns, r.stream))
