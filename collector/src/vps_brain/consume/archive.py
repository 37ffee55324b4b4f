"""Copy the store's closed, compacted parts to any pyarrow filesystem, layout unchanged.

The live store stays on the Brain's local disk (its commit needs atomic rename, fsync and flock:
:mod:`.store`). What is closed does not change any more: the parts of a closed day (date before
``before_day``) and, with ``hours_before_ms``, the single part of a closed hour (its hour ends
at or before it). :func:`archive` copies those, committed ones only, to ``uri``
(``file:///srv/archive``, ``s3://bucket/md?endpoint_override=rgw:7480``, or any URI
``pyarrow.fs.FileSystem.from_uri`` takes) under the same relative path, so the copy is the same
hive-partitioned dataset (``data/exchange=/channel=/symbol=/date=/part-<first>_<last>.parquet``)
that :mod:`.replay`, pyarrow, DuckDB, Trino or Spark read.

Invariants, each run:

* Idempotent: a part already there with the same size is not copied again.
* Crash-safe: a copy is written under a hidden tmp name (``.<name>.tmp``, which readers skip) and
  moved to its name, or, on an object store whose writes are atomic per object (S3, GCS),
  written directly; its size is checked after the write.
* Never a record twice for a reader that honours part ranges (:mod:`.replay`): when the store
  later merged archived parts (a late part of a closed hour, the daily pass over the hours), the
  merged part is copied first and only then the archived parts inside its range are deleted. A
  plain hive reader (an engine that knows nothing of part ranges) may see both for the moment
  between the two; object stores have no atomic multi-object change, which is what table formats
  such as Iceberg add.
* Nothing is ever deleted from the local store: it stays the source of truth, so a copy lost
  (a ``file://`` target is not fsynced) is copied again by the next run.
"""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from vps_brain.consume.replay import PartFile, list_parts, listdir, open_root
from vps_brain.consume.store import HOUR_MS, part_hour, part_range, read_checkpoint, uncovered
from vps_brain.frame import ZERO_ID


class ArchiveError(OSError):
    """A copy could not be written or verified; the run stops, the next one resumes."""


@dataclass
class ArchiveResult:
    copied: int = 0
    present: int = 0  # already archived with the same size
    removed: int = 0  # archived parts inside a newer archived part's range
    vanished: int = 0  # merged by the store's compaction while the run listed them
    bytes: int = 0


def _atomic_objects(fs: pafs.FileSystem) -> bool:
    """Whether a write becomes visible whole or not at all (object stores), so no tmp + move."""
    return fs.type_name in ("s3", "gcs")


def closed_parts(
    root: Path, *, before_day: str, hours_before_ms: int | None = None
) -> list[PartFile]:
    """The committed live parts of ``root`` that no longer change: those of a day before
    ``before_day``, and, with ``hours_before_ms``, a closed hour's part when it is the only one
    of its hour in its partition (compacted)."""
    committed = read_checkpoint(root)
    by_dir: dict[tuple[str, str, str, str], list[PartFile]] = defaultdict(list)
    for p in list_parts(root):
        if p.exchange != "_" and p.last <= committed.get(p.stream, ZERO_ID):
            by_dir[(p.exchange, p.channel, p.symbol, p.date)].append(p)
    out: list[PartFile] = []
    for (*_, date), parts in sorted(by_dir.items()):
        if date < before_day:
            out.extend(parts)
            continue
        if hours_before_ms is None:
            continue
        hours = [part_hour(p.first, p.last) for p in parts]
        per_hour = Counter(hours)
        for p, hour in zip(parts, hours, strict=True):
            if hour is not None and (hour + 1) * HOUR_MS <= hours_before_ms and per_hour[hour] == 1:
                out.append(p)
    return out


def relative(part: PartFile) -> str:
    return (
        f"data/exchange={part.exchange}/channel={part.channel}/symbol={part.symbol}"
        f"/date={part.date}/{part.name}"
    )


def archive(
    root: Path,
    uri: str,
    *,
    before_day: str,
    hours_before_ms: int | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> ArchiveResult:
    """Copy the closed parts of the store at ``root`` to ``uri`` (module docstring); ``stop``
    is asked between partitions (a consumer shutting down)."""
    dest_fs, base = open_root(uri)
    result = ArchiveResult()
    by_dir: dict[str, list[PartFile]] = defaultdict(list)
    for p in closed_parts(root, before_day=before_day, hours_before_ms=hours_before_ms):
        by_dir[f"{base}/{relative(p).rsplit('/', 1)[0]}"].append(p)
    for dest_dir, parts in by_dir.items():
        if stop():
            break
        _sync_dir(dest_fs, dest_dir, parts, result)
    return result


def _sync_dir(
    fs: pafs.FileSystem, dest_dir: str, parts: Iterable[PartFile], result: ArchiveResult
) -> None:
    fs.create_dir(dest_dir, recursive=True)
    there = {i.base_name: i for i in listdir(fs, dest_dir)}
    atomic = _atomic_objects(fs)
    for name, info in there.items():  # an interrupted copy of an earlier run
        if name.startswith(".") and name.endswith(".tmp") and not atomic:
            fs.delete_file(info.path)
    for p in parts:
        size = p.filesystem.get_file_info(p.path).size
        if size is None:  # merged and deleted by the store's compaction since the listing
            result.vanished += 1
            continue
        old = there.get(p.name)
        if old is not None and old.size == size:
            result.present += 1
            continue
        dest = f"{dest_dir}/{p.name}"
        try:
            _copy(p, fs, dest, atomic)
        except FileNotFoundError:
            result.vanished += 1
            continue
        got = fs.get_file_info(dest).size
        if got != size:
            raise ArchiveError(f"{dest}: {got} bytes written, {size} expected")
        result.copied += 1
        result.bytes += size
    # The archived parts a newer archived part covers (it merged them) go, after it is there.
    found = []
    for info in listdir(fs, dest_dir):
        rng = part_range(info.base_name)
        if rng is not None:
            found.append((*rng, info.path))
    for path in uncovered(found)[1]:
        fs.delete_file(path)
        result.removed += 1


def _copy(part: PartFile, fs: pafs.FileSystem, dest: str, atomic: bool) -> None:
    target = dest if atomic else f"{dest.rsplit('/', 1)[0]}/.{part.name}.tmp"
    try:
        with (
            part.filesystem.open_input_stream(part.path) as src,
            fs.open_output_stream(target) as out,
        ):
            while chunk := src.read(8 * 1024**2):
                out.write(chunk)
        if not atomic:
            fs.move(target, dest)
    except BaseException:
        if not atomic:
            with contextlib.suppress(OSError):
                fs.delete_file(target)
        raise
