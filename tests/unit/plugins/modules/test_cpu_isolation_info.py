# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.marketdata.vps_brain.plugins.modules import cpu_isolation_info

DROPIN = 'etc/default/grub.d/90-vps-brain-isolation.cfg'
BOOT = 'BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=1234 ro quiet'


def dropin_text(params):
    return ('# Managed by Ansible\n'
            'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT %s"\n' % params)


@pytest.fixture
def host(fake_root):
    """A 4-CPU host without isolation."""
    fake_root.cpus(online='0-3', isolated='')
    fake_root.write('proc/cmdline', BOOT + '\n')
    return fake_root


def test_reports_a_host_without_isolation(run_module, host):
    failed, result = run_module(cpu_isolation_info, {'root': str(host)})
    assert not failed
    assert result['changed'] is False
    assert result['online'] == '0-3'
    assert result['online_cpus'] == [0, 1, 2, 3]
    assert result['possible'] == '0-3'
    assert result['isolated'] == ''
    assert result['isolated_cpus'] == []
    assert result['housekeeping'] == '0-3'
    assert result['housekeeping_cpus'] == [0, 1, 2, 3]
    assert result['cmdline_isolcpus'] == ''
    assert result['cmdline_irqaffinity'] is None
    assert result['dropin_present'] is False
    assert result['configured'] is None
    assert result['configured_cpus'] is None
    assert result['reboot_required'] is False
    assert result['expected'] is None
    assert result['matches_expected'] is None
    assert result['configured_matches_expected'] is None


def test_running_and_configured_isolation_match_expected(run_module, host):
    host.cpus(online='0-3', isolated='2-3', nohz_full='2-3')
    host.write('proc/cmdline', BOOT + ' isolcpus=managed_irq,domain,2-3 nohz_full=2-3 irqaffinity=0-1\n')
    host.write(DROPIN, dropin_text('isolcpus=managed_irq,domain,2-3 nohz_full=2-3 rcu_nocbs=2-3'))
    failed, result = run_module(cpu_isolation_info, {'root': str(host), 'expected': '3,2', 'fail_on_mismatch': True})
    assert not failed, result['msg'] if failed else ''
    assert result['isolated'] == '2-3'
    assert result['isolated_cpus'] == [2, 3]
    assert result['nohz_full'] == '2-3'
    assert result['cmdline_isolcpus'] == '2-3'
    assert result['cmdline_isolcpus_flags'] == ['managed_irq', 'domain']
    assert result['cmdline_irqaffinity'] == '0-1'
    assert result['housekeeping'] == '0-1'
    assert result['configured'] == '2-3'
    assert result['configured_cpus'] == [2, 3]
    assert result['configured_nohz_full'] == '2-3'
    assert result['configured_params']['rcu_nocbs'] == '2-3'
    assert result['expected'] == '2-3'
    assert result['matches_expected'] is True
    assert result['configured_matches_expected'] is True
    assert result['reboot_required'] is False


def test_configured_but_not_running_requires_a_reboot(run_module, host):
    host.write(DROPIN, dropin_text('isolcpus=1 nohz_full=1 rcu_nocbs=1'))
    failed, result = run_module(cpu_isolation_info, {'root': str(host), 'expected': '1'})
    assert not failed
    assert result['dropin_present'] is True
    assert result['configured'] == '1'
    assert result['isolated'] == ''
    assert result['reboot_required'] is True
    assert result['matches_expected'] is False
    assert result['configured_matches_expected'] is True


def test_nohz_full_difference_alone_requires_a_reboot(run_module, host):
    host.cpus(online='0-3', isolated='1', nohz_full='')
    host.write(DROPIN, dropin_text('isolcpus=1 nohz_full=1'))
    failed, result = run_module(cpu_isolation_info, {'root': str(host)})
    assert not failed
    assert result['isolated'] == '1'
    assert result['nohz_full'] == ''
    assert result['configured_nohz_full'] == '1'
    assert result['reboot_required'] is True


def test_nohz_full_printed_as_null_by_a_kernel_booted_without_it_is_empty(run_module, host):
    # Debian 12's kernel, booted without nohz_full=, prints "(null)" in sysfs.
    host.cpus(online='0-1', isolated='', nohz_full='(null)')
    host.write(DROPIN, dropin_text('isolcpus=managed_irq,domain,1 nohz_full=1 rcu_nocbs=1'))
    failed, result = run_module(cpu_isolation_info, {'root': str(host), 'expected': '1'})
    assert not failed, result['msg'] if failed else ''
    assert result['nohz_full'] == ''
    assert result['reboot_required'] is True


def test_running_isolation_without_dropin_needs_no_reboot(run_module, host):
    host.cpus(online='0-3', isolated='3')
    failed, result = run_module(cpu_isolation_info, {'root': str(host), 'expected': '3'})
    assert not failed
    assert result['matches_expected'] is True
    assert result['configured_matches_expected'] is False
    assert result['reboot_required'] is False


def test_fail_on_mismatch_says_a_reboot_is_missing(run_module, host):
    host.write(DROPIN, dropin_text('isolcpus=1'))
    failed, result = run_module(cpu_isolation_info,
                                {'root': str(host), 'expected': '1', 'fail_on_mismatch': True})
    assert failed
    assert 'running CPU isolation is "", expected "1"' in result['msg']
    assert 'reboot to apply it' in result['msg']
    # The facts still come back with the failure.
    assert result['reboot_required'] is True


def test_fail_on_mismatch_names_what_the_dropin_configures(run_module, host):
    host.cpus(online='0-3', isolated='2')
    host.write(DROPIN, dropin_text('isolcpus=2'))
    failed, result = run_module(cpu_isolation_info,
                                {'root': str(host), 'expected': '1', 'fail_on_mismatch': True})
    assert failed
    assert 'running CPU isolation is "2", expected "1"' in result['msg']
    assert 'isolates 2' in result['msg']


def test_mismatch_without_fail_on_mismatch_does_not_fail(run_module, host):
    failed, result = run_module(cpu_isolation_info, {'root': str(host), 'expected': '1'})
    assert not failed
    assert result['matches_expected'] is False


def test_empty_expected_means_no_isolation(run_module, host):
    failed, result = run_module(cpu_isolation_info,
                                {'root': str(host), 'expected': '', 'fail_on_mismatch': True})
    assert not failed
    assert result['expected'] == ''
    assert result['matches_expected'] is True
    assert result['configured_matches_expected'] is True


def test_expected_cpu_not_online_fails_naming_it(run_module, host):
    failed, result = run_module(cpu_isolation_info, {'root': str(host), 'expected': '2,6-7'})
    assert failed
    assert result['msg'] == 'expected: CPU 6-7 not online (online: 0-3)'


def test_bad_expected_cpu_list_fails_clearly(run_module, host):
    failed, result = run_module(cpu_isolation_info, {'root': str(host), 'expected': '1-x'})
    assert failed
    assert result['msg'].startswith('expected: invalid CPU list')
    assert "'1-x'" in result['msg']


def test_falls_back_to_cmdline_when_sysfs_has_no_isolated_file(run_module, fake_root):
    fake_root.cpus(online='0-1', isolated=None, nohz_full=None)
    fake_root.write('proc/cmdline', BOOT + ' isolcpus=nohz,domain,1 nohz_full=1\n')
    failed, result = run_module(cpu_isolation_info, {'root': str(fake_root), 'expected': '1'})
    assert not failed
    assert result['isolated'] == '1'
    assert result['nohz_full'] == '1'
    assert result['housekeeping'] == '0'
    assert result['matches_expected'] is True


def test_managed_irq_only_isolation_leaves_scheduler_isolation_empty(run_module, host):
    host.write('proc/cmdline', BOOT + ' isolcpus=managed_irq,1\n')
    failed, result = run_module(cpu_isolation_info, {'root': str(host)})
    assert not failed
    assert result['isolated'] == ''
    assert result['cmdline_isolcpus'] == '1'
    assert result['cmdline_isolcpus_flags'] == ['managed_irq']


def test_custom_dropin_path_is_read(run_module, host):
    host.write('etc/default/grub.d/50-custom.cfg', dropin_text('isolcpus=3'))
    failed, result = run_module(cpu_isolation_info, {'root': str(host),
                                                     'grub_dropin': '/etc/default/grub.d/50-custom.cfg'})
    assert not failed
    assert result['configured'] == '3'
    assert result['reboot_required'] is True


def test_dropin_without_isolcpus_configures_nothing(run_module, host):
    host.write(DROPIN, dropin_text('mitigations=off'))
    failed, result = run_module(cpu_isolation_info, {'root': str(host), 'expected': ''})
    assert not failed
    assert result['dropin_present'] is True
    assert result['configured'] is None
    assert result['configured_params'] == {'mitigations': 'off'}
    assert result['reboot_required'] is False
    assert result['configured_matches_expected'] is True


def test_unparsable_dropin_fails_naming_the_file(run_module, host):
    host.write(DROPIN, dropin_text('isolcpus=bogus,1'))
    failed, result = run_module(cpu_isolation_info, {'root': str(host)})
    assert failed
    assert DROPIN in result['msg']
    assert "unknown flag 'bogus'" in result['msg']


def test_unparsable_sysfs_fails_naming_the_file(run_module, host):
    host.write('sys/devices/system/cpu/isolated', 'garbage\n')
    failed, result = run_module(cpu_isolation_info, {'root': str(host)})
    assert failed
    assert 'sys/devices/system/cpu/isolated' in result['msg']


def test_root_without_sysfs_fails_clearly(run_module, fake_root):
    failed, result = run_module(cpu_isolation_info, {'root': str(fake_root)})
    assert failed
    assert 'sys/devices/system/cpu/online' in result['msg']


def test_check_mode_returns_the_same_facts_and_changes_nothing(run_module, host):
    host.write(DROPIN, dropin_text('isolcpus=1'))
    before = sorted(str(path) for path in host.path.rglob('*'))
    _failed, normal = run_module(cpu_isolation_info, {'root': str(host), 'expected': '1'})
    _failed, checked = run_module(cpu_isolation_info, {'root': str(host), 'expected': '1'}, check_mode=True)
    normal.pop('invocation', None)
    checked.pop('invocation', None)
    assert checked == normal
    assert checked['changed'] is False
    assert sorted(str(path) for path in host.path.rglob('*')) == before


def test_reads_the_live_host(run_module):
    failed, result = run_module(cpu_isolation_info, {'grub_dropin': '/nonexistent/vps-brain.cfg'})
    assert not failed
    assert result['online_cpus']
    assert set(result['housekeeping_cpus']) <= set(result['online_cpus'])
