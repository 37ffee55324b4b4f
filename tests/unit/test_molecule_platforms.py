# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every container platform of every Molecule scenario carries the one base in molecule/resources.

molecule/resources/platform.yml is the home of the image, init and limits of a test container;
Molecule cannot merge it into a platform list, so each platform repeats it and this test reports
each copy that drifts (scenario, platform, key). The kernel tier boots a VM, not a container: its
molecule.yml is not a podman scenario and is not read.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

COLLECTION = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load((COLLECTION / 'molecule' / 'resources' / 'platform.yml').read_text())


def _config(scenario: str) -> dict:
    return yaml.safe_load((COLLECTION / 'molecule' / scenario / 'molecule.yml').read_text())


def _platforms(scenario: str) -> list:
    return _config(scenario)['platforms']


ALL = sorted(path.parent.name for path in (COLLECTION / 'molecule').glob('*/molecule.yml'))
# A scenario that names no driver of its own runs in podman (the shared config's driver).
SCENARIOS = [s for s in ALL if _config(s).get('driver', {}).get('name', 'podman') == 'podman']


def test_the_container_scenarios_are_all_read() -> None:
    assert {'pipeline', 'redis', 'wireguard', 'firewall', 'monitoring'} <= set(SCENARIOS), SCENARIOS
    assert 'kernel' in ALL and 'kernel' not in SCENARIOS, (ALL, SCENARIOS)


@pytest.mark.parametrize('scenario', SCENARIOS)
def test_every_platform_carries_the_shared_base(scenario: str) -> None:
    drift = [
        (platform['name'], key, platform.get(key), value)
        for platform in _platforms(scenario)
        for key, value in BASE.items()
        if platform.get(key) != value
    ]
    assert not drift, [f'{scenario}/{name}: {key} is {got!r}, molecule/resources/platform.yml has {want!r}'
                       for name, key, got, want in drift]
