# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One sandbox for every unit the collection writes.

The collector's and consumer's units (roles/service) and the monitoring role's exporters and health
check (roles/monitoring, as drop-ins, with each unit's own exceptions on top) start from the same
directive set. Two roles cannot share a vars file, so each holds a copy and this test keeps the copies
equal, directive by directive, and checks that the unit template writes the set and no sandbox
directive of its own.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROLES = Path(__file__).resolve().parents[2] / 'roles'


def _vars(role: str) -> dict:
    return yaml.safe_load((ROLES / role / 'vars' / 'main.yml').read_text())


def test_the_service_and_monitoring_sandboxes_are_one_set() -> None:
    service = _vars('service')['_service_sandbox']
    monitoring = _vars('monitoring')['_monitoring_sandbox']
    assert len(service) >= 25
    drift = {key: (service.get(key), monitoring.get(key))
             for key in set(service) | set(monitoring) if service.get(key) != monitoring.get(key)}
    assert not drift, 'directive: (roles/service, roles/monitoring): %r' % drift
    assert list(service) == list(monitoring), 'the same directives in the same order'


def test_the_service_unit_writes_the_sandbox_and_no_directive_of_its_own() -> None:
    template = (ROLES / 'service' / 'templates' / 'vps-brain-service.service.j2').read_text()
    assert '_service_sandbox.items()' in template
    written = set(re.findall(r'^([A-Za-z]+)=', template, re.MULTILINE))
    assert not written & set(_vars('service')['_service_sandbox']), written
