"""Issue 11 item 5: what retrying cannot heal stops that stream, once, loudly; the rest goes on.

The simulator is the exchange. A REST front in this file answers Binance's
``400 {"code": -1121, "msg": "Invalid symbol."}`` for one symbol and passes the others through;
for the websocket, a symbol the simulator does not know makes it refuse the handshake with 400.
Each test counts what the collector asked, reads the ERROR line and the metric through the
registry, and checks the other symbol is still collected.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from conftest import RedisServer
from harness import SPOT, running_collector, settings_for, wait_until

from vps_brain.collect.service import Collector
from vps_brain.config import SimulatorSettings
from vps_brain.sim import Simulator

METRIC = "vps_brain_collector_permanent_errors_total"
CHANNELS = ("trade", "depth@100ms", "bookTicker")


def sim_settings(symbols: list[str]) -> SimulatorSettings:
    return SimulatorSettings.model_validate(
        {
            "port": 0,
            "symbols": symbols,
            "trade_rate": 300,
            "depth_rate": 50,
            "ticker_rate": 300,
            "ping_interval_s": 0.5,
        }
    )


def permanent(col: Collector, source: str, target: str) -> float | None:
    return col.stats.registry.get_sample_value(METRIC, {"source": source, "target": target})


def received(col: Collector, symbol: str) -> int:
    counts = col.stats.messages_in.items()
    return sum(n for (_exchange, name), n in counts if name.startswith(symbol + "@"))


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


class CountingSimulator(Simulator):
    """The simulator, counting websocket handshakes by the streams they ask for."""

    def __init__(self, settings: SimulatorSettings) -> None:
        super().__init__(settings)
        self.handshakes: list[list[str]] = []

    def app(self) -> web.Application:
        app = super().app()

        @web.middleware
        async def count(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            if request.path == "/stream":
                self.handshakes.append(request.query.get("streams", "").split("/"))
            return await handler(request)

        app.middlewares.append(count)
        return app

    def asked(self, symbol: str) -> int:
        """Handshakes that named any stream of ``symbol``."""
        return sum(any(s.startswith(symbol + "@") for s in h) for h in self.handshakes)


@asynccontextmanager
async def rest_front(sim: Simulator, invalid: str) -> AsyncIterator[tuple[str, Counter[str]]]:
    """A REST server: 400 -1121 for ``invalid``, the simulator's answer for every other symbol."""
    asked: Counter[str] = Counter()
    session = aiohttp.ClientSession()

    async def depth(request: web.Request) -> web.Response:
        symbol = request.query.get("symbol", "")
        asked[symbol] += 1
        if symbol == invalid.upper():
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        async with session.get(sim.base_url + "/api/v3/depth", params=request.query) as resp:
            body = await resp.read()
            return web.Response(body=body, status=resp.status, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v3/depth", depth)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", asked
    finally:
        await runner.cleanup()
        await session.close()


async def test_rest_invalid_symbol_is_asked_once_then_stopped_and_the_other_symbol_goes_on(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with (
        Simulator(sim_settings(["ethusdt", "btcusdt"])) as sim,
        rest_front(sim, "btcusdt") as (rest_url, asked),
    ):
        settings = settings_for(sim, redis_server.url, tmp_path / "spool", rest_url=rest_url)
        async with running_collector(settings) as col:
            await wait_until(lambda: col.stats.snapshots[SPOT, "ethusdt"] >= 1, what="eth snapshot")
            await wait_until(lambda: asked["BTCUSDT"] >= 1, what="btc snapshot asked")
            await wait_until(
                lambda: permanent(col, "rest", "btcusdt") == 1.0,
                what="the permanent-error metric for btcusdt",
            )
            # Both depth streams break and resync: eth gets a new snapshot, btc is not asked.
            sim.inject_gap("btcusdt@depth@100ms", 3)
            sim.inject_gap("ethusdt@depth@100ms", 3)
            await wait_until(lambda: col.stats.resyncs[SPOT, "btcusdt"] >= 2, what="btc resync")
            await wait_until(
                lambda: col.stats.snapshots[SPOT, "ethusdt"] >= 2, what="eth resnapshot"
            )
            before = received(col, "btcusdt"), received(col, "ethusdt")
            await wait_until(
                lambda: (
                    received(col, "btcusdt") > before[0] + 50
                    and received(col, "ethusdt") > before[1] + 50
                ),
                what="both symbols still collected",
            )
            assert asked["BTCUSDT"] == 1, dict(asked)
            assert asked["ETHUSDT"] >= 2
    refused = [m for m in errors(caplog) if "BTCUSDT" in m]
    assert len(refused) == 1, errors(caplog)
    assert "-1121 Invalid symbol." in refused[0]
    assert not [
        r for r in caplog.records if r.levelno == logging.WARNING and "REST 400" in r.getMessage()
    ]


async def test_ws_unknown_stream_is_stopped_and_the_other_streams_of_its_slot_go_on(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with CountingSimulator(sim_settings(["ethusdt"])) as sim:
        # One slot carries both symbols; the simulator refuses every handshake naming zzzusdt.
        settings = settings_for(
            sim, redis_server.url, tmp_path / "spool", symbols=["ethusdt", "zzzusdt"]
        )
        async with running_collector(settings) as col:
            await wait_until(
                lambda: all(permanent(col, "ws", f"zzzusdt@{ch}") == 1.0 for ch in CHANNELS),
                what="the permanent-error metric for every zzzusdt stream",
            )
            await wait_until(lambda: received(col, "ethusdt") > 100, what="eth collected")
            asked = sim.asked("zzzusdt")
            # A bisection of 6 streams: a few probes, bounded, then never again.
            assert asked <= 2 * len(CHANNELS) + 1, sim.handshakes
            sim.drop_all()  # the reconnect must not ask for the refused streams again
            await wait_until(lambda: col.stats.reconnects >= 1, what="reconnect")
            before = received(col, "ethusdt")
            await wait_until(lambda: received(col, "ethusdt") > before + 100, what="eth again")
            assert sim.asked("zzzusdt") == asked, sim.handshakes[-3:]
            assert col.stats.messages_in.keys() <= {(SPOT, f"ethusdt@{ch}") for ch in CHANNELS}
    refused = [m for m in errors(caplog) if "zzzusdt" in m]
    assert len(refused) == 1, errors(caplog)
    assert "HTTP 400" in refused[0]


async def test_a_slot_refused_entirely_idles_and_the_other_slots_keep_collecting(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with CountingSimulator(sim_settings(["ethusdt"])) as sim:
        # Three streams per connection: slot 0 is ethusdt, slot 1 only the unknown zzzusdt.
        settings = settings_for(
            sim,
            redis_server.url,
            tmp_path / "spool",
            symbols=["ethusdt", "zzzusdt"],
            max_streams_per_connection=3,
        )
        async with running_collector(settings) as col:
            await wait_until(
                lambda: all(permanent(col, "ws", f"zzzusdt@{ch}") == 1.0 for ch in CHANNELS),
                what="the permanent-error metric for every zzzusdt stream",
            )
            asked = sim.asked("zzzusdt")
            before = received(col, "ethusdt")
            await wait_until(lambda: received(col, "ethusdt") > before + 200, what="eth goes on")
            assert sim.asked("zzzusdt") == asked
            assert not col.slots[1].streams  # and the collector did not stop: see the exit
    assert len([m for m in errors(caplog) if "zzzusdt" in m]) == 1, errors(caplog)
