"""One fact, one home: the Ansible roles deploy the pydantic settings' defaults, and the Brain's
Redis ACL in the redis role is the one the Python tests grant (``READER_ACL``).

The settings (collector/src/vps_brain/config.py) are the truth; each role default that fills a
settings field is compared with that field's default, so a copy that drifts fails here. Role
variables that are not settings (units, users, paths of the deployment) and values the role
computes or requires are listed with the reason they are not compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from vps_brain.config import Settings
from vps_brain.consume.reader import READER_ACL

ROLES = Path(__file__).resolve().parents[2] / "roles"

#: role -> {role variable: dotted settings field} (as the role's config template maps them).
FIELDS: dict[str, dict[str, str]] = {
    "collector": {
        "collector_ws_url": "collector.ws_url",
        "collector_rest_url": "collector.rest_url",
        "collector_symbols": "collector.symbols",
        "collector_channels": "collector.channels",
        "collector_redis_url": "redis.url",
        "collector_framing": "collector.framing",
        "collector_spool_dir": "collector.spool_dir",
        "collector_spool_max_bytes": "collector.spool_max_bytes",
        "collector_metrics_host": "collector.metrics_host",
        "collector_metrics_port": "collector.metrics_port",
        "collector_log_level": "collector.log_level",
    },
    "consumer": {
        "consumer_group": "consumer.group",
        "consumer_name": "consumer.consumer_name",
        "consumer_streams": "consumer.streams",
        "consumer_stream_pattern": "consumer.stream_pattern",
        "consumer_store_dir": "consumer.store_dir",
        "consumer_flush_interval_s": "consumer.flush_interval_s",
        "consumer_parquet_compression": "consumer.parquet_compression",
        "consumer_live": "consumer.live",
        "consumer_live_redis_url": "consumer.live_redis_url",
        "consumer_metrics_host": "consumer.metrics_host",
        "consumer_metrics_port": "consumer.metrics_port",
        "consumer_log_level": "consumer.log_level",
    },
}

_DEPLOYMENT = "not a setting: how the role deploys the service"
#: role variable -> why it is not compared with a settings default.
NOT_COMPARED: dict[str, str] = {
    # A setting, but the role's value is not the settings' default on purpose.
    "collector_redis_username": "each service has its own ACL user; redis.username is shared "
    "by both services and defaults to Redis's default user",
    "consumer_redis_username": "each service has its own ACL user; redis.username is shared "
    "by both services and defaults to Redis's default user",
    "collector_redis_password": "a secret the play must pass; written to redis.password_file",
    "consumer_redis_password": "a secret the play must pass; written to redis.password_file",
    "consumer_vps_address": "part of redis.url, which the role builds (Jinja) from the address",
    "consumer_redis_port": "part of redis.url, which the role builds (Jinja) from the address",
    "consumer_redis_db": "part of redis.url, which the role builds (Jinja) from the address",
    "consumer_redis_url": "empty means: built from the address (Jinja); no settings default",
    "collector_extra_settings": "more settings fields, merged into the section as given",
    "consumer_extra_settings": "more settings fields, merged into the section as given",
    **{
        f"{role}_{name}": _DEPLOYMENT
        for role in ("collector", "consumer")
        for name in (
            "cpus",
            "user",
            "limit_nofile",
            "restart_sec",
            "service_enabled",
            "service_state",
            "config_file",
            "venv",
            "wheelhouse",
            "pip_extra_args",
        )
    },
}


def role_defaults(role: str) -> dict[str, Any]:
    data = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())
    assert isinstance(data, dict), f"roles/{role}/defaults/main.yml is not a mapping"
    return data


def settings_default(path: str) -> Any:
    node: Any = Settings()
    for part in path.split("."):
        node = getattr(node, part)
    return node


def plain(value: Any) -> Any:
    """A settings value as YAML would write it (paths as strings, models as dicts)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    return value


@pytest.mark.parametrize("role", sorted(FIELDS))
def test_every_role_default_is_compared_or_has_a_reason(role: str) -> None:
    unmapped = sorted(set(role_defaults(role)) - set(FIELDS[role]) - set(NOT_COMPARED))
    assert not unmapped, f"roles/{role}: map each to a settings field or give a reason: {unmapped}"


@pytest.mark.parametrize(
    ("role", "variable", "field"),
    [(role, var, field) for role, fields in FIELDS.items() for var, field in fields.items()],
)
def test_role_default_equals_the_settings_default(role: str, variable: str, field: str) -> None:
    value = role_defaults(role)[variable]
    assert not (isinstance(value, str) and "{{" in value), f"{variable} is templated: list it"
    assert value == plain(settings_default(field)), (
        f"roles/{role}/defaults/main.yml {variable}={value!r} but config.py {field} defaults to "
        f"{plain(settings_default(field))!r}"
    )


def test_reader_acl_is_what_the_redis_role_grants_the_brain() -> None:
    role_rules = role_defaults("redis")["redis_acl_users"]["brain"].split()
    assert set(READER_ACL) == set(role_rules), (
        f"only in READER_ACL: {sorted(set(READER_ACL) - set(role_rules))}; "
        f"only in roles/redis: {sorted(set(role_rules) - set(READER_ACL))}"
    )
