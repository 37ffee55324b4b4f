"""One fact, one home: the Ansible roles deploy the pydantic settings' defaults, the Brain's
Redis ACL in the redis role is the one the Python tests grant (``READER_ACL``), and the collector
role knows the venues and channels of :data:`vps_brain.venues.VENUES`.

The settings (collector/src/vps_brain/config.py) are the truth; each role default that fills a
settings field is compared with that field's default, so a copy that drifts fails here. Role
variables that are not settings (units, users, paths of the deployment) and values the role
computes or requires are listed with the reason they are not compared. The collector role's venue
choices (meta/argument_specs.yml) and its channel lists (vars/main.yml), which its preflight
checks the inventory against, are compared with ``VENUES``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from vps_brain.config import MarketSettings, Settings
from vps_brain.consume.reader import READER_ACL
from vps_brain.venues import VENUES

ROLES = Path(__file__).resolve().parents[2] / "roles"

#: role -> {role variable: dotted settings field} (as the role's config template maps them; a
#: number indexes a list). The collector's shorthand variables make the one spot market the
#: settings default to: they are compared with that market's symbols, channels and endpoints (the
#: venue's, ``MarketSettings.ws_base`` etc., when the market leaves them unset).
FIELDS: dict[str, dict[str, str]] = {
    "collector": {
        "collector_ws_url": "collector.markets.0.ws_base",
        "collector_rest_url": "collector.markets.0.rest_base",
        "collector_symbols": "collector.markets.0.symbols",
        "collector_channels": "collector.markets.0.stream_channels",
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
        "consumer_catchup_budget_bytes_s": "consumer.catchup_budget_bytes_s",
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
    "collector_markets": "[] = the one spot market of collector_symbols, collector_channels, "
    "collector_ws_url and collector_rest_url, each compared with collector.markets.0 above",
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


def role_file(role: str, *path: str) -> Any:
    return yaml.safe_load((ROLES / role).joinpath(*path).read_text())


def settings_default(path: str) -> Any:
    node: Any = Settings()
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
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


# ------------------------------------------------------------------ the collector role's venues


def collector_markets_spec() -> dict[str, Any]:
    spec = role_file("collector", "meta", "argument_specs.yml")
    options: dict[str, Any] = spec["argument_specs"]["main"]["options"]["collector_markets"]
    return options


def test_collector_role_venue_choices_are_the_venues() -> None:
    choices = collector_markets_spec()["options"]["venue"]["choices"]
    assert choices == list(VENUES), (
        f"roles/collector/meta/argument_specs.yml collector_markets.venue choices {choices} but "
        f"vps_brain.venues.VENUES has {list(VENUES)}"
    )


def test_collector_role_channels_of_each_venue_are_the_venues_channels() -> None:
    role = role_file("collector", "vars", "main.yml")["_collector_venue_channels"]
    python = {name: list(venue.channels) for name, venue in VENUES.items()}
    assert role == python, (
        f"roles/collector/vars/main.yml _collector_venue_channels {role} but "
        f"vps_brain.venues.VENUES channels are {python}"
    )
    assert list(role) == list(VENUES), "list the venues in the order of VENUES"


def test_collector_role_endpoints_of_each_venue_are_the_venues_endpoints() -> None:
    role = role_file("collector", "vars", "main.yml")["_collector_venue_endpoints"]
    python = {n: {"ws_url": v.ws_url, "rest_url": v.rest_url} for n, v in VENUES.items()}
    assert role == python, (
        f"roles/collector/vars/main.yml _collector_venue_endpoints {role} but "
        f"vps_brain.venues.VENUES has {python}"
    )


def test_collector_role_market_keys_are_market_settings_fields() -> None:
    keys = set(collector_markets_spec()["options"])
    assert keys <= set(MarketSettings.model_fields), (
        f"collector_markets suboptions that collector.markets rejects: "
        f"{sorted(keys - set(MarketSettings.model_fields))}"
    )
    required = {k for k, o in collector_markets_spec()["options"].items() if o.get("required")}
    python_required = {k for k, f in MarketSettings.model_fields.items() if f.is_required()}
    assert python_required <= required, (python_required, required)
