"""A home link in a test: a TCP proxy on loopback that carries at most ``rate`` bytes per second
towards the client (the VPS -> Brain direction, shared by every connection, as one link is), and
can be cut (every connection closed, new ones closed at once) and restored; and one outage
through it, for the shaped-link test and bench/bench_catchup.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from vps_brain.consume.reader import Consumer
from vps_brain.frame import BatchEncoder, Kind, Record, parse_id


class ShapedLink:
    def __init__(self, upstream_port: int, rate: float, chunk: int = 16 * 1024) -> None:
        self.upstream_port = upstream_port
        self.rate = rate
        self.chunk = chunk
        self.port = 0
        self.cut = False
        self.down_bytes = 0  # carried towards the client
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._next_free = time.monotonic()  # when the link may send again

    async def __aenter__(self) -> ShapedLink:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._close_all()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def set_cut(self, cut: bool) -> None:
        """Cut the link (close every connection, refuse new ones) or restore it."""
        self.cut = cut
        if cut:
            self._close_all()

    def _close_all(self) -> None:
        for w in list(self._writers):
            w.close()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.close()
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_w))
        await asyncio.gather(
            self._pump(reader, up_w, shaped=False),
            self._pump(up_r, writer, shaped=True),
            return_exceptions=True,
        )
        for w in (writer, up_w):
            self._writers.discard(w)
            w.close()

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, shaped: bool
    ) -> None:
        try:
            while data := await src.read(self.chunk):
                if shaped:
                    # The link sends one chunk at a time, each taking len/rate seconds.
                    now = time.monotonic()
                    start = max(now, self._next_free)
                    self._next_free = start + len(data) / self.rate
                    await asyncio.sleep(self._next_free - now)
                    if self.cut:
                        return
                    self.down_bytes += len(data)
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()


@dataclass
class Outage:
    """What one cut of the link did (:func:`cut_and_restore`)."""

    outage_s: float
    backlog_entries: int  # written on the VPS during the cut, not yet read by the group
    fresh_s: float  # link back -> the live feed has an entry written after the link came back
    caught_up_s: float  # link back -> no stream catching up any more
    catching_up_when_fresh: bool  # the store was still behind when the live feed was fresh
    group_bytes: float  # what the group read from the link's return until caught up


def random_entry(enc: BatchEncoder, records: int = 10, size: int = 200) -> dict[Any, Any]:
    """An entry of random payloads: the frame's compression leaves them about ``2 * size``."""
    recs = [
        Record(time.time_ns(), Kind.MESSAGE, b'{"data":"%s"}' % os.urandom(size).hex().encode())
        for _ in range(records)
    ]
    return dict(enc.encode(recs))


async def _until(cond: Callable[[], bool], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def cut_and_restore(
    consumer: Consumer,
    link: ShapedLink,
    vps: redis.Redis,
    live: redis.Redis,
    stream: str,
    *,
    entries_per_s: float,
    outage_s: float,
    limit_s: float = 600,
) -> Outage:
    """Run ``consumer`` (reading the VPS through ``link``) while entries of ``stream`` are
    written at ``entries_per_s``: live first, then a cut of ``outage_s``, then until it has caught
    up and stored everything. ``live`` is the Brain's Redis, where the live feed goes."""
    enc = BatchEncoder()
    vps.xadd(stream, random_entry(enc))

    async def produce() -> None:
        while True:
            vps.xadd(stream, random_entry(enc))
            await asyncio.sleep(1 / entries_per_s)

    def newest_live_ms() -> int:
        last: Any = live.xrevrange("live:" + stream, count=1)
        return parse_id(last[0][1][b"src"])[0] if last else 0

    def delivered_all() -> bool:
        groups: Any = vps.xinfo_groups(stream)
        g = next((g for g in groups if g["name"] == consumer.cfg.group.encode()), None)
        return g is not None and g["lag"] == 0 and g["pending"] == 0

    m = consumer.metrics
    producer = asyncio.create_task(produce())
    task = asyncio.create_task(consumer.run())
    try:
        await _until(lambda: newest_live_ms() > 0, 10)  # live before the outage
        link.set_cut(True)
        await asyncio.sleep(outage_s)
        backlog = int(vps.xlen(stream)) - int(m.entries.labels(stream)._value.get())
        group_before = m.read_bytes.labels("group")._value.get()
        link.set_cut(False)
        back = time.monotonic()
        back_ms = time.time_ns() // 1_000_000
        await _until(lambda: newest_live_ms() >= back_ms, limit_s)
        fresh_s = time.monotonic() - back
        catching_up = consumer.catchup.any
        await _until(
            lambda: (
                not consumer.catchup.any
                and m.lag_entries.labels(stream)._value.get() <= consumer.cfg.read_count
            ),
            limit_s,
        )
        caught_s = time.monotonic() - back
        group_bytes = m.read_bytes.labels("group")._value.get() - group_before
        producer.cancel()
        await _until(delivered_all, limit_s)
    finally:
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer
        consumer.stop()
        await asyncio.wait_for(task, 30)
    return Outage(outage_s, backlog, fresh_s, caught_s, catching_up, group_bytes)
