"""The disk spool: an ordered, bounded, fsynced FIFO of batches waiting for Redis.

Layout in ``spool_dir``:

* ``seg-<n>.spool``: append-only segment files; each item is ``<u32 length><u32 crc32>`` followed
  by the encoded :class:`Batch` (length and crc little-endian, crc over the body);
* ``cursor``: ``<segment n> <offset>`` of the next item to drain, replaced atomically.

``append`` writes and fsyncs before returning, so a batch handed to the spool survives a crash.
``read``/``commit`` drain from the head in order; a crash between the Redis write and the commit
re-sends items whose explicit entry ids make Redis refuse the repeat (no duplicates). A torn item
at the tail (crash during append) is cut off at start. Synchronous by design: the writer calls it
in a worker thread, one call at a time.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("vps_brain.collect.spool")

ITEM = struct.Struct("<II")


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Append-only segment files with length+crc framing and a durable drain cursor."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.cursor_seg, self.cursor_off = self._load_cursor()
        self.items = 0
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
        """Cut a torn tail, drop segments before the cursor, count waiting items."""
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
            data = path.read_bytes()
            pos = self.cursor_off if n == self.cursor_seg else 0
            while pos + ITEM.size <= len(data):
                length, crc = ITEM.unpack_from(data, pos)
                body = data[pos + ITEM.size : pos + ITEM.size + length]
                if len(body) != length or zlib.crc32(body) != crc:
                    break
                pos += ITEM.size + length
                count += 1
            if pos != len(data):
                log.warning("spool segment %s: cutting %d torn bytes", path, len(data) - pos)
                with path.open("r+b") as fh:
                    fh.truncate(pos)
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
            blobs.append(ITEM.pack(len(body), zlib.crc32(body)) + body)
        data = b"".join(blobs)
        if self.size + len(data) > self.max_bytes:
            raise SpoolFull(f"spool would exceed {self.max_bytes} bytes")
        segs = self.segments()
        n = segs[-1] if segs else max(self.cursor_seg, 1)
        path = self._seg_path(n)
        if path.exists() and path.stat().st_size >= self.segment_bytes:
            n += 1
            path = self._seg_path(n)
        new = not path.exists()
        with path.open("ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if new:
            _fsync_dir(self.dir)
            if not segs and self.cursor_seg != n:
                self.cursor_seg, self.cursor_off = n, 0
                self._save_cursor()
        self.items += len(batches)

    # ----------------------------------------------------------------------------- drain
    def read(self, max_bytes: int) -> tuple[list[Batch], tuple[int, int]]:
        """Batches from the head (about ``max_bytes``) and the cursor to commit after them."""
        out: list[Batch] = []
        seg, off = self.cursor_seg, self.cursor_off
        total = 0
        for n in self.segments():
            if n < seg:
                continue
            if n > seg:
                seg, off = n, 0
            with self._seg_path(n).open("rb") as fh:
                fh.seek(off)
                while total < max_bytes:
                    head = fh.read(ITEM.size)
                    if len(head) < ITEM.size:
                        break
                    length, crc = ITEM.unpack(head)
                    body = fh.read(length)
                    if len(body) != length or zlib.crc32(body) != crc:
                        raise OSError(f"spool segment {n} corrupt at offset {off}")
                    out.append(Batch.decode(body))
                    off += ITEM.size + length
                    total += length
            if total >= max_bytes:
                break
        return out, (seg, off)

    def commit(self, cursor: tuple[int, int], count: int) -> None:
        """Mark everything before ``cursor`` drained; delete finished segments."""
        self.cursor_seg, self.cursor_off = cursor
        self.items = max(0, self.items - count)
        segs = self.segments()
        last = segs[-1] if segs else cursor[0]
        # When the cursor reached the end of the newest segment, start fresh.
        if self.items == 0 and segs and self._seg_path(last).stat().st_size == self.cursor_off:
            self.cursor_seg, self.cursor_off = last + 1, 0
        self._save_cursor()
        for n in segs:
            if n < self.cursor_seg:
                self._seg_path(n).unlink()
