"""The package's one backoff: capped, jittered, exponential, stateful; and what not to retry."""

from __future__ import annotations

import random

import pytest
from redis.backoff import AbstractBackoff

from vps_brain.backoff import Backoff, is_permanent_status


def test_delays_grow_exponentially_from_low_and_stay_under_the_cap() -> None:
    random.seed(11)
    b = Backoff(0.1, 2.0)
    for n in range(200):
        delay = b.next()
        top = min(2.0, 0.1 * 2 ** (n + 1))
        assert top / 2 <= delay <= top, (n, delay)


def test_delays_are_jittered_even_at_the_cap() -> None:
    b = Backoff(0.1, 2.0)
    for _ in range(40):
        b.next()
    at_cap = {b.next() for _ in range(50)}
    assert len(at_cap) == 50
    assert min(at_cap) >= 1.0


def test_reset_starts_again_from_low() -> None:
    b = Backoff(0.05, 5.0)
    for _ in range(30):
        b.next()
    b.reset()
    assert 0.05 <= b.next() <= 0.1


def test_a_cap_below_twice_low_still_keeps_every_delay_in_range() -> None:
    b = Backoff(1.0, 1.5)
    assert all(1.0 <= b.next() <= 1.5 for _ in range(100))
    assert Backoff(2.0, 1.0).next() == 2.0  # a cap below low is raised to low


def test_low_must_be_positive() -> None:
    with pytest.raises(ValueError, match="low"):
        Backoff(0.0, 1.0)


def test_it_is_a_redis_py_backoff_with_the_same_range() -> None:
    b = Backoff(0.01, 0.5)
    assert isinstance(b, AbstractBackoff)
    assert all(0.01 <= b.compute(n) <= 0.5 for n in range(1000))
    assert b.compute(10**9) <= 0.5  # huge failure counts neither overflow nor pass the cap


@pytest.mark.parametrize(
    ("status", "permanent"),
    [
        (400, True),
        (401, True),
        (404, True),
        (414, True),
        (451, True),
        (403, False),
        (408, False),
        (418, False),
        (429, False),
        (500, False),
        (503, False),
        (200, False),
    ],
)
def test_only_request_errors_are_permanent(status: int, permanent: bool) -> None:
    assert is_permanent_status(status) is permanent
