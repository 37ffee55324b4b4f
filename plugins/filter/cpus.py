# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters of the roles over the CPU lists the modules report.

The CPU list syntax is parsed in one place, ``plugins/module_utils/cpulist.py``; these filters
only arrange what ``marketdata.vps_brain.cpu_affinity`` returns for an assert. Unit tested in
tests/unit/plugins/filter/test_cpus.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.marketdata.vps_brain.plugins.module_utils.cpulist import parse_cpulist


def cpu_affinity_groups(results: Iterable[Mapping] | Mapping | None, key: str = 'unit') -> list[dict]:
    """The threads of registered ``cpu_affinity`` results grouped by unit and CPU list.

    RESULTS is a looped register (its ``results``) or the list of them; each result's
    ``before.summary`` maps a CPU list to its thread count, and ``item[KEY]`` names the unit.
    Returns one ``{unit, cpulist, cpus, threads}`` per unit and CPU list, ``cpus`` the sorted CPU
    numbers, in the order of the results and their summaries. Skipped results are left out.
    """
    if isinstance(results, Mapping):
        results = results.get('results', [])
    groups = []
    for result in results or []:
        if not isinstance(result, Mapping) or result.get('skipped'):
            continue
        item = result.get('item')
        unit = item.get(key) if isinstance(item, Mapping) else item
        summary = (result.get('before') or {}).get('summary') or {}
        for cpulist, threads in summary.items():
            try:
                cpus = sorted(parse_cpulist(cpulist))
            except ValueError as exc:
                raise AnsibleFilterError('cpu_affinity_groups: %s of %s: %s' % (cpulist, unit, exc))
            groups.append({'unit': unit, 'cpulist': cpulist, 'cpus': cpus, 'threads': threads})
    return groups


class FilterModule:
    """CPU list filters of the roles."""

    def filters(self):
        return {
            'cpu_affinity_groups': cpu_affinity_groups,
        }
