# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The IRQ discovery the irq_affinity module and the boot program share, called directly."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.marketdata.vps_brain.plugins.module_utils import irq


@pytest.mark.parametrize('name, valid', [
    ('eth0', True), ('ens3', True), ('enp0s31f6', True), ('eth0.100', True), ('br-1a2b3c4d5e6f', True),
    ('_tmp0', True), ('a' * 15, True),
    ('a' * 16, False), ('', False), ('.', False), ('..', False), ('.hidden', False), ('-eth0', False),
    ('eth0:1', False), ('eth0/1', False), ('eth 0', False), ('eth0\n', False), ('eth0\t', False),
    ('eth0;reboot', False), ('$(reboot)', False), ('eth0"', False), ('eth0%i', False), ('éth0', False),
    (None, False), (0, False),
])
def test_interface_names_follow_the_strict_linux_subset(name, valid):
    assert irq.valid_interface_name(name) is valid


def test_virtio_nic_irqs_come_from_its_pci_parent_and_virtio_names(fake_root):
    fake_root.write('proc/interrupts', '           CPU0\n'
                    ' 37:  0  PCI-MSIX-0000:00:03.0  0-edge  virtio2-config\n'
                    ' 38:  5  PCI-MSIX-0000:00:03.0  1-edge  virtio2-input.0\n'
                    ' 41:  5  PCI-MSIX-0000:00:03.0  4-edge  virtio2-output.1\n'
                    ' 40:  0  PCI-MSIX-0000:00:04.0  0-edge  virtio20-config\n')
    pci = 'sys/devices/pci0000:00/0000:00:03.0'
    for number in (37, 38, 39, 40, 41):
        fake_root.write('proc/irq/%d/smp_affinity_list' % number, '0\n')
    for number in (37, 38, 39):
        fake_root.write(pci + '/msi_irqs/%d' % number, 'msix\n')
    fake_root.mkdir(pci + '/virtio2/net/ens3')
    fake_root.symlink('sys/class/net/ens3/device', '../../../devices/pci0000:00/0000:00:03.0/virtio2')
    found = irq.interface_irqs(str(fake_root), 'ens3')
    # 39 only in msi_irqs, 41 only by name; 40 is virtio20's.
    assert found.irqs == [37, 38, 39, 41]
    assert found.names == ['ens3', 'virtio2']
    assert found.missing == []


def test_irqs_without_a_proc_irq_entry_are_reported_missing(fake_root):
    fake_root.write('proc/interrupts', '           CPU0\n 24:  1  PCI-MSI 1-edge  eth0\n 25:  1  PCI-MSI 2-edge  eth0\n')
    fake_root.write('proc/irq/24/smp_affinity_list', '0\n')
    fake_root.mkdir('sys/class/net/eth0')
    found = irq.interface_irqs(str(fake_root), 'eth0')
    assert (found.irqs, found.missing) == ([24], [25])


@pytest.mark.parametrize('setup, message', [
    ('none', 'interface eth0 not found (no '),
    ('no-irqs', 'no IRQs found for interface eth0 (looked for eth0 in '),
    ('no-entry', 'no IRQs found for interface eth0 (looked for eth0 in '),
])
def test_no_irq_is_an_error_that_says_why(fake_root, setup, message):
    fake_root.write('proc/interrupts', '           CPU0\n 24:  1  PCI-MSI 1-edge  %s\n'
                    % ('eth0' if setup == 'no-entry' else 'other0'))
    if setup != 'none':
        fake_root.mkdir('sys/class/net/eth0')
    with pytest.raises(irq.IrqDiscoveryError) as info:
        irq.interface_irqs(str(fake_root), 'eth0')
    assert str(info.value).startswith(message), str(info.value)
    if setup == 'no-entry':
        assert str(info.value).endswith('; IRQs 24 have no %s/proc/irq entry)' % fake_root)


def test_an_invalid_name_is_refused_before_any_path_is_built(fake_root):
    with pytest.raises(irq.IrqDiscoveryError, match=r"^interface '\.\./\.\./etc' is not a valid interface name"):
        irq.interface_irqs(str(fake_root), '../../etc')


def test_the_role_refuses_interface_names_with_the_same_pattern():
    """One pattern: the role's preflight assert (Jinja, before any change) spells the one in irq.py."""
    tasks = Path(__file__).resolve().parents[4] / 'roles' / 'irq_affinity' / 'tasks'
    text = ''.join(path.read_text(encoding='utf-8') for path in sorted(tasks.glob('*.yml')))
    assert "regex('%s', match_type='fullmatch')" % irq.INTERFACE_NAME_PATTERN in (tasks / 'preflight.yml').read_text(encoding='utf-8')
    assert text.count("match_type='fullmatch'") == 1
