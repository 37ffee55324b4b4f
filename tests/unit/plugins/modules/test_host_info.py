# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.marketdata.vps_brain.plugins.modules import host_info

LIMITS = (
    'Limit                     Soft Limit           Hard Limit           Units     \n'
    'Max cpu time              unlimited            unlimited            seconds   \n'
    'Max open files            %s                 %s               files     \n'
    'Max locked memory         8388608              8388608              bytes     \n'
)
# CapEff of root in a default podman container plus NET_ADMIN: chown, dac_override, fowner,
# fsetid, kill, setgid, setuid, setpcap, net_bind_service, net_admin, sys_chroot, setfcap.
STATUS = 'Name:\tpython3\nCapInh:\t0000000000000000\nCapEff:\t%s\nCapBnd:\t00000000800425fb\n'
MOUNTINFO = (
    '1234 1200 0:52 / / rw,relatime - overlay overlay rw\n'
    '1235 1234 0:53 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n'
    '1236 1235 0:53 /sys /proc/sys ro,nosuid,nodev,noexec,relatime - proc proc rw\n'
    '1240 1234 0:60 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro\n'
)


@pytest.fixture
def machine(fake_root):
    """A machine (or VM) as root: no container marker, writable /sys, every capability."""
    fake_root.write('proc/1/limits', LIMITS % ('1024', '524288'))
    fake_root.write('proc/1/environ', 'HOME=/\0TERM=linux\0')
    fake_root.write('proc/self/status', STATUS % '000001ffffffffff')
    fake_root.write('proc/self/mountinfo', MOUNTINFO.replace(' ro,', ' rw,'))
    fake_root.write('proc/1/status', 'Name:\tsystemd\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\n')
    return fake_root


def test_a_machine_is_no_container_and_reports_its_limits_and_capabilities(run_module, machine):
    failed, result = run_module(host_info, {'root': str(machine)})
    assert not failed, result
    assert result['changed'] is False
    assert result['container'] is False
    assert result['container_type'] == ''
    assert (result['pid1_nofile_soft'], result['pid1_nofile_hard']) == (1024, 524288)
    assert result['capabilities'][:3] == ['cap_chown', 'cap_dac_override', 'cap_dac_read_search']
    assert 'cap_sys_admin' in result['capabilities'] and 'cap_net_admin' in result['capabilities']
    assert result['capabilities'][-1] == 'cap_checkpoint_restore'
    assert result['sys_read_only'] is False and result['proc_sys_read_only'] is False
    assert result['pid1_cpus'] == [0, 1]


@pytest.mark.parametrize('allowed, expected', [('0', [0]), ('0,2-3', [0, 2, 3])])
def test_pid1_cpus_after_isolation_are_the_housekeeping_cpus(run_module, machine, allowed, expected):
    machine.write('proc/1/status', 'Name:\tsystemd\nCpus_allowed_list:\t%s\n' % allowed)
    failed, result = run_module(host_info, {'root': str(machine)})
    assert not failed, result
    assert result['pid1_cpus'] == expected


def test_pid1_cpus_are_null_where_proc_1_status_is_unreadable(run_module, machine):
    (machine.path / 'proc' / '1' / 'status').unlink()
    failed, result = run_module(host_info, {'root': str(machine)})
    assert not failed, result
    assert result['pid1_cpus'] is None


def test_a_podman_container_is_named_by_systemd_and_has_read_only_sys(run_module, machine):
    machine.write('run/systemd/container', 'podman\n')
    machine.write('proc/self/status', STATUS % '00000000800415fb')
    machine.write('proc/self/mountinfo', MOUNTINFO)
    failed, result = run_module(host_info, {'root': str(machine)})
    assert not failed, result
    assert result['container'] is True
    assert result['container_type'] == 'podman'
    assert result['capabilities'] == [
        'cap_chown', 'cap_dac_override', 'cap_fowner', 'cap_fsetid', 'cap_kill', 'cap_setgid',
        'cap_setuid', 'cap_setpcap', 'cap_net_bind_service', 'cap_net_admin', 'cap_sys_chroot',
        'cap_setfcap',
    ]
    assert 'cap_sys_admin' not in result['capabilities']
    assert result['sys_read_only'] is True and result['proc_sys_read_only'] is True


@pytest.mark.parametrize('marker, expected', [
    (('proc/1/environ', 'HOME=/\0container=lxc\0'), 'lxc'),
    (('run/.containerenv', ''), 'podman'),
    (('.dockerenv', ''), 'docker'),
])
def test_a_container_without_systemd_marker_is_found_by_its_other_markers(run_module, machine, marker, expected):
    machine.write(*marker)
    failed, result = run_module(host_info, {'root': str(machine)})
    assert not failed, result
    assert (result['container'], result['container_type']) == (True, expected)


def test_systemds_marker_wins_over_the_others(run_module, machine):
    machine.write('run/systemd/container', 'systemd-nspawn\n')
    machine.write('.dockerenv', '')
    failed, result = run_module(host_info, {'root': str(machine)})
    assert not failed
    assert result['container_type'] == 'systemd-nspawn'


def test_unlimited_open_files_are_null(run_module, machine):
    machine.write('proc/1/limits', LIMITS % ('unlimited', 'unlimited'))
    failed, result = run_module(host_info, {'root': str(machine)})
    assert not failed
    assert (result['pid1_nofile_soft'], result['pid1_nofile_hard']) == (None, None)


def test_an_unnamed_capability_bit_keeps_its_number(run_module, machine):
    machine.write('proc/self/status', STATUS % ('%x' % (1 << 45 | 1)))
    failed, result = run_module(host_info, {'root': str(machine)})
    assert not failed
    assert result['capabilities'] == ['cap_chown', 'cap_45']


def test_a_root_without_proc_fails_naming_the_file(run_module, fake_root):
    failed, result = run_module(host_info, {'root': str(fake_root)})
    assert failed
    assert 'proc/1/limits' in result['msg']
