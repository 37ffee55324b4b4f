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

from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.retry as aioretry
import redis.retry as syncretry

from vps_brain.backoff import Backoff
from vps_brain.config import RedisSettings

#: Between redis-py's retries when ``retries`` is given (the client's default otherwise).
RETRY_MIN_S = 0.05
RETRY_MAX_S = 1.0


def _connection(
    settings: RedisSettings | str,
    socket_timeout_s: float | None,
    connect_timeout_s: float | None,
    retries: int | None,
    health_check_interval_s: int,
    retry_class: type[syncretry.Retry] | type[aioretry.Retry],
) -> tuple[str, dict[str, Any]]:
    """The URL and the client options of both factories."""
    cfg = RedisSettings(url=settings) if isinstance(settings, str) else settings
    kw: dict[str, Any] = {
        "username": cfg.username,
        "password": cfg.resolved_password(),
        "socket_timeout": cfg.socket_timeout_s if socket_timeout_s is None else socket_timeout_s,
        "socket_connect_timeout": (
            cfg.connect_timeout_s if connect_timeout_s is None else connect_timeout_s
        ),
        "health_check_interval": health_check_interval_s,
        "decode_responses": False,
    }
    if retries is not None:
        kw["retry"] = retry_class(Backoff(RETRY_MIN_S, RETRY_MAX_S), retries)
    return cfg.url, kw


def async_client(
    settings: RedisSettings | str,
    *,
    # Deliberately different bounds of one caller (default: the settings').
    socket_timeout_s: float | None = None,
    connect_timeout_s: float | None = None,
    # Retries of a failed command inside the client (None: redis-py's default; 0: none).
    retries: int | None = None,
    health_check_interval_s: int = 0,
) -> aioredis.Redis:
    """An asyncio client (hiredis parser when installed) authenticating as the configured user."""
    url, kw = _connection(
        settings,
        socket_timeout_s,
        connect_timeout_s,
        retries,
        health_check_interval_s,
        aioretry.Retry,
    )
    client: aioredis.Redis = aioredis.Redis.from_url(url, **kw)
    return client


def sync_client(
    settings: RedisSettings | str,
    *,
    # Deliberately different bounds of one caller (default: the settings').
    socket_timeout_s: float | None = None,
    connect_timeout_s: float | None = None,
    # Retries of a failed command inside the client (None: redis-py's default; 0: none).
    retries: int | None = None,
    health_check_interval_s: int = 0,
) -> redis.Redis:
    """A blocking client, with the same options as :func:`async_client`."""
    url, kw = _connection(
        settings,
        socket_timeout_s,
        connect_timeout_s,
        retries,
        health_check_interval_s,
        syncretry.Retry,
    )
    client: redis.Redis = redis.Redis.from_url(url, **kw)
    return client


__all__ = ["RETRY_MAX_S", "RETRY_MIN_S", "async_client", "sync_client"]
