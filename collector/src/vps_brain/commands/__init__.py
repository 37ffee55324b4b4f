"""The sub-commands of ``vps-brain``, one module each, and what they share.

Each module exposes ``add_arguments(parser)`` and ``run(args) -> int`` (the table is
:data:`vps_brain.cli.COMMANDS`); it parses and prints only, the work is done by the library
packages (:mod:`vps_brain.collect`, :mod:`vps_brain.consume`, :mod:`vps_brain.sim`).

Settings reach every command the same way, through :func:`settings_from_args`: defaults < file
(``--config``) < environment (``VPS_BRAIN__...``) < the command's flags, and the result is
validated by the pydantic model as a whole, so a bad flag is refused like a bad file entry (its
dotted path, ``[command line]``, no secret shown). A command that cannot use its settings says
why on stderr and exits with :data:`EXIT_CONFIG` (:func:`refuse`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any, Final

from pydantic import ValidationError

from vps_brain.config import ConfigError, Settings, format_validation_error, load_settings

#: Exit status of a command refused for its configuration or flags.
EXIT_CONFIG: Final = 2


def apply_overrides(settings: Settings, overrides: Mapping[str, Any]) -> Settings:
    """``settings`` with each dotted path of ``overrides`` (``"redis.url"``) set, validated.

    A value of ``None`` means the flag was not given and leaves the field alone. Raises
    :class:`ConfigError` naming every bad field, attributed to the command line.
    """
    given = {path: value for path, value in overrides.items() if value is not None}
    if not given:
        return settings
    data: dict[str, Any] = settings.model_dump()  # python mode: secrets stay SecretStr
    for path, value in given.items():
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:  # the file was valid: the flags are wrong
        raise ConfigError(format_validation_error(exc, "command line")) from None


def settings_from_args(args: argparse.Namespace, overrides: Mapping[str, Any]) -> Settings:
    """The settings of ``--config`` and the environment, with the flags' ``overrides`` applied."""
    return apply_overrides(load_settings(args.config), overrides)


def split_list(value: str | None) -> list[str] | None:
    """A comma-separated flag (``--symbols ethusdt,btcusdt``) as a list; None when not given."""
    return value.split(",") if value else None


def refuse(command: str, exc: ConfigError) -> int:
    """Say on stderr why ``command`` cannot run with its settings; the exit status to return."""
    print(f"vps-brain {command}: {exc}", file=sys.stderr)
    return EXIT_CONFIG


__all__ = ["EXIT_CONFIG", "apply_overrides", "refuse", "settings_from_args", "split_list"]
