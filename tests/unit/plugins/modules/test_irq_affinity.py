# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import builtins
import errno
import io
import importlib.machinery
import importlib.util
import sys

from pathlib import Path

import pytest

from ansible_collections.marketdata.vps_brain.plugins.module_utils import irq
from ansible_collections.marketdata.vps_brain.plugins.modules import irq_affinity

INTERRUPTS = '''\
           CPU0       CPU1       CPU2       CPU3
  0:         18          0          0          0   IO-APIC   2-edge      timer
 24:       1000          0          0          0  PCI-MSI 49152-edge      eth0-TxRx-0
 25:          0       1000          0          0  PCI-MSI 49153-edge      eth0-TxRx-1
 26:          2          0          0          0  PCI-MSI 49154-edge      eth0
 27:          5          0          0          0  PCI-MSI 51200-edge      eth01-TxRx-0
 37:          0          0          0          0  PCI-MSIX-0000:00:03.0   0-edge      virtio2-config
 38:          0       8538          0          0  PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0
 39:       6547          0          0          0  PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0
 40:          0          0          0          0  PCI-MSIX-0000:00:04.0   0-edge      virtio20-config
NMI:          0          0          0          0   Non-maskable interrupts
LOC:      12345      12345      12345      12345   Local timer interrupts
ERR:          0
'''

PCI_ETH0 = 'sys/devices/pci0000:00/0000:00:02.0'
PCI_VIRTIO = 'sys/devices/pci0000:00/0000:00:03.0'


def add_irq(root, irq, cpus='0-3', effective=None):
    root.write('proc/irq/%d/smp_affinity_list' % irq, cpus + '\n')
    if effective is not None:
        root.write('proc/irq/%d/effective_affinity_list' % irq, effective + '\n')


@pytest.fixture
def host(fake_root):
    """A 4-CPU host with an MSI NIC eth0 (IRQs 24-26, 28 only in msi_irqs), eth01, and a virtio NIC ens3."""
    fake_root.cpus(online='0-3')
    fake_root.write('proc/interrupts', INTERRUPTS)
    for irq in (0, 24, 25, 26, 27, 28, 37, 38, 39, 40):
        add_irq(fake_root, irq)
    for irq in (24, 25, 26, 28):
        fake_root.write(PCI_ETH0 + '/msi_irqs/%d' % irq, 'msix\n')
    fake_root.mkdir(PCI_ETH0 + '/net/eth0')
    fake_root.symlink('sys/class/net/eth0/device', '../../../devices/pci0000:00/0000:00:02.0')
    fake_root.mkdir('sys/class/net/eth01')
    for irq in (37, 38, 39):
        fake_root.write(PCI_VIRTIO + '/msi_irqs/%d' % irq, 'msix\n')
    fake_root.mkdir(PCI_VIRTIO + '/virtio2/net/ens3')
    fake_root.symlink('sys/class/net/ens3/device', '../../../devices/pci0000:00/0000:00:03.0/virtio2')
    fake_root.mkdir('sys/class/net/lo')
    return fake_root


def test_finds_interface_irqs_by_name_and_msi_but_not_prefix_lookalikes(run_module, host):
    failed, result = run_module(irq_affinity, {'root': str(host), 'interface': 'eth0'})
    assert not failed, result.get('msg')
    assert result['irqs'] == [24, 25, 26, 28]
    assert result['changed'] is False
    assert result['cpus'] is None
    assert result['before'] == {'24': '0-3', '25': '0-3', '26': '0-3', '28': '0-3'}
    assert result['after'] == result['before']


def test_finds_virtio_nic_irqs_through_its_virtio_device(run_module, host):
    failed, result = run_module(irq_affinity, {'root': str(host), 'interface': 'ens3'})
    assert not failed, result.get('msg')
    assert result['irqs'] == [37, 38, 39]


def test_finds_irqs_from_proc_interrupts_alone(run_module, host):
    failed, result = run_module(irq_affinity, {'root': str(host), 'interface': 'eth01'})
    assert not failed, result.get('msg')
    assert result['irqs'] == [27]


def test_sets_affinity_by_writing_smp_affinity_list(run_module, host):
    failed, result = run_module(irq_affinity, {'root': str(host), 'interface': 'eth0', 'cpus': '0'})
    assert not failed, result.get('msg')
    assert result['changed'] is True
    assert result['cpus'] == '0'
    assert result['changed_irqs'] == [24, 25, 26, 28]
    assert result['after'] == {'24': '0', '25': '0', '26': '0', '28': '0'}
    assert result['unchangeable'] == []
    for irq in (24, 25, 26, 28):
        assert host.read('proc/irq/%d/smp_affinity_list' % irq) == '0\n'
    assert host.read('proc/irq/27/smp_affinity_list') == '0-3\n'


def test_second_run_changes_nothing(run_module, host):
    run_module(irq_affinity, {'root': str(host), 'irqs': [24, 25], 'cpus': '0'})
    failed, result = run_module(irq_affinity, {'root': str(host), 'irqs': [24, 25], 'cpus': '0'})
    assert not failed
    assert result['changed'] is False
    assert result['changed_irqs'] == []


def test_only_differing_irqs_are_written(run_module, host):
    add_irq(host, 25, '1')
    _failed, result = run_module(irq_affinity, {'root': str(host), 'irqs': [25, 24], 'cpus': '1'})
    assert result['irqs'] == [24, 25]
    assert result['changed_irqs'] == [24]


def test_check_mode_writes_nothing(run_module, host):
    failed, result = run_module(irq_affinity, {'root': str(host), 'irqs': [38, 39], 'cpus': '0-1'}, check_mode=True)
    assert not failed, result.get('msg')
    assert result['changed'] is True
    assert result['changed_irqs'] == [38, 39]
    assert result['after'] == {'38': '0-1', '39': '0-1'}
    assert host.read('proc/irq/38/smp_affinity_list') == '0-3\n'
    assert host.read('proc/irq/39/smp_affinity_list') == '0-3\n'


def refuse_writes_to(monkeypatch, refused_irq, err=errno.EIO, swallow=False):
    """Make the module's open() fail (or silently drop the write) for one IRQ's smp_affinity_list."""
    real_open = builtins.open

    def fake_open(path, mode='r', *args, **kwargs):
        if 'w' in mode and str(path).endswith('/irq/%d/smp_affinity_list' % refused_irq):
            if swallow:
                return io.StringIO()
            raise OSError(err, 'Input/output error' if err == errno.EIO else 'Invalid argument')
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(irq_affinity, 'open', fake_open, raising=False)


def test_kernel_refusal_is_reported_not_fatal(run_module, host, monkeypatch):
    refuse_writes_to(monkeypatch, 25)
    failed, result = run_module(irq_affinity, {'root': str(host), 'irqs': [24, 25], 'cpus': '0'})
    assert not failed, result.get('msg')
    assert result['changed'] is True
    assert result['changed_irqs'] == [24]
    assert result['unchangeable'] == [{'irq': 25, 'error': 'Input/output error'}]
    assert result['after'] == {'24': '0', '25': '0-3'}


def test_kernel_refusal_fails_when_strict(run_module, host, monkeypatch):
    refuse_writes_to(monkeypatch, 25)
    failed, result = run_module(irq_affinity, {'root': str(host), 'irqs': [24, 25], 'cpus': '0', 'strict': True})
    assert failed
    assert result['msg'] == 'the kernel refused the affinity 0 for IRQ 25 (Input/output error)'
    assert result['unchangeable'] == [{'irq': 25, 'error': 'Input/output error'}]
    # What did change is still reported.
    assert result['changed_irqs'] == [24]


def test_affinity_the_kernel_did_not_keep_is_unchangeable(run_module, host, monkeypatch):
    refuse_writes_to(monkeypatch, 24, swallow=True)
    failed, result = run_module(irq_affinity, {'root': str(host), 'irqs': [24], 'cpus': '2'})
    assert not failed
    assert result['changed'] is False
    assert result['unchangeable'] == [{'irq': 24, 'error': 'the kernel kept 0-3'}]


def test_reads_the_hex_mask_when_there_is_no_list_file(run_module, host):
    (host.path / 'proc/irq/40/smp_affinity_list').unlink()
    host.write('proc/irq/40/smp_affinity', '00000000,00000005\n')
    failed, result = run_module(irq_affinity, {'root': str(host), 'irqs': [40]})
    assert not failed, result.get('msg')
    assert result['before'] == {'40': '0,2'}


def test_reports_effective_affinity(run_module, host):
    add_irq(host, 38, '0-3', effective='1')
    _failed, result = run_module(irq_affinity, {'root': str(host), 'irqs': [38, 39]})
    assert result['effective'] == {'38': '1'}


def test_missing_irq_fails_naming_it(run_module, host):
    failed, result = run_module(irq_affinity, {'root': str(host), 'irqs': [24, 99], 'cpus': '0'})
    assert failed
    assert result['msg'].startswith('IRQ 99 does not exist')
    assert host.read('proc/irq/24/smp_affinity_list') == '0-3\n'


def test_unknown_interface_fails_naming_it(run_module, host):
    failed, result = run_module(irq_affinity, {'root': str(host), 'interface': 'wg0'})
    assert failed
    assert result['msg'].startswith('interface wg0 not found')


def test_interface_without_irqs_fails_clearly(run_module, host):
    failed, result = run_module(irq_affinity, {'root': str(host), 'interface': 'lo'})
    assert failed
    assert result['msg'].startswith('no IRQs found for interface lo')


def test_cpu_not_online_fails_naming_it(run_module, host):
    failed, result = run_module(irq_affinity, {'root': str(host), 'irqs': [24], 'cpus': '0,8'})
    assert failed
    assert result['msg'] == 'cpus: CPU 8 not online (online: 0-3)'


@pytest.mark.parametrize('cpus, fragment', [('0-', "'0-'"), ('ff', "'ff'"), (' ', 'names no CPU')])
def test_bad_cpu_list_fails_clearly(run_module, host, cpus, fragment):
    failed, result = run_module(irq_affinity, {'root': str(host), 'irqs': [24], 'cpus': cpus})
    assert failed
    assert result['msg'].startswith('cpus: ')
    assert fragment in result['msg']


def test_interface_and_irqs_are_exclusive(run_module, host):
    failed, result = run_module(irq_affinity, {'root': str(host), 'irqs': [24], 'interface': 'eth0'})
    assert failed
    assert 'mutually exclusive' in result['msg']


def test_irqs_must_be_integers(run_module, host):
    failed, result = run_module(irq_affinity, {'root': str(host), 'irqs': ['twenty']})
    assert failed
    assert 'irqs' in result['msg']


@pytest.mark.parametrize('token, name, matches', [
    ('eth0', 'eth0', True),
    ('eth0-TxRx-0', 'eth0', True),
    ('eth0,', 'eth0', True),
    ('eth01-TxRx-0', 'eth0', False),
    ('veth0', 'eth0', False),
    ('virtio2-input.0', 'virtio2', True),
    ('virtio20-config', 'virtio2', False),
])
def test_irq_names_match_on_a_word_boundary(token, name, matches):
    assert irq.name_matches(token, name) is matches


# The interface name reaches a root unit and paths under /sys: only a strict subset of what Linux
# allows (dev_valid_name: 1-15 bytes, no '/', ':' or whitespace, not '.' or '..') is accepted.
@pytest.mark.parametrize('interface', [
    'eth0;reboot', '$(reboot)', 'eth0 x', '../eth0', 'eth0/1', 'eth0:1', '.', '..', '-eth0',
    'a' * 16, '', 'eth0\n',
])
def test_module_refuses_an_invalid_interface_name(run_module, host, interface):
    failed, result = run_module(irq_affinity, {'root': str(host), 'interface': interface})
    assert failed
    assert result['msg'].startswith('interface %r is not a valid interface name' % interface), result['msg']


@pytest.mark.parametrize('interface', ['eth0.100', 'br-1a2b3c4d5e6f', 'enp0s31f6', 'wg_0', 'a' * 15])
def test_module_accepts_valid_interface_names(run_module, host, interface):
    _failed, result = run_module(irq_affinity, {'root': str(host), 'interface': interface})
    # Not on this fabricated host, but refused as missing, not as malformed.
    assert result['msg'].startswith('interface %s not found' % interface), result['msg']


# The boot-time program (roles/irq_affinity/files/vps-brain-irq-affinity) on the same trees. On a
# host it imports the copy of plugins/module_utils/irq.py the role installs as ``irq``; here
# ``irq`` is the module_utils the module imports.
BOOT_PROGRAM = Path(__file__).resolve().parents[4] / 'roles/irq_affinity/files/vps-brain-irq-affinity'


@pytest.fixture
def boot(monkeypatch, capsys):
    """Return run(root, interface, cpus) -> (exit status, stderr) of the boot program's main()."""
    monkeypatch.setattr(sys, 'path', list(sys.path))
    monkeypatch.setitem(sys.modules, 'irq', irq)
    loader = importlib.machinery.SourceFileLoader('vps_brain_irq_affinity_boot', str(BOOT_PROGRAM))
    program = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(program)
    assert program.irq is irq

    def run(root, interface, cpus):
        capsys.readouterr()
        try:
            status = program.main(['--interface', interface, '--cpus', cpus, '--root', str(root)])
        except SystemExit as exc:  # argparse refusing the arguments
            status = exc.code
        return status, capsys.readouterr().err

    run.program = program
    return run


def affinities(root, irqs):
    return {irq: root.read('proc/irq/%d/smp_affinity_list' % irq).strip() for irq in irqs}


def test_boot_pins_virtio_nic_irqs_through_its_pci_device(boot, host):
    status, stderr = boot(host, 'ens3', '0')
    assert status == 0, stderr
    # 37-39: virtio2's config, input and output vectors; 40 belongs to virtio20, another device.
    assert affinities(host, (37, 38, 39, 40)) == {37: '0', 38: '0', 39: '0', 40: '0-3'}


def test_boot_pins_msi_nic_irqs_by_name_and_msi_irqs(boot, host):
    status, stderr = boot(host, 'eth0', '1')
    assert status == 0, stderr
    assert affinities(host, (24, 25, 26, 27, 28)) == {24: '1', 25: '1', 26: '1', 27: '0-3', 28: '1'}


@pytest.mark.parametrize('interface, reason', [
    ('lo', 'no IRQs found for interface lo (looked for lo in '),
    ('wg0', 'interface wg0 not found (no '),
])
def test_boot_fails_loudly_when_it_finds_no_irq(boot, host, interface, reason):
    status, stderr = boot(host, interface, '0')
    assert status == 3
    assert stderr.startswith('vps-brain-irq-affinity: ' + reason), stderr
    assert stderr.rstrip().endswith(': nothing pinned'), stderr


def test_boot_refuses_an_invalid_interface_name(boot, host):
    status, stderr = boot(host, 'eth0;reboot', '0')
    assert status != 0
    assert "'eth0;reboot' is not a valid interface name" in stderr, stderr


@pytest.mark.parametrize('interface', ['eth0', 'eth01', 'ens3'])
def test_boot_pins_exactly_the_irqs_the_module_finds(run_module, boot, host, interface):
    _failed, result = run_module(irq_affinity, {'root': str(host), 'interface': interface})
    status, stderr = boot(host, interface, '2')
    assert status == 0, stderr
    every = (0, 24, 25, 26, 27, 28, 37, 38, 39, 40)
    assert [n for n, cpus in affinities(host, every).items() if cpus == '2'] == result['irqs']


def test_boot_reports_irqs_the_kernel_refuses(boot, host, monkeypatch):
    refuse_writes_to(monkeypatch, 25)
    monkeypatch.setattr(boot.program, 'open', irq_affinity.open, raising=False)
    status, stderr = boot(host, 'eth0', '0')
    assert status == 1
    assert 'the kernel refused affinity 0 for IRQ 25 (Input/output error)' in stderr
    assert affinities(host, (24, 25, 26, 28)) == {24: '0', 25: '0-3', 26: '0', 28: '0'}
