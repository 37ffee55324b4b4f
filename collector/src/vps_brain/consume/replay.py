"""Reading the store back in stream order (the library behind ``vps-brain replay``).

Within one stream (one exchange + symbol) records come back in the order of the VPS stream:
``(entry id, index in entry)``, merged across the channel and date partitions (a snapshot, the
diffs around it and the trades interleave exactly as received). Several streams are merged by
receive time.

The store is read through pyarrow's filesystem layer: ``root`` is a local directory or any URI
pyarrow.fs takes (``file:///srv/md``, ``s3://bucket/md?endpoint_override=host:7480``), e.g. a copy
made by :mod:`.archive`; the layout is the same everywhere. A part whose id range lies inside
another's is skipped (:func:`~.store.uncovered`: the inputs of a compaction not yet deleted), so
a reader never sees a record twice, on local disk or on an object store.

For analysis, the same files open directly as a hive-partitioned dataset::

    pyarrow.dataset.dataset("<store>/data", partitioning="hive")
    duckdb: SELECT * FROM read_parquet('<store>/data/**/*.parquet', hive_partitioning = true)

A query for one symbol and hour touches that symbol's files of that hour only: the symbol by its
directory, the hour by ``entry_ms`` statistics (a closed hour is one file per channel, see
:mod:`.store`).
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pyarrow.fs as pafs
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
    path: str  # in ``filesystem``
    exchange: str
    channel: str
    symbol: str
    date: str
    first: StreamId
    last: StreamId
    filesystem: pafs.FileSystem = field(default_factory=pafs.LocalFileSystem, compare=False)

    @property
    def stream(self) -> str:
        return f"md:{self.exchange}:{self.symbol}" if self.exchange != "_" else self.symbol

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def _value(dirname: str, key: str) -> str | None:
    prefix = key + "="
    return dirname[len(prefix) :] if dirname.startswith(prefix) else None


def open_root(root: str | Path) -> tuple[pafs.FileSystem, str]:
    """The filesystem and base path of a store: a local path, or a URI pyarrow.fs takes."""
    if isinstance(root, str) and "://" in root:
        fs, base = pafs.FileSystem.from_uri(root)
        return fs, base.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(root)


def listdir(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    """The entries of one directory (an object store's prefix), by name; [] if it is missing."""
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(infos, key=lambda i: i.base_name)


def _dirs(fs: pafs.FileSystem, path: str, key: str) -> Iterator[tuple[str, str]]:
    for info in listdir(fs, path):
        value = _value(info.base_name, key)
        if value is not None and info.type == pafs.FileType.Directory:
            yield info.path, value


def list_parts(
    root: str | Path,
    *,
    exchanges: Iterable[str] | None = None,
    symbols: Iterable[str] | None = None,
    channels: Iterable[str] | None = None,
) -> list[PartFile]:
    """Committed part files of the store (hidden work files are skipped), filtered; only the
    directories of the wanted exchanges, channels and symbols are listed."""
    ex_f = {e.lower() for e in exchanges} if exchanges else None
    sy_f = {s.lower() for s in symbols} if symbols else None
    ch_f = set(channels) if channels else None
    out: list[PartFile] = []
    fs, base = open_root(root)
    for ex_path, exchange in _dirs(fs, f"{base}/data", "exchange"):
        if ex_f is not None and exchange.lower() not in ex_f:
            continue
        for ch_path, channel in _dirs(fs, ex_path, "channel"):
            if ch_f is not None and channel not in ch_f:
                continue
            for sy_path, symbol in _dirs(fs, ch_path, "symbol"):
                if sy_f is not None and symbol.lower() not in sy_f:
                    continue
                for date_path, date in _dirs(fs, sy_path, "date"):
                    found = []
                    for f in listdir(fs, date_path):
                        rng = part_range(f.base_name)
                        if rng is not None and f.type == pafs.FileType.File:
                            part = PartFile(f.path, exchange, channel, symbol, date, *rng, fs)
                            found.append((*rng, part))
                    out.extend(uncovered(found)[0])  # skip inputs of an unfinished compaction
    return out


def _read_part(part: PartFile) -> Iterator[StoredRecord]:
    t = pq.read_table(part.path, columns=_COLUMNS, filesystem=part.filesystem)
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
    root: str | Path,
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
