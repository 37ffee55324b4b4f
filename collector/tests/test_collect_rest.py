"""The shared REST weight budget: token bucket, exchange-reported usage, Retry-After pause."""

from __future__ import annotations

import time

from vps_brain.collect.rest import WeightBudget


async def test_budget_grants_up_to_capacity_then_makes_callers_wait() -> None:
    budget = WeightBudget(6000)
    for _ in range(120):  # 120 snapshots of weight 50 = the whole minute
        await budget.acquire(50)
    assert budget.tokens < 50
    before = budget.tokens
    budget.rate = 50 / 0.05  # speed the refill up so the wait is short
    await budget.acquire(50)  # had to wait for the refill
    assert before < 50


async def test_exchange_reported_usage_lowers_the_budget_and_429_pauses_everyone() -> None:
    budget = WeightBudget(6000)
    budget.observe_used(5990)
    assert budget.tokens <= 10
    budget.pause(0.05)
    assert budget.paused_until > time.monotonic()
    budget.tokens = budget.capacity
    await budget.acquire(5)  # waits for the pause, then passes
    assert time.monotonic() >= budget.paused_until
