# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Find the IRQs of a network interface in ``/proc`` and ``/sys``.

The one implementation of IRQ discovery: the ``irq_affinity`` module imports it, and the
``irq_affinity`` role installs this very file as ``/usr/local/lib/vps-brain-irq-affinity/irq.py``
for its boot-time program (``roles/irq_affinity/files/vps-brain-irq-affinity``), so what is pinned
at boot is what the module pins. Standard library only, no Ansible imports, for that reason.

An interface's IRQs are:

* the lines of ``/proc/interrupts`` whose device name is the interface name or starts with it
  followed by a non-alphanumeric character (``eth0-TxRx-0``, not ``eth01``);
* the MSI vectors of its device, ``/sys/class/net/IFACE/device/msi_irqs/``;
* for a virtio NIC, whose ``device`` is the virtio device (``virtio2``), not a PCI function: the
  lines named after the virtio device (``virtio2-input.0``) and the ``msi_irqs`` of its parent
  PCI device, which owns the vectors.

Interface names are checked against :data:`INTERFACE_NAME_PATTERN` before any path is built.
"""

from __future__ import annotations

import os
import re

from collections.abc import Iterable

__all__ = [
    'INTERFACE_NAME_HELP',
    'INTERFACE_NAME_PATTERN',
    'InterfaceIrqs',
    'IrqDiscoveryError',
    'interface_irqs',
    'interrupts_by_name',
    'irq_dir',
    'msi_irqs',
    'name_matches',
    'valid_interface_name',
]

# Linux (net/core/dev.c, dev_valid_name) takes 1 to IFNAMSIZ - 1 = 15 bytes other than '/', ':'
# and whitespace, except "." and "..". ':' is an IPv4 alias label (eth0:1), never a device. This
# is the strict subset real NICs use: letters, digits, '_', '.', '-', not starting with '.' or '-'
# (no option look-alike on a command line, no path component of its own).
INTERFACE_NAME_PATTERN = '[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}'
INTERFACE_NAME_HELP = '1-15 characters of A-Z a-z 0-9 _ . -, not starting with . or -'
_INTERFACE_NAME_RE = re.compile(INTERFACE_NAME_PATTERN)


class IrqDiscoveryError(Exception):
    """No IRQ could be found for an interface; the message says why, for an operator."""


class InterfaceIrqs:
    """The IRQs found for an interface.

    ``irqs``: sorted IRQ numbers that have a ``/proc/irq/N`` entry; never empty.
    ``missing``: sorted IRQ numbers listed somewhere but without ``/proc/irq/N`` (skipped).
    ``names``: the device names looked for in ``/proc/interrupts``.
    """

    def __init__(self, irqs: list[int], missing: list[int], names: list[str]) -> None:
        self.irqs = irqs
        self.missing = missing
        self.names = names


def valid_interface_name(name: object) -> bool:
    """Whether NAME is an interface name of the strict form above."""
    return isinstance(name, str) and _INTERFACE_NAME_RE.fullmatch(name) is not None


def name_matches(token: str, name: str) -> bool:
    """Whether an IRQ name token belongs to NAME: equal, or NAME then a non-alphanumeric character."""
    token = token.rstrip(',')
    if not token.startswith(name):
        return False
    return len(token) == len(name) or not token[len(name)].isalnum()


def interrupts_by_name(text: str, names: Iterable[str]) -> set[int]:
    """Return the IRQ numbers of /proc/interrupts lines whose device name belongs to one of NAMES."""
    names = list(names)
    lines = text.splitlines()
    if not lines:
        return set()
    n_cpus = len(lines[0].split())
    found = set()
    for line in lines[1:]:
        head, sep, rest = line.partition(':')
        head = head.strip()
        if not sep or not head.isdigit():
            continue
        # After the per-CPU counters come the chip, the hardware IRQ and the device name(s).
        tokens = rest.split()[n_cpus:]
        if any(name_matches(token, name) for token in tokens for name in names):
            found.add(int(head))
    return found


def msi_irqs(path: str) -> set[int]:
    """The IRQ numbers listed in an ``msi_irqs`` directory (none when it does not exist)."""
    try:
        return {int(name) for name in os.listdir(path) if name.isdigit()}
    except OSError:
        return set()


def irq_dir(root: str, irq: int) -> str:
    return os.path.join(root, 'proc/irq', str(irq))


def interface_irqs(root: str, interface: str) -> InterfaceIrqs:
    """Find the IRQs of INTERFACE under the file system ROOT (``/`` on a host).

    Raise :class:`IrqDiscoveryError` when the name is not an interface name, when
    ``/proc/interrupts`` cannot be read, when the interface does not exist, or when it has no IRQ
    with a ``/proc/irq`` entry.
    """
    if not valid_interface_name(interface):
        raise IrqDiscoveryError('interface %r is not a valid interface name (%s)' % (interface, INTERFACE_NAME_HELP))
    net_dir = os.path.join(root, 'sys/class/net', interface)
    names = {interface}
    irqs = set()
    device = os.path.join(net_dir, 'device')
    if os.path.exists(device):
        real = os.path.realpath(device)
        irqs |= msi_irqs(os.path.join(real, 'msi_irqs'))
        if os.path.basename(real).startswith('virtio'):
            # virtio-net: IRQs are named after the virtio device and belong to its PCI parent.
            names.add(os.path.basename(real))
            irqs |= msi_irqs(os.path.join(os.path.dirname(real), 'msi_irqs'))
    interrupts_path = os.path.join(root, 'proc/interrupts')
    try:
        with open(interrupts_path) as handle:
            irqs |= interrupts_by_name(handle.read(), names)
    except OSError as exc:
        raise IrqDiscoveryError('cannot read %s: %s' % (interrupts_path, exc)) from exc
    if not os.path.isdir(net_dir) and not irqs:
        raise IrqDiscoveryError('interface %s not found (no %s)' % (interface, net_dir))
    missing = sorted(irq for irq in irqs if not os.path.isdir(irq_dir(root, irq)))
    found = sorted(irqs - set(missing))
    if not found:
        raise IrqDiscoveryError(
            'no IRQs found for interface %s (looked for %s in %s and in %s/msi_irqs%s)' % (
                interface, ', '.join(sorted(names)), interrupts_path, device,
                '; IRQs %s have no %s entry' % (', '.join(str(irq) for irq in missing),
                                                os.path.join(root, 'proc/irq')) if missing else ''))
    return InterfaceIrqs(found, missing, sorted(names))
