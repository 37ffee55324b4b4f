"""Every sub-command lives in vps_brain.commands and takes its flags through one validated path."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from pydantic import SecretStr

from vps_brain.cli import COMMANDS, main
from vps_brain.commands import EXIT_CONFIG, apply_overrides
from vps_brain.config import ConfigError, Settings


def test_every_command_is_a_module_of_vps_brain_commands_with_the_two_functions() -> None:
    assert set(COMMANDS) == {"simulate", "collect", "trim", "consume", "replay", "status"}
    for name, (module, _help) in COMMANDS.items():
        assert module == f"vps_brain.commands.{name}"
        mod = importlib.import_module(module)
        assert callable(mod.add_arguments) and callable(mod.run), module


def test_an_override_is_validated_and_named_as_from_the_command_line() -> None:
    with pytest.raises(ConfigError) as err:
        apply_overrides(Settings(), {"collector.metrics_port": 99999})
    assert "collector.metrics_port" in str(err.value)
    assert "[command line]" in str(err.value)


def test_overrides_not_given_leave_the_settings_and_their_secrets_alone() -> None:
    base = Settings.model_validate({"redis": {"password": "s3cret"}})
    out = apply_overrides(base, {"redis.url": "redis://10.8.0.1:6379/0", "collector.framing": None})
    assert out.redis.url == "redis://10.8.0.1:6379/0"
    assert out.collector.framing == base.collector.framing
    assert isinstance(out.redis.password, SecretStr)
    assert out.redis.password.get_secret_value() == "s3cret"


@pytest.mark.parametrize(
    "argv",
    [
        ["collect", "--check-config", "--metrics-port", "99999"],
        ["trim", "--redis-url", "http://127.0.0.1:1/0"],
        ["trim", "--min-retention", "-1"],
        ["consume", "--flush-interval", "-1"],
        ["status", "--once", "--vps-redis", "http://127.0.0.1:1/0"],
        ["simulate", "--port", "99999"],
        ["simulate", "--fault", "no_equals_sign"],
        ["replay", "--config", "/nonexistent/vps-brain.yaml"],
    ],
    ids=" ".join,
)
def test_a_bad_flag_is_refused_on_stderr_with_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(argv) == EXIT_CONFIG
    out, err = capsys.readouterr()
    assert err.startswith(f"vps-brain {argv[0]}: "), err
    assert out == ""
