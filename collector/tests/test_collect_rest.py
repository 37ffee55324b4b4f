"""The shared REST weight budget: fixed windows, the exchange's count, Retry-After, rank order."""

from __future__ import annotations

import asyncio
import time

from vps_brain.collect.rest import SyncOrder, WeightBudget


async def test_budget_grants_up_to_its_limit_then_makes_callers_wait() -> None:
    budget = WeightBudget(100, window_s=0.5, guard_s=0.05)
    n = 0
    while budget._delay(50) <= 0:
        await budget.acquire(50)
        n += 1
    assert n <= 2  # never more than the limit within reach of the guard
    await budget.acquire(50)  # waits for a window with room, then passes
    assert budget.granted == 50 * (n + 1)


async def test_no_window_is_granted_more_than_its_limit() -> None:
    budget = WeightBudget(60, window_s=0.2, guard_s=0.02)
    grants: list[float] = []

    async def one() -> None:
        await budget.acquire(10)
        grants.append(time.time())

    await asyncio.gather(*(one() for _ in range(30)))
    per_window: dict[int, int] = {}
    for t in grants:
        per_window[int(t // 0.2)] = per_window.get(int(t // 0.2), 0) + 10
    assert max(per_window.values()) <= 60


async def test_exchange_reported_usage_lowers_the_budget_and_429_pauses_everyone() -> None:
    budget = WeightBudget(6000)
    budget.observe_used(5990)
    assert budget._delay(50) > 0
    budget.used.clear()
    budget.pause(0.05)
    assert budget.paused_until > time.monotonic()
    await budget.acquire(5)  # waits for the pause, then passes
    assert time.monotonic() >= budget.paused_until


async def test_an_answer_from_another_window_than_its_request_is_not_taken_as_this_ones() -> None:
    budget = WeightBudget(6000)
    budget.observe_used(5990, sent_at=time.time() - 120)
    assert budget._delay(50) == 0


async def test_waiters_are_served_by_rank_and_a_rank_is_read_when_a_grant_is_due() -> None:
    budget = WeightBudget(1000, window_s=60)
    budget.pause(0.1)  # everyone queues behind the pause
    seen = {"a": 1, "b": 5, "c": 3, "d": 0}
    order = SyncOrder(["a", "b", "c", "d"], ["d"], seen.__getitem__)
    served: list[str] = []

    async def fetch(symbol: str) -> None:
        await budget.acquire(5, lambda: order.rank(symbol))
        served.append(symbol)

    tasks = [asyncio.create_task(fetch(s)) for s in "abcd"]
    await asyncio.sleep(0.02)
    seen["a"] = 10  # a became the busiest while waiting
    await asyncio.gather(*tasks)
    assert served == ["d", "a", "b", "c"]  # priority, then busiest first


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    budget = WeightBudget(1000)
    budget.pause(0.05)
    t = asyncio.create_task(budget.acquire(5))
    await asyncio.sleep(0.01)
    t.cancel()
    await asyncio.gather(t, return_exceptions=True)
    assert budget.waiting == 0
    await budget.acquire(5)
