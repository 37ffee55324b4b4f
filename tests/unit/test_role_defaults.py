# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A role's defaults are written in defaults/main.yml; its argument_specs only repeat them.

Ansible reads the value from defaults/main.yml and shows the argument_specs' `default` in
ansible-doc: the two copies must agree, or the documentation lies. Every variable a role defaults
is declared in its `main` entry point (so that a misspelt inventory variable is refused), and every
declared default has its value in defaults/main.yml. Each drift is reported by role and variable.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

COLLECTION = Path(__file__).resolve().parents[2]
ROLES = sorted(
    path.name for path in (COLLECTION / 'roles').iterdir()
    if (path / 'meta' / 'argument_specs.yml').is_file() and (path / 'defaults' / 'main.yml').is_file()
)


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def _main_options(role: str) -> dict:
    specs = _load(COLLECTION / 'roles' / role / 'meta' / 'argument_specs.yml')['argument_specs']
    return specs['main'].get('options', {})


def test_every_role_with_defaults_has_argument_specs() -> None:
    with_defaults = {p.parents[1].name for p in (COLLECTION / 'roles').glob('*/defaults/main.yml')}
    assert with_defaults <= set(ROLES), sorted(with_defaults - set(ROLES))


@pytest.mark.parametrize('role', ROLES)
def test_every_default_is_declared_with_the_same_value(role: str) -> None:
    defaults = _load(COLLECTION / 'roles' / role / 'defaults' / 'main.yml')
    options = _main_options(role)
    undeclared = sorted(set(defaults) - set(options))
    assert not undeclared, f'{role}: defaults/main.yml sets variables its argument_specs do not declare: {undeclared}'
    differ = {
        name: {'defaults/main.yml': value, 'argument_specs': options[name].get('default')}
        for name, value in defaults.items()
        if 'default' in options[name] and options[name]['default'] != value
    }
    assert not differ, f'{role}: the two copies of a default disagree: {differ}'


@pytest.mark.parametrize('role', ROLES)
def test_every_declared_default_has_its_value_in_defaults(role: str) -> None:
    defaults = _load(COLLECTION / 'roles' / role / 'defaults' / 'main.yml')
    missing = sorted(
        name for name, option in _main_options(role).items()
        if 'default' in option and name not in defaults
    )
    assert not missing, f'{role}: argument_specs name a default that defaults/main.yml does not set: {missing}'
