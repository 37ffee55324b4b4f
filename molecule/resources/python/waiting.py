"""Polling for the verifiers: wait until a probe returns something true, or fail saying what."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T], what: str, *, deadline_s: float, every_s: float = 2) -> T:
    """The first true result of PROBE, polled every EVERY_S; fails naming WHAT after DEADLINE_S."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = probe()
        if result:
            return result
        assert time.monotonic() < deadline, f"no {what} within {deadline_s:.0f} s"
        time.sleep(every_s)
