"""How long the VPS can hold the backlog (vps_brain.collect.hold): the estimate, and the collector's
gauges against a real redis-server with a maxmemory."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import make_redis
from harness import generated, running_collector, settings_for, wait_until

from vps_brain.collect.hold import HoldEstimate, room
from vps_brain.sim import Simulator


def test_the_rate_is_a_moving_average_of_the_bytes_written() -> None:
    est = HoldEstimate(time_constant_s=10.0)
    assert est.observe(0.0, 0) == 0.0  # no rate from a single point
    assert est.observe(1.0, 1000) == 1000.0  # the first interval's rate, not a tenth of it
    for t in range(2, 200):
        est.observe(float(t), 1000 * t)  # 1,000 bytes/s, steadily
    assert est.rate == pytest.approx(1000.0, rel=1e-6)
    est.observe(200.0, 199_000)  # nothing written for a second: the average falls a little
    assert 850 < est.rate < 1000
    assert est.observe(200.0, 500_000) == est.rate  # no time passed: unchanged


def test_hold_is_the_room_at_the_rate() -> None:
    est = HoldEstimate(rate=2_000.0)
    assert est.seconds(7_200_000) == 3600.0
    assert est.seconds(None) != est.seconds(None)  # NaN: unknown
    assert HoldEstimate().seconds(1) == math.inf  # no input: it lasts for ever
    # Redis up to the high watermark, then the spool; a Redis past it has no room left.
    assert room(used_memory=50, maxmemory=100, high_watermark=0.8, spool_free=5) == 35
    assert room(used_memory=90, maxmemory=100, high_watermark=0.8, spool_free=5) == 5
    assert room(used_memory=90, maxmemory=0, high_watermark=0.8, spool_free=5) is None


async def test_the_collector_reports_its_hold_time_from_redis_and_the_spool(tmp_path: Path) -> None:
    gen = make_redis(tmp_path, "--maxmemory", "64mb")
    server = next(gen)
    try:
        sim_cfg = generated(trade_rate=500, depth_rate=100, ticker_rate=500)
        async with Simulator(sim_cfg) as sim:
            settings = settings_for(
                sim, server.url, tmp_path / "spool", spool_max_bytes=4 * 1024**2
            )
            async with running_collector(settings) as col:
                stats = col.stats
                await wait_until(lambda: stats.input_bytes_per_second > 0, 10, "an input rate")
                await wait_until(lambda: math.isfinite(stats.hold_seconds), 10, "a hold time")
                info = server.client().info("memory")
                spool = col.writer.spool  # type: ignore[union-attr]
                expected = (
                    int(0.85 * 64 * 1024**2)
                    - int(info["used_memory"])
                    + (spool.max_bytes - spool.size)
                )
                assert stats.hold_room_bytes == pytest.approx(expected, rel=0.02)
                assert stats.hold_seconds == pytest.approx(
                    stats.hold_room_bytes / stats.input_bytes_per_second, rel=0.05
                )
                samples = {
                    s.name: s.value
                    for m in stats.registry.collect()
                    for s in m.samples
                    if s.name.startswith("vps_brain_collector_hold")
                }
                assert samples["vps_brain_collector_hold_seconds"] > 0
                assert samples["vps_brain_collector_hold_room_bytes"] == stats.hold_room_bytes
    finally:
        gen.close()
