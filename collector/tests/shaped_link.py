"""A home link in a test: a TCP proxy on loopback that carries at most ``rate`` bytes per second
towards the client (the VPS -> Brain direction, shared by every connection, as one link is), and
can be cut (every connection closed, new ones closed at once) and restored."""

from __future__ import annotations

import asyncio
import contextlib
import time


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
