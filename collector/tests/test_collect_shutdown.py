"""Shutdown is bounded: within the budget, below the unit's stop timeout, nothing left in memory.

A real Binance recording is replayed into a collector whose Redis then stops answering (SIGSTOP:
the kernel still accepts connections, nothing replies, and the client's socket timeout is far
longer than the budget) or goes away, while the spool is full. Stopping must end within the
budget with every received message in Redis or in the spool, and one final log line that says
how many went where.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RedisServer, make_redis
from harness import messages_by_stream, settings_for, wait_until

from vps_brain.collect import service
from vps_brain.collect.service import Collector
from vps_brain.collect.spool import Spool
from vps_brain.config import Settings, SimulatorSettings
from vps_brain.frame import decode_entry, stream_key
from vps_brain.recordings import read_recording
from vps_brain.sim import Simulator

UNIT = Path(__file__).resolve().parents[2] / (
    "roles/service/templates/vps-brain-service.service.j2"
)
KEY = stream_key("binance", "ethusdt")
BUDGET_S = 6.0  # the test's shutdown budget (the service's default is SHUTDOWN_TIMEOUT_S)


def stop_timeout_of_the_unit() -> float:
    found = re.findall(r"^TimeoutStopSec=(\d+)\s*$", UNIT.read_text(), re.MULTILINE)
    assert len(found) == 1, f"one TimeoutStopSec in {UNIT}"
    return float(found[0])


def test_the_shutdown_budget_fits_in_the_units_stop_timeout() -> None:
    # Room beyond the budget for the interpreter's exit and a slow machine, never a SIGKILL.
    assert stop_timeout_of_the_unit() >= service.SHUTDOWN_TIMEOUT_S + 5
    assert Collector(Settings()).shutdown_timeout_s == service.SHUTDOWN_TIMEOUT_S


def recorded(data: Path) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for rec in read_recording(data / "spot_ethusdt_20240808.gz"):
        if not rec.is_snapshot and rec.stream:
            out.setdefault(rec.stream, []).append(rec.raw)
    return out


@contextlib.contextmanager
def redis_fault(server: RedisServer, fault: str) -> Iterator[None]:
    """``hung``: the process stopped (no answer). ``down``: the process gone."""
    assert server.proc is not None
    if fault == "hung":
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            server.stop(kill=True)  # SIGKILL works on a stopped process; nothing more executes
    else:
        server.stop(kill=True)
        yield


def stored_messages(server: RedisServer, spool_dir: Path) -> dict[str, list[bytes]]:
    """Messages in Redis (restarted from its AOF) and in the spool, in entry id order."""
    server.start()
    entries = {eid: fields for eid, fields in server.client().xrange(KEY)}
    spool = Spool(spool_dir, 1 << 40, 1 << 30)
    while len(spool):
        got, cursor = spool.read(1 << 24)
        spool.commit(cursor, len(got))
        for b in got:
            for e in b.entries:
                entries.setdefault(e.id, e.fields)  # a repeat of Redis's copy: same id, same data
    order = sorted(entries, key=lambda i: tuple(int(x) for x in i.split(b"-")))
    return messages_by_stream([rec for eid in order for rec in decode_entry(entries[eid])])


@pytest.mark.parametrize("fault", ["hung", "down"])
async def test_stop_with_redis_failing_and_the_spool_full_ends_in_time_with_all_spooled(
    tmp_path: Path, binance_data: Path, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    expected = recorded(binance_data)
    gen = make_redis(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    server = next(gen)
    sim_cfg = SimulatorSettings(
        port=0,
        mode="replay",
        replay_files=[binance_data / "spot_ethusdt_20240808.gz"],
        replay_speed=0,
        ping_interval_s=1,
    )
    try:
        async with Simulator(sim_cfg) as sim:
            base = settings_for(
                sim,
                server.url,
                tmp_path / "spool",
                spool_max_bytes=30_000,  # full after a few batches: the spool refuses
                queue_max_records=5_000,
            )
            data = base.model_dump(mode="python")
            data["redis"]["socket_timeout_s"] = 120.0  # far beyond the budget
            col = Collector(Settings.model_validate(data))
            col.shutdown_timeout_s = BUDGET_S
            stop = asyncio.Event()
            task = asyncio.create_task(col.run(stop))
            try:
                await wait_until(lambda: col.stats.records_out[KEY] > 1000, what="records stored")
                with redis_fault(server, fault):
                    writer = col.writer
                    assert writer is not None
                    # A queue well past one batch; the bound is for a loaded CI machine, where
                    # the simulator, collector and test share one event loop (30 s once ran out).
                    await wait_until(
                        lambda: writer.queued_records >= 1000, limit_s=120, what="a queue"
                    )
                    caplog.clear()
                    with caplog.at_level(logging.INFO, logger="vps_brain.collect"):
                        stop.set()
                        done, _ = await asyncio.wait([task], timeout=BUDGET_S)
                    assert done, f"the collector did not stop within {BUDGET_S} s"
                    task.result()
            finally:
                if not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        received = sum(col.stats.messages_in.values()) - sum(col.stats.duplicates.values())
        stored = stored_messages(server, tmp_path / "spool")
        assert sum(len(v) for v in stored.values()) == received
        for name, msgs in stored.items():
            assert msgs == expected[name][: len(msgs)], name  # in order, none missing
        [final] = [r for r in caplog.records if r.getMessage() == "collector stopped"]
        fields = final.fields  # type: ignore[attr-defined]
        # Everything in memory at the stop (and whatever a closing connection still delivered)
        # went to Redis or to the spool; a reply already on its way can make some reach Redis.
        assert fields["lost"] == 0
        assert fields["to_spool"] > 0
        assert fields["to_redis"] + fields["to_spool"] >= fields["at_stop"] > 0
        assert final is caplog.records[-1]
    finally:
        with contextlib.suppress(StopIteration):
            next(gen)
