"""The disk spool: an ordered, bounded, fsynced FIFO of batches waiting for Redis.

Layout in ``spool_dir``:

* ``seg-<n>.spool``: append-only segment files (format 2, below; format 1 is still read);
* ``cursor``: ``<segment n> <offset>`` of the next item to drain, replaced atomically;
* ``quarantine.bin``: what was found corrupt, moved out of the drain (below).

Segment format 2 (every integer little-endian)::

    segment := "\\x89VBS" u16 version=2 u16 0  item*
    item    := "\\x89VBI" u32 length  u32 crc32(body)  u32 crc32(the 12 bytes before)  body

``body`` is the encoded :class:`Batch`. The marker and the header's own CRC make every item
findable after a damaged one: a reader that meets bytes that are not a valid item header searches
for the next marker whose header CRC holds and goes on from there, so a flipped bit costs exactly
the item it hit. Format 1 segments (no segment header; ``item := u32 length u32 crc32(body)
body``) are drained as before, and never appended to: new items go to a new format 2 segment.

Invariants:

* ``append`` writes and fsyncs before returning, so a batch handed to the spool survives a crash.
* ``read``/``commit`` drain from the head in order; a crash between the Redis write and the commit
  re-sends items whose explicit entry ids make Redis refuse the repeat (no duplicates).
* Every intact item is delivered, in order. Only a torn tail (a last item cut short by a crash
  during ``append``: a valid header whose body runs past the end, or a header cut short) is
  truncated, at start. Anything else that is not an intact item is a corrupt region: when the
  drain reaches it, its bytes go to ``quarantine.bin`` (fsynced) behind a gap record, one JSON
  line ``{"time","segment","offset","length","format","reason","key","first_id","last_id",
  "entries","records"}`` followed by exactly ``length`` raw bytes (``key`` and the ids are an
  unverified best-effort decode, null when the bytes do not decode), the metric
  ``vps_brain_collector_spool_quarantined_total`` counts it, and the drain goes on after it. A
  corrupt region is never retried: the cursor moves past it once it is quarantined.
* Format 1 has no marker: a CRC mismatch there quarantines the rest of that segment.

Synchronous by design: the writer calls it in a worker thread, one call at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from vps_brain.collect.stats import CollectorStats

log = logging.getLogger("vps_brain.collect.spool")

#: On-disk format written by this version (read: 1 and 2).
FORMAT_VERSION = 2
SEGMENT_HEAD = struct.pack("<4sHH", b"\x89VBS", FORMAT_VERSION, 0)
#: The marker every format 2 item starts with.
SYNC = b"\x89VBI"
#: Format 2 item header: marker, body length, body CRC, CRC of the 12 bytes before.
ITEM = struct.Struct("<4sIII")
#: Format 1 item header: body length, body CRC.
ITEM_V1 = struct.Struct("<II")
QUARANTINE_FILE = "quarantine.bin"


def item_head(body: bytes) -> bytes:
    """The format 2 header of an item whose body is ``body``."""
    first = struct.pack("<4sII", SYNC, len(body), zlib.crc32(body))
    return first + struct.pack("<I", zlib.crc32(first))


class SpoolFull(Exception):
    """The spool reached ``max_bytes``: the writer must apply backpressure, not drop."""


@dataclass(slots=True)
class Entry:
    id: bytes  # explicit stream entry id "<ms>-<seq>"
    fields: dict[bytes, bytes]


@dataclass(slots=True)
class Batch:
    """Entries for one stream key, ready for XADD; ``records`` counts the records inside."""

    key: str
    entries: list[Entry]
    records: int
    first_mono: float = 0.0  # time.monotonic() of the first record (latency metric)
    nbytes: int = 0

    def encode(self) -> bytes:
        key = self.key.encode()
        parts = [
            struct.pack("<H", len(key)),
            key,
            struct.pack("<IH", self.records, len(self.entries)),
        ]
        for e in self.entries:
            parts.append(struct.pack("<HH", len(e.id), len(e.fields)))
            parts.append(e.id)
            for k, v in e.fields.items():
                parts.append(struct.pack("<HI", len(k), len(v)))
                parts.append(k)
                parts.append(v)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> Batch:
        mv = memoryview(data)
        (klen,) = struct.unpack_from("<H", mv, 0)
        pos = 2
        key = bytes(mv[pos : pos + klen]).decode()
        pos += klen
        records, n = struct.unpack_from("<IH", mv, pos)
        pos += 6
        entries = []
        for _ in range(n):
            idlen, nf = struct.unpack_from("<HH", mv, pos)
            pos += 4
            eid = bytes(mv[pos : pos + idlen])
            pos += idlen
            fields: dict[bytes, bytes] = {}
            for _ in range(nf):
                fl, vl = struct.unpack_from("<HI", mv, pos)
                pos += 6
                f = bytes(mv[pos : pos + fl])
                pos += fl
                fields[f] = bytes(mv[pos : pos + vl])
                pos += vl
            entries.append(Entry(eid, fields))
        if pos != len(data):
            raise ValueError("spool item has trailing bytes")
        return cls(key, entries, records)


Buffer = bytes | mmap.mmap


class _At(Enum):
    ITEM = "item"  # an intact item
    CORRUPT = "corrupt"  # bytes that are not an intact item, up to the next one (or the end)
    TORN = "torn"  # an item cut short by the end of the file


def _head_ok(buf: Buffer, pos: int) -> int | None:
    """The body length when a valid format 2 item header starts at ``pos``."""
    sync, length, _crc, hcrc = ITEM.unpack_from(buf, pos)
    if sync != SYNC or zlib.crc32(buf[pos : pos + 12]) != hcrc:
        return None
    return int(length)


def _resync(buf: Buffer, pos: int, end: int) -> int:
    """The next offset from ``pos`` where a valid item header (or a cut-short one) starts."""
    while True:
        c = buf.find(SYNC, pos, end)
        if c < 0:
            return end
        if end - c < ITEM.size or _head_ok(buf, c) is not None:
            return c
        pos = c + 1


def _at_v2(buf: Buffer, pos: int, end: int) -> tuple[_At, int, str]:
    """What starts at ``pos``: its kind, where the next thing starts and why it is corrupt."""
    rem = end - pos
    if rem < ITEM.size:
        if SYNC.startswith(buf[pos : pos + min(rem, len(SYNC))]):
            return _At.TORN, end, ""
    else:
        length = _head_ok(buf, pos)
        if length is not None:
            nxt = pos + ITEM.size + length
            if nxt > end:
                return _At.TORN, end, ""
            (crc,) = struct.unpack_from("<I", buf, pos + 8)
            if zlib.crc32(buf[pos + ITEM.size : nxt]) == crc:
                return _At.ITEM, nxt, ""
            return _At.CORRUPT, nxt, "body_crc"
    return _At.CORRUPT, _resync(buf, pos + 1, end), "header"


def _at_v1(buf: Buffer, pos: int, end: int) -> tuple[_At, int, str]:
    if end - pos < ITEM_V1.size:
        return _At.TORN, end, ""
    length, crc = ITEM_V1.unpack_from(buf, pos)
    nxt = pos + ITEM_V1.size + length
    if nxt > end:
        return _At.TORN, end, ""
    if zlib.crc32(buf[pos + ITEM_V1.size : nxt]) == crc:
        return _At.ITEM, nxt, ""
    return _At.CORRUPT, end, "legacy_crc"  # no marker to resynchronise on


@dataclass(slots=True)
class _Segment:
    """One mapped segment file: its format and where its items start."""

    buf: Buffer
    legacy: bool

    @property
    def head(self) -> int:
        return ITEM_V1.size if self.legacy else ITEM.size

    def first(self) -> int:
        if self.legacy or self.buf[: len(SEGMENT_HEAD)] != SEGMENT_HEAD:
            return 0
        return len(SEGMENT_HEAD)

    def at(self, pos: int) -> tuple[_At, int, str]:
        end = len(self.buf)
        return _at_v1(self.buf, pos, end) if self.legacy else _at_v2(self.buf, pos, end)


def _is_legacy(buf: Buffer) -> bool:
    """Format 1: no segment header, and the first item checks out in the old framing."""
    if not buf or SEGMENT_HEAD.startswith(buf[: len(SEGMENT_HEAD)]):
        return False
    return _at_v1(buf, 0, len(buf))[0] is _At.ITEM


@contextlib.contextmanager
def _mapped(path: Path) -> Iterator[_Segment]:
    with path.open("rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            yield _Segment(b"", False)
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            yield _Segment(mm, _is_legacy(mm))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Append-only segment files with marked, CRC-framed items and a durable drain cursor."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        segment_bytes: int,
        *,
        stats: CollectorStats | None = None,
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        #: Refuse appends beyond this (backpressure); the service lifts it to flush at shutdown.
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.stats = stats
        self.cursor_seg, self.cursor_off = self._load_cursor()
        self.items = 0
        #: Records appended and records drained (committed) by this process.
        self.appended_records = 0
        self.drained_records = 0
        self._read_records = 0
        self._legacy: set[int] = set()
        self._recover()

    # --------------------------------------------------------------------------- helpers
    def _seg_path(self, n: int) -> Path:
        return self.dir / f"seg-{n:012d}.spool"

    def segments(self) -> list[int]:
        return sorted(int(p.name[4:16]) for p in self.dir.glob("seg-*.spool"))

    def _load_cursor(self) -> tuple[int, int]:
        try:
            seg, off = (self.dir / "cursor").read_text().split()
            return int(seg), int(off)
        except (OSError, ValueError):
            return 0, 0

    def _save_cursor(self) -> None:
        tmp = self.dir / "cursor.tmp"
        with tmp.open("w") as fh:
            fh.write(f"{self.cursor_seg} {self.cursor_off}\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.dir / "cursor")
        _fsync_dir(self.dir)

    def _recover(self) -> None:
        """Cut torn tails, drop segments before the cursor, count the intact waiting items."""
        segs = self.segments()
        for n in segs:
            if n < self.cursor_seg:
                self._seg_path(n).unlink()
        segs = [n for n in segs if n >= self.cursor_seg]
        if segs and self.cursor_seg < segs[0]:
            self.cursor_seg, self.cursor_off = segs[0], 0
        count = 0
        for n in segs:
            path = self._seg_path(n)
            torn: int | None = None
            bad = places = 0
            with _mapped(path) as seg:
                if seg.legacy:
                    self._legacy.add(n)
                end = len(seg.buf)
                if not seg.legacy and end < len(SEGMENT_HEAD) and seg.first() == 0:
                    torn = 0 if SEGMENT_HEAD.startswith(seg.buf[:end]) else None
                pos = max(self.cursor_off if n == self.cursor_seg else 0, seg.first())
                while torn is None and pos < end:
                    kind, nxt, _why = seg.at(pos)
                    if kind is _At.ITEM:
                        count += 1
                    elif kind is _At.CORRUPT:
                        bad += nxt - pos
                        places += 1
                    else:
                        torn = pos
                    pos = nxt
            if bad:
                log.error(
                    "spool segment %s: %d corrupt bytes in %d place(s); the intact items are "
                    "kept and the corrupt bytes go to %s when the drain reaches them",
                    path,
                    bad,
                    places,
                    QUARANTINE_FILE,
                )
            if torn is not None and torn < end:
                log.warning("spool segment %s: cutting a torn tail of %d bytes", path, end - torn)
                with path.open("r+b") as fh:
                    fh.truncate(torn)
                    os.fsync(fh.fileno())
        self.items = count

    @property
    def size(self) -> int:
        """Bytes not yet drained."""
        total = 0
        for n in self.segments():
            if n < self.cursor_seg:
                continue
            total += self._seg_path(n).stat().st_size - (
                self.cursor_off if n == self.cursor_seg else 0
            )
        return total

    def __len__(self) -> int:
        return self.items

    # ---------------------------------------------------------------------------- append
    def append(self, batches: list[Batch]) -> None:
        """Append batches in order and fsync; raises :class:`SpoolFull` (nothing written)."""
        blobs = []
        for b in batches:
            body = b.encode()
            blobs.append(item_head(body) + body)
        data = b"".join(blobs)
        if self.size + len(data) > self.max_bytes:
            raise SpoolFull(f"spool would exceed {self.max_bytes} bytes")
        segs = self.segments()
        n = segs[-1] if segs else max(self.cursor_seg, 1)
        path = self._seg_path(n)
        if path.exists() and (path.stat().st_size >= self.segment_bytes or n in self._legacy):
            n += 1
            path = self._seg_path(n)
        new = not path.exists()
        with path.open("ab") as fh:
            if fh.tell() == 0:
                data = SEGMENT_HEAD + data
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if new:
            _fsync_dir(self.dir)
            if not segs and self.cursor_seg != n:
                self.cursor_seg, self.cursor_off = n, 0
                self._save_cursor()
        self.items += len(batches)
        self.appended_records += sum(b.records for b in batches)

    # ----------------------------------------------------------------------------- drain
    def read(self, max_bytes: int) -> tuple[list[Batch], tuple[int, int]]:
        """Batches from the head (about ``max_bytes``) and the cursor to commit after them.

        A corrupt region at the head is quarantined and the (durable) cursor moves past it; one
        met after intact items ends this read before it, so the next read starts there.
        """
        out: list[Batch] = []
        seg, off = self.cursor_seg, self.cursor_off
        total = 0
        segs = [n for n in self.segments() if n >= seg]
        end = 0
        for n in segs:
            if n > seg:
                seg, off = n, 0
            with _mapped(self._seg_path(n)) as s:
                off = max(off, s.first())
                end = len(s.buf)
                while off < end and total < max_bytes:
                    kind, nxt, why = s.at(off)
                    batch = None
                    if kind is _At.ITEM:
                        try:
                            batch = Batch.decode(s.buf[off + s.head : nxt])
                        except Exception:  # CRC fine but not a batch: never retried either
                            why = "undecodable"
                    elif kind is _At.TORN:
                        why = "truncated"  # cut short while we run: not a crash's torn tail
                    if batch is not None:
                        out.append(batch)
                        total += nxt - off
                    elif out:
                        return self._done(out, (n, off), False)
                    else:
                        self._quarantine(n, off, nxt, why, s)
                        self.cursor_seg, self.cursor_off = n, nxt
                        self._save_cursor()
                    off = nxt
            if total >= max_bytes:
                break
        at_end = not segs or (seg == segs[-1] and off >= end)
        return self._done(out, (seg, off), at_end)

    def _done(
        self, out: list[Batch], cursor: tuple[int, int], at_end: bool
    ) -> tuple[list[Batch], tuple[int, int]]:
        if at_end:
            # Everything that is left has been seen: the exact count (corrupt items that were
            # counted as intact when the spool opened are no longer waiting).
            self.items = len(out)
        self._read_records = sum(b.records for b in out)
        return out, cursor

    def _quarantine(self, n: int, start: int, end: int, why: str, seg: _Segment) -> None:
        """Move ``[start, end)`` of segment ``n`` to the quarantine file, behind a gap record."""
        raw = seg.buf[start:end]
        gap: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "segment": n,
            "offset": start,
            "length": len(raw),
            "format": 1 if seg.legacy else FORMAT_VERSION,
            "reason": why,
            "key": None,
            "first_id": None,
            "last_id": None,
            "entries": None,
            "records": None,
        }
        try:  # what it was, if the bytes still say so (unverified)
            b = Batch.decode(raw[seg.head :])
            gap.update(
                key=b.key,
                first_id=b.entries[0].id.decode(),
                last_id=b.entries[-1].id.decode(),
                entries=len(b.entries),
                records=b.records,
            )
        except Exception:
            pass
        path = self.dir / QUARANTINE_FILE
        new = not path.exists()
        with path.open("ab") as fh:
            fh.write(json.dumps(gap).encode() + b"\n" + raw)
            fh.flush()
            os.fsync(fh.fileno())
        if new:
            _fsync_dir(self.dir)
        if self.stats is not None:
            self.stats.spool_quarantined += 1
            self.stats.spool_quarantined_bytes += len(raw)
        log.error(
            "spool segment %d: %d corrupt bytes at offset %d (%s) moved to %s; the drain goes on",
            n,
            len(raw),
            start,
            why,
            path,
            extra={"fields": {k: v for k, v in gap.items() if k != "time"}},
        )

    def commit(self, cursor: tuple[int, int], count: int) -> None:
        """Mark everything before ``cursor`` drained; delete finished segments."""
        self.cursor_seg, self.cursor_off = cursor
        self.items = max(0, self.items - count)
        if count:
            self.drained_records += self._read_records
        self._read_records = 0
        segs = self.segments()
        last = segs[-1] if segs else cursor[0]
        # When the cursor reached the end of the newest segment, start fresh.
        if self.items == 0 and segs and self._seg_path(last).stat().st_size == self.cursor_off:
            self.cursor_seg, self.cursor_off = last + 1, 0
        self._save_cursor()
        for n in segs:
            if n < self.cursor_seg:
                self._seg_path(n).unlink()
