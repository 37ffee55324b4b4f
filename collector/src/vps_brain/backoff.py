"""Retry policy for the whole package: how long to wait after a failure, and when not to retry.

* :class:`Backoff` is the one backoff: capped exponential with equal jitter, built on redis-py's
  ``redis.backoff.EqualJitterBackoff``. It is stateful (``next()`` after each failure, ``reset()``
  after a success) and also a redis-py ``AbstractBackoff`` (``compute(failures)``), so it can be
  handed to ``redis.retry.Retry`` as is. Every delay lies in ``[low, high]``; the n-th delay
  (from 0) lies in ``[t/2, t]`` with ``t = min(high, low * 2**(n+1))``, so retries spread out
  from the first one on and stay spread at the cap (never all exactly ``high``).
* :func:`is_permanent_status` tells an HTTP answer that retrying cannot heal (a malformed
  request: 400 "Invalid symbol", 404...) from one that can (5xx, 429/418 rate limits, 403 WAF,
  408 timeout). A permanent answer stops what asked it, with one ERROR line and a metric; a
  transient one is retried with a :class:`Backoff`.
"""

from __future__ import annotations

from redis.backoff import AbstractBackoff, EqualJitterBackoff

#: The exponent stops growing here: 2**64 times any base is far past every cap.
MAX_FAILURES = 64

#: 4xx answers that are transient: rate limits (429, Binance 418), WAF (403), timeouts (408),
#: conflicts and too-early replays (409, 425). Every other 4xx means the request itself is wrong.
TRANSIENT_4XX = frozenset({403, 408, 409, 418, 425, 429})


class Backoff(AbstractBackoff):
    """Capped, jittered exponential: ``next()`` after each failure, ``reset()`` after a success.

    ``low`` is the shortest delay (the first retry waits ``low`` to ``2*low``), ``high`` the cap.
    """

    def __init__(self, low: float, high: float) -> None:
        if low <= 0:
            raise ValueError(f"backoff low must be > 0, not {low}")
        self.low = low
        self.high = max(high, low)
        self._jitter = EqualJitterBackoff(cap=self.high, base=2 * low)
        self.failures = 0

    def compute(self, failures: int) -> float:
        """The delay after ``failures`` earlier failures (redis-py's interface; no state)."""
        n = min(max(failures, 0), MAX_FAILURES)
        return min(self.high, max(self.low, self._jitter.compute(n)))

    def next(self) -> float:
        """The delay before the next attempt; each call doubles the range up to the cap."""
        delay = self.compute(self.failures)
        self.failures = min(self.failures + 1, MAX_FAILURES)
        return delay

    def reset(self) -> None:
        """Start again from ``low`` (after a success)."""
        self.failures = 0


def is_permanent_status(status: int) -> bool:
    """True for an HTTP status that the same request will get again however long one waits."""
    return 400 <= status < 500 and status not in TRANSIENT_4XX


__all__ = ["MAX_FAILURES", "TRANSIENT_4XX", "Backoff", "is_permanent_status"]
