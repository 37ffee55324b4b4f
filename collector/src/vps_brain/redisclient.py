"""Redis clients: the one place that turns :class:`~vps_brain.config.RedisSettings` into a client.

Every service (collector, consumer, live feed, ``vps-brain trim`` and ``status``) gets its client
here, asyncio (:func:`async_client`) or blocking (:func:`sync_client`), with the same options:

* authentication as the configured ACL user (``username`` and the password from ``password`` or
  ``password_file``);
* the socket and connect timeouts of the settings, unless the caller bounds them deliberately
  tighter (the live feed: 1 s each, so the live Redis never holds the consumer);
* redis-py's own retry of a failed command (its default, 3 attempts with jittered exponential
  backoff), or ``retries`` attempts with :class:`vps_brain.backoff.Backoff` between them;
  ``retries=0`` disables it for a caller that backs off itself;
* a health check (PING on a connection idle this long) only when asked: off by default;
* raw ``bytes`` replies (stream entries are binary).

A plain URL (``"redis://127.0.0.1:6379/0"``) may stand for the settings: no user, no password,
the default timeouts.
"""

from __future__ import annotations

from typing import Any, TypedDict, Unpack

import redis
import redis.asyncio as aioredis
import redis.asyncio.retry as aioretry
import redis.retry as syncretry

from vps_brain.backoff import Backoff
from vps_brain.config import RedisSettings

#: Between redis-py's retries when ``retries`` is given (the client's default otherwise).
RETRY_MIN_S = 0.05
RETRY_MAX_S = 1.0


class Overrides(TypedDict, total=False):
    """What one caller may set differently from the settings (every key optional)."""

    #: Deliberately different bounds of one caller (default: the settings').
    socket_timeout_s: float
    connect_timeout_s: float
    #: Retries of a failed command inside the client (default: redis-py's; 0: none).
    retries: int
    #: PING a connection idle this long before using it (default 0: never).
    health_check_interval_s: int


def _connection(
    settings: RedisSettings | str,
    overrides: Overrides,
    retry_class: type[syncretry.Retry] | type[aioretry.Retry],
) -> tuple[str, dict[str, Any]]:
    """The URL and the client options of both factories."""
    cfg = RedisSettings(url=settings) if isinstance(settings, str) else settings
    kw: dict[str, Any] = {
        "username": cfg.username,
        "password": cfg.resolved_password(),
        "socket_timeout": overrides.get("socket_timeout_s", cfg.socket_timeout_s),
        "socket_connect_timeout": overrides.get("connect_timeout_s", cfg.connect_timeout_s),
        "health_check_interval": overrides.get("health_check_interval_s", 0),
        "decode_responses": False,
    }
    if "retries" in overrides:
        kw["retry"] = retry_class(Backoff(RETRY_MIN_S, RETRY_MAX_S), overrides["retries"])
    return cfg.url, kw


def async_client(settings: RedisSettings | str, **overrides: Unpack[Overrides]) -> aioredis.Redis:
    """An asyncio client (hiredis parser when installed) authenticating as the configured user."""
    url, kw = _connection(settings, overrides, aioretry.Retry)
    client: aioredis.Redis = aioredis.Redis.from_url(url, **kw)
    return client


def sync_client(settings: RedisSettings | str, **overrides: Unpack[Overrides]) -> redis.Redis:
    """A blocking client, with the same options as :func:`async_client`."""
    url, kw = _connection(settings, overrides, syncretry.Retry)
    client: redis.Redis = redis.Redis.from_url(url, **kw)
    return client


__all__ = ["RETRY_MAX_S", "RETRY_MIN_S", "Overrides", "async_client", "sync_client"]
