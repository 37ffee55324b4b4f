"""The one Redis client factory: every client gets the settings' user, password and timeouts."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from vps_brain.config import RedisSettings
from vps_brain.redisclient import async_client, sync_client


def test_both_clients_authenticate_and_use_the_settings_timeouts(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    cfg = RedisSettings(
        url="redis://10.8.0.1:6379/0",
        username="brain",
        password_file=secret,
        socket_timeout_s=3.0,
        connect_timeout_s=1.5,
    )
    for client in (async_client(cfg), sync_client(cfg)):
        kw = client.connection_pool.connection_kwargs
        assert (kw["username"], kw["password"]) == ("brain", "s3cret")
        assert (kw["socket_timeout"], kw["socket_connect_timeout"]) == (3.0, 1.5)
        assert kw["host"] == "10.8.0.1"


def test_a_caller_bounds_its_own_timeouts_and_turns_retries_off() -> None:
    cfg = RedisSettings(username="brain", password=SecretStr("x"))
    client = async_client(cfg, socket_timeout_s=1.0, connect_timeout_s=1.0, retries=0)
    kw = client.connection_pool.connection_kwargs
    assert (kw["socket_timeout"], kw["socket_connect_timeout"]) == (1.0, 1.0)
    assert kw["retry"].get_retries() == 0


def test_a_plain_url_stands_for_settings_without_credentials() -> None:
    kw = sync_client("redis://127.0.0.1:6390/2").connection_pool.connection_kwargs
    assert kw["password"] is None and kw["port"] == 6390 and kw["db"] == 2
    assert kw["socket_timeout"] == RedisSettings().socket_timeout_s
