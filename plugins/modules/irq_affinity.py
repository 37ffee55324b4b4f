#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: irq_affinity
short_description: Read or set the CPU affinity of the IRQs of a network interface or of given IRQs
version_added: "0.1.0"
description:
  - Finds the IRQs of a network O(interface), or takes a list of O(irqs).
  - Reads C(/proc/irq/N/smp_affinity_list) of each (C(smp_affinity) when the list file is absent).
  - With O(cpus), writes O(cpus) to C(/proc/irq/N/smp_affinity_list) of every IRQ whose affinity
    differs. IRQs already on O(cpus) are left alone, so a second run changes nothing.
  - The kernel refuses some IRQs (C(EIO) for per-CPU and managed IRQs, for example). Those are
    listed in RV(unchangeable) with the error and do not fail the task unless O(strict=true).
  - Without O(cpus), only reads.
  - IRQ affinity is not persistent; C(irqbalance) may also move IRQs again unless it is stopped
    or told to leave them alone.
author:
  - vps_brain developers (@marketdata)
options:
  interface:
    description:
      - A network interface. Its IRQs are the lines of C(/proc/interrupts) with a name that is
        the interface name or starts with it followed by a non-alphanumeric character
        (V(eth0-TxRx-0), not V(eth01)), plus the IRQs in C(/sys/class/net/INTERFACE/device/msi_irqs/).
      - For a virtio NIC, the IRQs named after the virtio device (V(virtio2-input.0)) and the
        C(msi_irqs) of its PCI device count too.
      - The name must be 1-15 characters of V(A-Z a-z 0-9 _ . -), not starting with V(.) or V(-)
        (a strict subset of what Linux allows; V(:) marks an address label, not an interface).
        Anything else fails before a path is built.
      - The same discovery (C(plugins/module_utils/irq.py)) runs at boot in the program the
        C(irq_affinity) role installs.
      - Exactly one of O(interface) and O(irqs) is required.
    type: str
  irqs:
    description:
      - IRQ numbers. Each must exist in C(/proc/irq/).
    type: list
    elements: int
  cpus:
    description:
      - The CPU list (kernel syntax, for example V(0) or V(0,2-3)) to steer the IRQs to.
      - Every CPU must be online, otherwise the module fails naming the missing CPUs.
      - When omitted, the module only reads.
    type: str
  strict:
    description:
      - Fail when the kernel refuses the new affinity of any IRQ, instead of listing it in RV(unchangeable).
    type: bool
    default: false
  root:
    description:
      - The file system root to read C(/proc) and C(/sys) from and to write C(/proc/irq) under.
      - Only tests need anything but V(/).
    type: path
    default: /
extends_documentation_fragment:
  - marketdata.vps_brain.attributes
attributes:
  check_mode:
    support: full
    description: Reports in RV(after) and RV(changed_irqs) what would change, and writes nothing.
  diff_mode:
    support: none
    description: RV(before) and RV(after) carry the change.
seealso:
  - module: marketdata.vps_brain.cpu_isolation_info
  - module: marketdata.vps_brain.cpu_affinity
'''

EXAMPLES = r'''
- name: Steer the NIC's IRQs to the housekeeping CPU
  marketdata.vps_brain.irq_affinity:
    interface: eth0
    cpus: "0"
  register: nic_irqs

- name: Show the IRQs the kernel would not move
  ansible.builtin.debug:
    var: nic_irqs.unchangeable
  when: nic_irqs.unchangeable | length > 0

- name: Require that two given IRQs move, failing otherwise
  marketdata.vps_brain.irq_affinity:
    irqs: [38, 39]
    cpus: "0"
    strict: true

- name: Read the affinity of the NIC's IRQs
  marketdata.vps_brain.irq_affinity:
    interface: eth0
  register: nic_irqs
'''

RETURN = r'''
irqs:
  description: The IRQs acted on, sorted.
  returned: always
  type: list
  elements: int
  sample: [38, 39]
cpus:
  description: O(cpus) in canonical form, V(null) when only reading.
  returned: always
  type: str
  sample: "0"
before:
  description: Map of IRQ (string key) to its CPU list before the module ran.
  returned: always
  type: dict
  sample: {"38": "0-1", "39": "0-1"}
after:
  description: Map of IRQ (string key) to its CPU list after the module ran (in check mode, what it would be).
  returned: always
  type: dict
  sample: {"38": "0", "39": "0"}
effective:
  description: Map of IRQ (string key) to the CPUs it is actually delivered to after the module
    ran (C(effective_affinity_list)), for the IRQs whose kernel reports it.
  returned: always
  type: dict
  sample: {"38": "0", "39": "0"}
changed_irqs:
  description: The IRQs whose affinity was (in check mode, would be) changed.
  returned: always
  type: list
  elements: int
  sample: [38, 39]
unchangeable:
  description: The IRQs whose new affinity the kernel refused or did not keep, with the reason.
  returned: always
  type: list
  elements: dict
  sample: [{"irq": 40, "error": "Input/output error"}]
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.marketdata.vps_brain.plugins.module_utils.cpulist import (
    format_cpulist,
    parse_cpulist,
    parse_mask,
    parse_online_cpus,
)
from ansible_collections.marketdata.vps_brain.plugins.module_utils.irq import (
    IrqDiscoveryError,
    interface_irqs as discover_interface_irqs,
    irq_dir,
)


def interface_irqs(module, root):
    try:
        found = discover_interface_irqs(root, module.params['interface'])
    except IrqDiscoveryError as exc:
        module.fail_json(msg=str(exc))
    if found.missing:
        module.warn('IRQs %s of %s have no %s entry and are skipped'
                    % (', '.join(str(irq) for irq in found.missing), module.params['interface'],
                       os.path.join(root, 'proc/irq')))
    return found.irqs


def read_affinity(module, root, irq):
    base = irq_dir(root, irq)
    try:
        with open(os.path.join(base, 'smp_affinity_list')) as handle:
            return parse_cpulist(handle.read())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        module.fail_json(msg='cannot read the affinity of IRQ %d: %s' % (irq, exc))
    try:
        with open(os.path.join(base, 'smp_affinity')) as handle:
            return parse_mask(handle.read())
    except (OSError, ValueError) as exc:
        module.fail_json(msg='cannot read the affinity of IRQ %d: %s' % (irq, exc))


def read_effective(root, irq):
    try:
        with open(os.path.join(irq_dir(root, irq), 'effective_affinity_list')) as handle:
            return format_cpulist(parse_cpulist(handle.read()))
    except (OSError, ValueError):
        return None


def run_module():
    module = AnsibleModule(
        argument_spec=dict(
            interface=dict(type='str'),
            irqs=dict(type='list', elements='int'),
            cpus=dict(type='str'),
            strict=dict(type='bool', default=False),
            root=dict(type='path', default='/'),
        ),
        mutually_exclusive=[('interface', 'irqs')],
        required_one_of=[('interface', 'irqs')],
        supports_check_mode=True,
    )
    root = module.params['root']

    wanted = None
    if module.params['cpus'] is not None:
        try:
            wanted = parse_online_cpus(module.params['cpus'], root, 'an IRQ')
        except ValueError as exc:
            module.fail_json(msg=str(exc))

    if module.params['interface'] is not None:
        irqs = interface_irqs(module, root)
    else:
        irqs = sorted(set(module.params['irqs']))
        if not irqs:
            module.fail_json(msg='irqs: the list is empty')
        missing = [irq for irq in irqs if irq < 0 or not os.path.isdir(irq_dir(root, irq))]
        if missing:
            module.fail_json(msg='IRQ %s does not exist (no %s)' % (
                ', '.join(str(irq) for irq in missing), irq_dir(root, missing[0])))

    before = {irq: read_affinity(module, root, irq) for irq in irqs}
    after = dict(before)
    changed_irqs = []
    unchangeable = []
    target = None if wanted is None else format_cpulist(wanted)

    for irq in irqs:
        if wanted is None or before[irq] == wanted:
            continue
        if module.check_mode:
            after[irq] = wanted
            changed_irqs.append(irq)
            continue
        path = os.path.join(irq_dir(root, irq), 'smp_affinity_list')
        try:
            with open(path, 'w') as handle:
                handle.write(target + '\n')
        except OSError as exc:
            unchangeable.append(dict(irq=irq, error=exc.strerror or str(exc)))
            after[irq] = read_affinity(module, root, irq)
            continue
        now = read_affinity(module, root, irq)
        after[irq] = now
        if now != before[irq]:
            changed_irqs.append(irq)
        if now != wanted:
            unchangeable.append(dict(irq=irq, error='the kernel kept %s' % format_cpulist(now)))

    effective = {}
    for irq in irqs:
        value = read_effective(root, irq)
        if value is not None:
            effective[str(irq)] = value

    result = dict(
        changed=bool(changed_irqs),
        irqs=irqs,
        cpus=target,
        before={str(irq): format_cpulist(cpus) for irq, cpus in before.items()},
        after={str(irq): format_cpulist(cpus) for irq, cpus in after.items()},
        effective=effective,
        changed_irqs=changed_irqs,
        unchangeable=unchangeable,
    )
    if unchangeable and module.params['strict']:
        module.fail_json(msg='the kernel refused the affinity %s for IRQ %s' % (
            target, ', '.join('%d (%s)' % (item['irq'], item['error']) for item in unchangeable)), **result)
    module.exit_json(**result)


def main():
    run_module()


if __name__ == '__main__':
    main()
