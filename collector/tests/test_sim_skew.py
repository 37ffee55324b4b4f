"""The generated market's skew: Zipf rates per symbol, the market's total kept, 0 = uniform."""

from __future__ import annotations

import asyncio
import contextlib
import math

import pytest

from vps_brain.config import SimulatorSettings
from vps_brain.sim.market import GeneratedMarket, Hub, skewed_rates, zipf_weights

SYMBOLS = [f"s{k:02d}usdt" for k in range(1, 21)]


def market(**kw: float) -> GeneratedMarket:
    rates = {"depth_rate": 2.0, "trade_rate": 40.0, "ticker_rate": 80.0, **kw}
    return GeneratedMarket(
        Hub(),
        SYMBOLS,
        rates["depth_rate"],
        rates["trade_rate"],
        rates["ticker_rate"],
        rate_skew=kw.get("rate_skew", 0.0),
        max_depth_rate=kw.get("max_depth_rate", 0.0),
    )


def test_rates_follow_zipf_and_keep_the_markets_total() -> None:
    for s in (0.5, 1.0, 1.5):
        rates = skewed_rates(100, 3.0, s)
        assert math.isclose(sum(rates), 300.0)
        for k in (2, 10, 100):
            assert math.isclose(rates[0] / rates[k - 1], k**s)


def test_depth_cap_spreads_the_excess_over_the_others() -> None:
    rates = skewed_rates(2000, 1.5, 1.0, cap=10.0)
    assert max(rates) == 10.0
    assert math.isclose(sum(rates), 3000.0)
    uncapped = [r for r in rates if r < 10.0]
    first = rates.index(uncapped[0])
    # below the cap the rates still fall as 1/k
    assert math.isclose(uncapped[0] / uncapped[-1], 2000 / (first + 1))
    assert rates == sorted(rates, reverse=True)


def test_skew_zero_is_the_uniform_market() -> None:
    assert zipf_weights(5, 0.0) == [1.0] * 5
    m = market()
    assert m.uniform
    assert all(
        r == {"depth": 2.0, "trade": 40.0, "bookTicker": 80.0} for r in m.symbol_rates.values()
    )


def test_settings_refuse_a_depth_cap_below_the_mean() -> None:
    SimulatorSettings(depth_rate=5, max_depth_rate=10, rate_skew=1)
    with pytest.raises(ValueError, match="max_depth_rate"):
        SimulatorSettings(depth_rate=5, max_depth_rate=4)


async def test_skewed_market_publishes_each_symbol_at_its_rate() -> None:
    m = market(rate_skew=1.0, max_depth_rate=10.0)
    assert not m.uniform
    hub = m.hub
    hub.started.set()
    task = asyncio.create_task(m.run())
    try:
        # until the quietest symbol has a count worth comparing (rank 20: 11 trades a second);
        # the hottest symbol's count gives the time the market ran
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 8
        while hub.published.get(f"{SYMBOLS[0]}@trade", 0) < 300:
            assert loop.time() < deadline, "the market did not publish"
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    published = dict(hub.published)
    for group, stream in (("trade", "trade"), ("bookTicker", "bookTicker"), ("depth", "depth")):
        hot = published[f"{SYMBOLS[0]}@{stream}"]
        expected_total = sum(r[group] for r in m.symbol_rates.values())
        got_total = sum(published.get(f"{s}@{stream}", 0) for s in SYMBOLS)
        scale = hot / m.symbol_rates[SYMBOLS[0]][group]  # seconds the market ran
        # every symbol within one event (of each slot's phase) plus 10 % of its expected count
        for s in SYMBOLS:
            want = m.symbol_rates[s][group] * scale
            assert abs(published.get(f"{s}@{stream}", 0) - want) <= 1 + 0.1 * want, (s, stream)
        assert math.isclose(got_total, expected_total * scale, rel_tol=0.1), stream
    # the channel totals are the uniform market's: symbols x per-symbol rate
    for group, rate in (("trade", 40.0), ("bookTicker", 80.0), ("depth", 2.0)):
        assert math.isclose(sum(r[group] for r in m.symbol_rates.values()), 20 * rate)
