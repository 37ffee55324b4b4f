"""The config model: YAML/TOML file, env overrides, errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from vps_brain.config import ConfigError, Settings, load_settings


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_load_without_a_file() -> None:
    s = load_settings(environ={})
    assert isinstance(s, Settings)
    assert s.collector.max_streams_per_connection is None  # the venue's limit
    assert [(m.venue, m.symbols) for m in s.collector.markets] == [("spot", ["btcusdt", "ethusdt"])]
    assert s.redis.resolved_password() is None


def test_yaml_file_sets_fields_and_symbols_are_lower_cased(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "redis:\n  url: redis://10.0.0.1:6379/0\n  username: collector\n"
        "collector:\n  symbols: [ETHUSDT, btcusdt]\n  batch_max_records: 10\n",
    )
    s = load_settings(p, environ={})
    assert s.redis.url == "redis://10.0.0.1:6379/0"
    assert s.redis.username == "collector"
    assert s.collector.markets[0].symbols == ["ethusdt", "btcusdt"]
    assert s.collector.batch_max_records == 10


def test_toml_file_is_accepted(tmp_path: Path) -> None:
    p = write(tmp_path, '[collector]\nframing = "plain"\n', "c.toml")
    assert load_settings(p, environ={}).collector.framing == "plain"


def test_env_overrides_file_with_double_underscore_paths(tmp_path: Path) -> None:
    p = write(tmp_path, "collector:\n  batch_max_records: 10\n")
    env = {
        "VPS_BRAIN__COLLECTOR__BATCH_MAX_RECORDS": "20",
        "VPS_BRAIN__COLLECTOR__SYMBOLS": '["solusdt"]',
        "vps_brain__simulator__faults__rest_429_count": "3",
        "UNRELATED": "x",
    }
    s = load_settings(p, environ=env)
    assert s.collector.batch_max_records == 20
    assert s.collector.markets[0].symbols == ["solusdt"]
    assert s.simulator.faults.rest_429_count == 3


def test_bad_value_in_file_names_the_field(tmp_path: Path) -> None:
    p = write(tmp_path, "collector:\n  batch_max_records: -1\n")
    with pytest.raises(ConfigError, match=r"collector\.batch_max_records: .*greater than 0"):
        load_settings(p, environ={})


def test_bad_value_from_env_names_the_field_and_variable() -> None:
    env = {"VPS_BRAIN__COLLECTOR__MAX_STREAMS_PER_CONNECTION": "2000"}
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env)
    msg = str(info.value)
    assert "collector.max_streams_per_connection" in msg
    assert "VPS_BRAIN__COLLECTOR__MAX_STREAMS_PER_CONNECTION" in msg


def test_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    p = write(tmp_path, "collector:\n  batch_max_recrods: 5\n")
    with pytest.raises(ConfigError, match=r"collector\.batch_max_recrods"):
        load_settings(p, environ={})


def test_malformed_yaml_and_missing_file_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "collector: [\n"), environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "nope.yaml", environ={})
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(write(tmp_path, "- a\n"), environ={})


def test_password_file_is_read_and_password_not_echoed(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    s = load_settings(environ={"VPS_BRAIN__REDIS__PASSWORD_FILE": str(pw)})
    assert s.redis.resolved_password() == "s3cret"
    with pytest.raises(ConfigError) as info:
        load_settings(
            environ={"VPS_BRAIN__REDIS__PASSWORD_FILE": str(pw), "VPS_BRAIN__REDIS__PASSWORD": "x"}
        )
    assert "redis" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_cross_field_checks_name_the_section() -> None:
    env = {
        "VPS_BRAIN__COLLECTOR__RECONNECT_MIN_S": "60",
        "VPS_BRAIN__COLLECTOR__RECONNECT_MAX_S": "1",
    }
    with pytest.raises(ConfigError, match="reconnect_min_s"):
        load_settings(environ=env)


def test_replay_mode_without_files_is_rejected() -> None:
    with pytest.raises(ConfigError, match="replay_files"):
        load_settings(environ={"VPS_BRAIN__SIMULATOR__MODE": "replay"})


def test_the_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "vps-brain.yaml"
    s = load_settings(example, environ={})
    assert s.redis.username == "collector"
    assert s.collector.markets[0].symbols == ["ethusdt", "btcusdt"]
