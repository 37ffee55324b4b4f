"""The Brain's durable store: Parquet parts plus a commit checkpoint, exactly once.

Layout under ``root``::

    data/exchange=binance/channel=trade/symbol=ethusdt/date=2024-08-08/part-<first>_<last>.parquet
    quarantine/exchange=binance/symbol=ethusdt/part-<first>_<last>.parquet   (corrupt entries)
    checkpoint.json   {"version": 1, "streams": {"md:binance:ethusdt": "1723161254024-3", ...}}
    intent.json       present only while a flush is in progress
    compacting        present only while a compaction pass is in progress
    .lock             held (flock) by the one process that writes this store

``<first>``/``<last>`` are the stream entry ids (``ms-seq``) of the part's first and last rows, so a
reader orders parts and rows by stream position (see :mod:`.replay`). Files whose name starts with
``.`` are work in progress; pyarrow, DuckDB and polars skip them.

Commit protocol of :meth:`ParquetStore.flush` (rows are buffered in memory up to a size/time
bound, so parts are large, not one per stream entry):

1. ``intent.json`` names the parts about to be written and the stream ids they end at (atomic);
2. each part goes to a hidden tmp file, fsync, rename to its final name, fsync of its directory;
3. ``checkpoint.json`` gets the new last stored id per stream (tmp + fsync + rename + fsync);
4. ``intent.json`` is removed, and the caller acknowledges (XACK) the entries of the flush.

After a crash, :meth:`ParquetStore.open` deletes the parts of an intent the checkpoint does not
cover (they will be re-read from the pending list and written again), and the caller acknowledges
without storing every entry whose id is at or below the checkpoint: no loss, no duplicate.

Files at scale. A part never spans two hours of its entry ids (``entry_ms // 3600000``): a flush
across an hour boundary writes one part per partition on each side. So, per partition (exchange,
channel, symbol, date) and hour, the open hour has at most one part per flush (``3600 /
flush_interval_s``, plus the flushes forced by ``flush_max_records``/``flush_max_bytes`` and
restarts), and :meth:`ParquetStore.compact_hours` merges a closed hour's parts into one;
:meth:`ParquetStore.compact` then merges a closed day's into one. Both merge only consecutive
committed parts (at or below the checkpoint), write the merged part under a hidden tmp name,
fsync, rename, fsync the directory, and only then delete the inputs; the merged part's range
covers its inputs, so a reader that meets both (a crash in between) skips the inputs
(:func:`uncovered`), and the next compaction deletes them and any tmp file.

The commit path stays on a local POSIX filesystem: it relies on ``rename`` being atomic, on
``fsync`` of files and directories and on ``flock``, none of which an object store (S3) has.
Closed, compacted parts are immutable and can be copied to any pyarrow filesystem, layout
unchanged (:mod:`.archive`); :mod:`.replay` reads a store or such a copy through pyarrow.fs.
"""

from __future__ import annotations

import array
import collections
import contextlib
import errno
import fcntl
import itertools
import operator
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from vps_brain.consume.rows import NS_PER_DAY, SCHEMA, classify, day_name, layout
from vps_brain.frame import ZERO_ID, Record, StreamId, format_id, parse_id

T = TypeVar("T")

QUARANTINE_SCHEMA: Final = pa.schema(
    [
        ("entry_ms", pa.int64()),
        ("entry_seq", pa.int64()),
        ("stream", pa.string()),
        ("reason", pa.string()),
        ("fields", pa.map_(pa.binary(), pa.binary())),
    ]
)

_SAFE = re.compile(r"[A-Za-z0-9_.@-]{1,128}")

#: Parts are cut at the hours of the stream entry ids: a part's rows lie in one hour of
#: ``entry_ms``, so a closed hour's parts are found by name (:meth:`ParquetStore.compact_hours`).
HOUR_MS: Final = 3_600_000

#: Row groups of a merged part: at most this many rows, and inputs are gathered until this size.
ROW_GROUP_ROWS: Final = 1024 * 1024
ROW_GROUP_BYTES: Final = 64 * 1024**2

_DICTIONARY: Final = ["side", "price", "bid_price", "ask_price"]
#: Row-group statistics readers prune on (an ``entry_ms`` or ``recv_ns`` range, an id).
_STATISTICS: Final = ["entry_ms", "entry_seq", "recv_ns", "update_id", "trade_id"]


class StoreError(RuntimeError):
    """The store cannot be used (locked by another process, unreadable checkpoint)."""


class StoreWriteError(OSError):
    """A flush failed (disk full, I/O error); nothing was committed, the buffer is intact."""


def split_stream(stream: str) -> tuple[str, str]:
    """``md:binance:ethusdt`` -> ``("binance", "ethusdt")``; other keys map to exchange ``_``."""
    parts = stream.split(":")
    if len(parts) == 3 and _SAFE.fullmatch(parts[1]) and _SAFE.fullmatch(parts[2]):
        exchange, symbol = parts[1], parts[2]
    else:
        exchange, symbol = "_", re.sub(r"[^A-Za-z0-9_.@-]", "_", stream)[:128] or "_"
    if symbol in (".", ".."):
        symbol = "_"
    return exchange, symbol


# ------------------------------------------------------------------------------ durable files


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to a new file and fsync it (every store write goes through here)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (tmp + fsync + rename + fsync dir)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write_file(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def makedirs_durable(path: Path) -> None:
    """``mkdir -p`` that fsyncs the parent of every directory it creates."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
        fsync_dir(d.parent)


def read_checkpoint(root: Path) -> dict[str, StreamId]:
    """The last stored id per stream of the store at ``root`` ({} for a new store). Safe beside
    the writing process: the checkpoint is only ever replaced by a rename."""
    path = Path(root) / "checkpoint.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        doc = orjson.loads(raw)
        return {k: parse_id(v) for k, v in doc["streams"].items()}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{path} is unreadable: {exc}") from exc


# ---------------------------------------------------------------------------------- buffers


@dataclass
class _Part:
    """Rows of one partition waiting for the next flush, column by column (no per-row objects
    that the garbage collector would have to scan)."""

    directory: Path
    channel: str
    first: StreamId = ZERO_ID
    last: StreamId = ZERO_ID
    entry_ms: list[int] = field(default_factory=list)
    entry_seq: list[int] = field(default_factory=list)
    rec: list[int] = field(default_factory=list)
    recv_ns: list[int] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    values: list[tuple[Any, ...]] = field(default_factory=list)
    payload: list[bytes] = field(default_factory=list)


@dataclass
class _Quarantined:
    directory: Path
    rows: list[tuple[int, int, str, str, list[tuple[bytes, bytes]]]] = field(default_factory=list)
    first: StreamId = ZERO_ID
    last: StreamId = ZERO_ID


def part_name(first: StreamId, last: StreamId) -> str:
    return f"part-{format_id(first)}_{format_id(last)}.parquet"


_PART_RE: Final = re.compile(r"part-(\d+)-(\d+)_(\d+)-(\d+)\.parquet")


def part_range(name: str) -> tuple[StreamId, StreamId] | None:
    """The first and last stream ids encoded in a part file name, or None."""
    m = _PART_RE.fullmatch(name)
    if m is None:
        return None
    a, b, c, d = map(int, m.groups())
    return (a, b), (c, d)


def uncovered(
    parts: Iterable[tuple[StreamId, StreamId, T]],
) -> tuple[list[T], list[T]]:
    """Split the parts of one partition into the live ones and those whose range lies inside
    another part's (inputs a compaction had merged but not yet deleted when it was interrupted).
    Parts of successive flushes never overlap, so containment only ever means that."""
    live: list[T] = []
    covered: list[T] = []
    reach: StreamId | None = None
    for _first, last, item in sorted(parts, key=lambda p: (p[0], (-p[1][0], -p[1][1]))):
        if reach is not None and last <= reach:
            covered.append(item)
        else:
            live.append(item)
            reach = last
    return live, covered


Run = list[tuple[StreamId, StreamId, Path]]
#: Picks, from a partition's committed live parts in id order, the runs of consecutive parts to
#: merge into one each.
_Grouping = Callable[[Run], Iterable[Run]]


def _whole(parts: Run) -> list[Run]:
    return [parts]


def part_hour(first: StreamId, last: StreamId) -> int | None:
    """The hour (``entry_ms // HOUR_MS``) a part's rows lie in, or None if it spans two."""
    hour = first[0] // HOUR_MS
    return hour if last[0] // HOUR_MS == hour else None


def _closed_hours(parts: Run, before_hour: int) -> list[Run]:
    """Runs of consecutive parts that lie in one hour before ``before_hour`` (a part spanning
    two hours ends a run and stays as it is)."""
    return [
        list(run)
        for hour, run in itertools.groupby(parts, key=lambda p: part_hour(p[0], p[1]))
        if hour is not None and hour < before_hour
    ]


def _read_part(path: Path) -> pa.Table:
    """A part as a table of :data:`~.rows.SCHEMA` (ParquetFile: half the cost of read_table)."""
    t = pq.ParquetFile(path).read(use_threads=False)
    return t if t.schema.equals(SCHEMA) else pq.read_table(path, schema=SCHEMA)


def _column(values: tuple[Any, ...], typ: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, type=typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
        # An exchange field of an unexpected type: keep the row (its payload is intact), null
        # the parsed value rather than fail the whole flush.
        clean: list[Any]
        if pa.types.is_integer(typ):
            clean = [v if type(v) is int and -(2**63) <= v < 2**63 else None for v in values]
        else:
            clean = [v if isinstance(v, str) else None for v in values]
        return pa.array(clean, type=typ)


def _ints(values: list[int], typ: pa.DataType, code: str) -> pa.Array:
    """A non-null integer column without a per-value Python -> Arrow conversion."""
    try:
        buf = array.array(code, values)
    except (OverflowError, TypeError):
        return pa.array(values, type=typ)
    return pa.Array.from_buffers(typ, len(values), [None, pa.py_buffer(buf)])


def _binary(values: list[bytes]) -> pa.Array:
    """A non-null binary column: one concatenation plus offsets."""
    offsets = array.array("i", [0])
    offsets.extend(itertools.accumulate(map(len, values)))
    if offsets[-1] >= 2**31 - 1:  # pragma: no cover - parts are far smaller
        return pa.array(values, type=pa.binary())
    blob = b"".join(values)
    return pa.Array.from_buffers(
        pa.binary(), len(values), [None, pa.py_buffer(offsets), pa.py_buffer(blob)]
    )


def build_table(part: _Part) -> pa.Table:
    """A table of :data:`~.rows.SCHEMA` from the buffered columns of one partition."""
    n = len(part.payload)
    cols: dict[str, pa.Array] = {
        "entry_ms": _ints(part.entry_ms, pa.int64(), "q"),
        "entry_seq": _ints(part.entry_seq, pa.int64(), "q"),
        "rec": _ints(part.rec, pa.int32(), "i"),
        "recv_ns": _ints(part.recv_ns, pa.int64(), "q"),
        "kind": _ints(part.kind, pa.int8(), "b"),
        "payload": _binary(part.payload),
    }
    names = layout(part.channel)[0]
    if names and n:
        for j, name in enumerate(names):
            # Transposed column by column: zip(*rows) over 100k rows costs twice as much.
            values = tuple(map(operator.itemgetter(j), part.values))
            cols[name] = _column(values, SCHEMA.field(name).type)
    arrays = [cols.get(f.name) or pa.nulls(n, f.type) for f in SCHEMA]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


# ------------------------------------------------------------------------------------ store


@dataclass
class _Buffer:
    """Everything taken since the last seal: rows per partition, quarantined entries, ids."""

    #: (stream, channel, day, hour of the entry id) -> rows; see :data:`HOUR_MS`
    parts: dict[tuple[str, str, str, int], _Part] = field(default_factory=dict)
    quarantine: dict[str, _Quarantined] = field(default_factory=dict)
    to_ack: dict[str, list[bytes]] = field(default_factory=dict)
    records: int = 0
    nbytes: int = 0
    entries: int = 0


class ParquetStore:
    """Buffers decoded records per partition and commits them exactly once.

    ``add*`` (the event loop) fill the current buffer; :meth:`seal` turns it into the batch the
    next :meth:`commit` writes, which may run in a worker thread while new entries are buffered.
    A batch that failed to commit (disk full) stays sealed and is retried first: the checkpoint
    only ever moves forward over a contiguous prefix of each stream.
    """

    def __init__(
        self,
        root: Path,
        *,
        compression: str = "zstd",
        max_records: int = 500_000,
        max_bytes: int = 256 * 1024**2,
    ) -> None:
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.quarantine_dir = self.root / "quarantine"
        self.checkpoint_path = self.root / "checkpoint.json"
        self.intent_path = self.root / "intent.json"
        self.compacting_path = self.root / "compacting"
        self.compression = compression
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.committed: dict[str, StreamId] = {}
        self._seen: dict[str, StreamId] = {}
        self._buf = _Buffer()
        self._sealed: _Buffer | None = None
        self._day: tuple[int, int, str] = (0, 0, "")
        self._leftovers: set[Path] = set()
        self._lock_fd: int | None = None
        self.parts_written = 0
        self.bytes_written = 0
        self.parts_merged = 0
        self._todo: dict[str, collections.deque[Path]] = {}

    # -------------------------------------------------------------------------- lifecycle

    def open(self) -> None:
        """Take the store's lock, finish or undo an interrupted flush, load the checkpoint."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"store {self.root} is in use by another process") from None
        self._lock_fd = fd
        self.committed = self._load_checkpoint()
        self._recover()
        if self.compacting_path.exists():
            self._tidy()
        self._seen = dict(self.committed)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> ParquetStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load_checkpoint(self) -> dict[str, StreamId]:
        return read_checkpoint(self.root)

    def _recover(self) -> None:
        try:
            raw = self.intent_path.read_bytes()
        except FileNotFoundError:
            return
        try:
            intent = orjson.loads(raw)
            streams = {k: parse_id(v) for k, v in intent["streams"].items()}
            parts = [self.root / p for p in intent["parts"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            # The intent itself was never completely written, so no part was either.
            self.intent_path.unlink()
            return
        done = all(self.committed.get(s, ZERO_ID) >= sid for s, sid in streams.items())
        doomed = [] if done else parts
        for p in doomed:
            for q in (p, p.with_name(f".{p.name}.tmp")):
                with contextlib.suppress(FileNotFoundError):
                    q.unlink()
        for d in {p.parent for p in doomed if p.parent.exists()}:
            fsync_dir(d)
        self.intent_path.unlink()
        fsync_dir(self.root)

    # ----------------------------------------------------------------------------- buffering

    def last_seen(self, stream: str) -> StreamId:
        """The last id stored or buffered for ``stream`` (entries at or below it are not new)."""
        return self._seen.get(stream, ZERO_ID)

    def is_committed(self, stream: str, sid: StreamId) -> bool:
        return sid <= self.committed.get(stream, ZERO_ID)

    def _accept(self, stream: str, entry_id: bytes) -> StreamId:
        sid = parse_id(entry_id)
        if sid <= self._seen.get(stream, ZERO_ID):
            raise ValueError(f"{stream} {entry_id!r} is not after the last id taken")
        self._seen[stream] = sid
        self._buf.to_ack.setdefault(stream, []).append(entry_id)
        self._buf.entries += 1
        return sid

    def add(self, stream: str, entry_id: bytes, records: Iterable[Record]) -> int:
        """Buffer the records of one stream entry; returns how many. Ids must increase."""
        sid = self._accept(stream, entry_id)
        ms, seq = sid
        hour = ms // HOUR_MS
        parts = self._buf.parts
        day_lo, day_hi, day = self._day
        n = 0
        nbytes = 0
        for i, (recv_ns, kind, payload) in enumerate(records):
            if not day_lo <= recv_ns < day_hi:
                day_lo = recv_ns - recv_ns % NS_PER_DAY
                day_hi = day_lo + NS_PER_DAY
                day = day_name(recv_ns)
                self._day = (day_lo, day_hi, day)
            channel, values = classify(kind, payload)
            key = (stream, channel, day, hour)
            part = parts.get(key)
            if part is None:
                part = parts[key] = self._new_part(stream, channel, day, sid)
            part.entry_ms.append(ms)
            part.entry_seq.append(seq)
            part.rec.append(i)
            part.recv_ns.append(recv_ns)
            part.kind.append(kind)
            part.values.append(values)
            part.payload.append(payload)
            part.last = sid
            n += 1
            nbytes += len(payload)
        self._buf.records += n
        self._buf.nbytes += nbytes + 96 * n
        return n

    def _new_part(self, stream: str, channel: str, day: str, sid: StreamId) -> _Part:
        exchange, symbol = split_stream(stream)
        directory = (
            self.data_dir
            / f"exchange={exchange}"
            / f"channel={channel}"
            / f"symbol={symbol}"
            / f"date={day}"
        )
        return _Part(directory, channel, first=sid)

    def add_quarantine(
        self, stream: str, entry_id: bytes, fields: Mapping[Any, Any] | None, reason: str
    ) -> None:
        """Buffer a stream entry that is not a valid frame, as received, with the reason."""
        sid = self._accept(stream, entry_id)
        exchange, symbol = split_stream(stream)
        q = self._buf.quarantine.get(stream)
        if q is None:
            q = self._buf.quarantine[stream] = _Quarantined(
                self.quarantine_dir / f"exchange={exchange}" / f"symbol={symbol}", first=sid
            )
        items = [(_b(k), _b(v)) for k, v in (fields or {}).items()]
        q.rows.append((sid[0], sid[1], stream, reason, items))
        q.last = sid
        self._buf.nbytes += sum(len(k) + len(v) for k, v in items) + 96

    def add_missing(self, stream: str, entry_id: bytes) -> None:
        """An entry deleted on the VPS before it was read: nothing to store, but the checkpoint
        moves past it and it is acknowledged with the next flush."""
        self._accept(stream, entry_id)

    @property
    def buffered_records(self) -> int:
        return self._buf.records + (self._sealed.records if self._sealed else 0)

    @property
    def buffered_bytes(self) -> int:
        return self._buf.nbytes + (self._sealed.nbytes if self._sealed else 0)

    @property
    def buffered_entries(self) -> int:
        return self._buf.entries + (self._sealed.entries if self._sealed else 0)

    @property
    def full(self) -> bool:
        """The memory bound is reached: stop reading until a commit frees the buffers."""
        return self.buffered_records >= self.max_records or self.buffered_bytes >= self.max_bytes

    @property
    def sealed(self) -> bool:
        """A batch is waiting to be committed (in flight, or failed and to be retried)."""
        return self._sealed is not None

    # -------------------------------------------------------------------------------- flush

    def seal(self) -> bool:
        """Close the current buffer as the next batch to commit; False if nothing to seal or a
        batch is still sealed (commit that one first)."""
        if self._sealed is not None or self._buf.entries == 0:
            return False
        self._sealed, self._buf = self._buf, _Buffer()
        return True

    def commit(self) -> dict[str, list[bytes]]:
        """Write the sealed batch durably; returns the entry ids to acknowledge, per stream.

        Thread-safe against ``add*`` running concurrently. Raises :class:`StoreWriteError`
        (nothing committed, the batch stays sealed for a retry) when the disk refuses.
        """
        batch = self._sealed
        if batch is None:
            return {}
        new_ckpt = dict(self.committed)
        for stream, ids in batch.to_ack.items():
            new_ckpt[stream] = max(new_ckpt.get(stream, ZERO_ID), parse_id(ids[-1]))
        jobs: list[tuple[Path, pa.Table]] = []
        for part in batch.parts.values():
            if part.payload:
                table = build_table(part)
                jobs.append((part.directory / part_name(part.first, part.last), table))
        for q in batch.quarantine.values():
            cols = list(zip(*q.rows, strict=True))
            table = pa.Table.from_arrays(
                [pa.array(c, type=f.type) for c, f in zip(cols, QUARANTINE_SCHEMA, strict=True)],
                schema=QUARANTINE_SCHEMA,
            )
            jobs.append((q.directory / part_name(q.first, q.last), table))
        written: list[Path] = []
        try:
            self._write_intent(new_ckpt, [p for p, _ in jobs])
            for path, table in jobs:
                self._write_part(path, table)
                written.append(path)
            for d in {p.parent for p in written}:
                fsync_dir(d)
            tmp = self._checkpoint_tmp(new_ckpt)
            os.replace(tmp, self.checkpoint_path)
        except OSError as exc:
            self._undo(written)
            raise StoreWriteError(exc.errno or errno.EIO, f"store flush failed: {exc}") from exc
        # From the rename on, the batch is committed: its parts are already durable.
        self.committed = new_ckpt
        with contextlib.suppress(OSError):
            fsync_dir(self.root)
        with contextlib.suppress(OSError):
            self.intent_path.unlink()
        self.parts_written += len(jobs)
        self._sealed = None
        return batch.to_ack

    def flush(self) -> dict[str, list[bytes]]:
        """Commit everything buffered (a sealed batch first); returns the ids to acknowledge."""
        acks = self.commit()
        if self.seal():
            for stream, ids in self.commit().items():
                acks.setdefault(stream, []).extend(ids)
        return acks

    # --------------------------------------------------------------------------- compaction

    def compact(self, before_day: str, *, budget_s: float | None = None) -> int:
        """Merge the committed parts of every partition dated before ``before_day``
        (``YYYY-MM-DD``) into one file per partition; returns how many files were removed.

        Readers never see a record twice: the merged part's id range covers its inputs, and a
        part inside another part's range is ignored (:func:`uncovered`) until it is deleted.
        Only parts at or below the checkpoint are merged, so a flush being undone after a crash
        can never have been merged. Must not run concurrently with :meth:`commit`.

        With ``budget_s``, the pass stops after the partition at which that many seconds have
        passed (:attr:`compaction_pending`); the next call with a budget resumes it.
        """
        return self._pass(
            "days",
            lambda: [d for d in self._date_dirs() if d.name[len("date=") :] < before_day],
            _whole,
            budget_s,
        )

    def compact_hours(self, before_ms: int, *, budget_s: float | None = None) -> int:
        """Merge, in every partition, the committed parts of each closed hour into one file per
        hour; returns how many files were removed.

        An hour is that of the stream entry ids (``entry_ms``, the part names' ranges; a part
        never spans two, see :data:`HOUR_MS`) and is closed when it ends at or before
        ``before_ms``. Parts of an hour committed after its merge (a consumer catching up) are
        merged with it by the next call. Parts of stores written before parts were cut at hour
        boundaries may span two hours: they are left for :meth:`compact`. Same guarantees and
        crash recovery as :meth:`compact`, whose one file per partition-day it prepares, and the
        same ``budget_s``.
        """
        before_hour = before_ms // HOUR_MS
        return self._pass(
            "hours", self._date_dirs, lambda r: _closed_hours(r, before_hour), budget_s
        )

    @property
    def compaction_pending(self) -> frozenset[str]:
        """The passes (``"days"``, ``"hours"``) that stopped at their budget, to be resumed."""
        return frozenset(k for k, v in self._todo.items() if v)

    def _pass(
        self,
        kind: str,
        dirs: Callable[[], list[Path]],
        groups: _Grouping,
        budget_s: float | None,
    ) -> int:
        todo = self._todo.pop(kind, None) if budget_s is not None else None
        todo = collections.deque(todo or dirs())
        deadline = None if budget_s is None else time.monotonic() + budget_s
        removed = 0
        with self._compacting():
            while todo:
                d = todo.popleft()
                if d.is_dir():
                    removed += self._compact_partition(d, groups)
                if deadline is not None and time.monotonic() >= deadline:
                    break
        if todo:
            self._todo[kind] = todo
        return removed

    @contextlib.contextmanager
    def _compacting(self) -> Iterator[None]:
        """``compacting`` exists while a pass runs: after a crash, :meth:`open` deletes its
        leftovers (merged inputs, tmp files) at once, so that plain hive readers, which know
        nothing of part ranges, do not see a merged part beside its inputs until the next pass."""
        atomic_write(self.compacting_path, b"")
        yield
        self.compacting_path.unlink()
        fsync_dir(self.root)

    def _tidy(self) -> None:
        """The leftovers of an interrupted compaction pass go (no merge: that is a pass's job)."""
        for date_dir in self._date_dirs():
            self._compact_partition(date_dir, lambda r: [])
        self.compacting_path.unlink()
        fsync_dir(self.root)

    def _date_dirs(self) -> list[Path]:
        if not self.data_dir.is_dir():
            return []
        return sorted(self.data_dir.glob("exchange=*/channel=*/symbol=*/date=*"))

    def _compact_partition(self, d: Path, groups: _Grouping) -> int:
        """Leftovers of an interrupted compaction go, then each run of consecutive committed
        live parts that ``groups`` picks is merged into one (tmp, fsync, rename, fsync dir, and
        only then the inputs are deleted)."""
        exchange = d.parent.parent.parent.name[len("exchange=") :]
        symbol = d.parent.name[len("symbol=") :]
        if exchange == "_":
            return 0
        committed = self.committed.get(f"md:{exchange}:{symbol}", ZERO_ID)
        found: list[tuple[StreamId, StreamId, Path]] = []
        for f in d.iterdir():
            rng = part_range(f.name)
            if rng is not None:
                found.append((rng[0], rng[1], f))
            elif f.name.startswith(".") and f.name.endswith(".tmp"):
                f.unlink()  # an interrupted compaction's output
        live, covered = uncovered(found)
        for f in covered:
            f.unlink()
        ranges = {f: (a, b) for a, b, f in found}
        inputs = [(*ranges[f], f) for f in live if ranges[f][1] <= committed]
        for group in groups(inputs):
            if len(group) < 2:
                continue
            self._merge(d, group)
            covered.extend(f for _, _, f in group)
        if covered:
            fsync_dir(d)
        return len(covered)

    def _merge(self, d: Path, group: list[tuple[StreamId, StreamId, Path]]) -> None:
        out = d / part_name(group[0][0], group[-1][1])
        tmp = out.with_name(f".{out.name}.tmp")
        try:
            with pq.ParquetWriter(
                tmp,
                SCHEMA,
                compression=self._codec(),
                use_dictionary=_DICTIONARY,
                write_statistics=_STATISTICS,
            ) as writer:
                # Inputs are gathered into row groups of up to ROW_GROUP_ROWS rows or
                # ROW_GROUP_BYTES (60 one-minute parts make a few row groups, not 60 small ones).
                pending: list[pa.Table] = []
                rows = nbytes = 0
                for _, _, f in group:
                    t = _read_part(f)
                    if pending and (
                        rows + t.num_rows > ROW_GROUP_ROWS or nbytes >= ROW_GROUP_BYTES
                    ):
                        writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                        pending, rows, nbytes = [], 0, 0
                    pending.append(t)
                    rows += t.num_rows
                    nbytes += t.nbytes
                if pending:
                    writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, out)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fsync_dir(d)
        for _, _, f in group:
            f.unlink()
        self.parts_merged += len(group)

    def _codec(self) -> str | None:
        return None if self.compression == "none" else self.compression

    def _write_intent(self, ckpt: Mapping[str, StreamId], parts: list[Path]) -> None:
        if self._leftovers:
            for p in list(self._leftovers):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                self._leftovers.discard(p)
        doc = {
            "streams": {s: format_id(v) for s, v in ckpt.items()},
            "parts": [str(p.relative_to(self.root)) for p in parts],
        }
        atomic_write(self.intent_path, orjson.dumps(doc))

    def _write_part(self, path: Path, table: pa.Table) -> None:
        makedirs_durable(path.parent)
        sink = pa.BufferOutputStream()
        pq.write_table(
            table,
            sink,
            compression=self._codec(),
            use_dictionary=_DICTIONARY,
            write_statistics=_STATISTICS,
        )
        buf = sink.getvalue()
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            write_file(tmp, memoryview(buf))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self.bytes_written += buf.size

    def _checkpoint_tmp(self, ckpt: Mapping[str, StreamId]) -> Path:
        doc = {"version": 1, "streams": {s: format_id(v) for s, v in sorted(ckpt.items())}}
        tmp = self.root / ".checkpoint.json.tmp"
        write_file(tmp, orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        return tmp

    def _undo(self, written: list[Path]) -> None:
        for p in written:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                self._leftovers.add(p)
        with contextlib.suppress(OSError):
            self.intent_path.unlink()


def _b(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    return str(v).encode()
