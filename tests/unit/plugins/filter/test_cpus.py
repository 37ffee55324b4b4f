# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The CPU filters the monitoring role checks the exporters' thread affinity with."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.marketdata.vps_brain.plugins.filter import cpus as f


def _result(unit, summary, **extra):
    return dict({'item': {'unit': unit, 'port': 9100}, 'pids': [1], 'before': {'summary': summary}}, **extra)


def test_threads_are_grouped_by_unit_and_cpu_list():
    register = {'results': [
        _result('prometheus-node-exporter', {'0': 7}),
        _result('prometheus-redis-exporter', {'0-1,3': 2, '2': 1}),
    ]}
    assert f.cpu_affinity_groups(register) == [
        {'unit': 'prometheus-node-exporter', 'cpulist': '0', 'cpus': [0], 'threads': 7},
        {'unit': 'prometheus-redis-exporter', 'cpulist': '0-1,3', 'cpus': [0, 1, 3], 'threads': 2},
        {'unit': 'prometheus-redis-exporter', 'cpulist': '2', 'cpus': [2], 'threads': 1},
    ]


def test_a_list_of_results_and_the_kernel_stride_syntax_are_understood():
    groups = f.cpu_affinity_groups([_result('a', {'0-7:2/4': 3})])
    assert groups == [{'unit': 'a', 'cpulist': '0-7:2/4', 'cpus': [0, 1, 4, 5], 'threads': 3}]


def test_skipped_results_and_empty_summaries_add_nothing():
    register = {'results': [{'item': {'unit': 'a'}, 'skipped': True}, _result('b', {})]}
    assert f.cpu_affinity_groups(register) == []
    assert f.cpu_affinity_groups(None) == []


def test_a_cpu_list_that_does_not_parse_names_the_unit():
    with pytest.raises(AnsibleFilterError, match='of prometheus-node-exporter'):
        f.cpu_affinity_groups([_result('prometheus-node-exporter', {'one': 1})])


def test_the_filter_is_registered():
    assert f.FilterModule().filters() == {'cpu_affinity_groups': f.cpu_affinity_groups}
