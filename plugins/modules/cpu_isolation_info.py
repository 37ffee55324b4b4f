#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: cpu_isolation_info
short_description: Report which CPUs are isolated now and which the GRUB drop-in isolates after a reboot
version_added: "0.1.0"
description:
  - Reads the running CPU isolation from C(/proc/cmdline) and
    C(/sys/devices/system/cpu/{online,possible,isolated,nohz_full}).
  - Reads the configured isolation from the GRUB drop-in written by the C(cpu_isolation) role
    (lines such as C(GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT isolcpus=1 nohz_full=1 rcu_nocbs=1)).
  - Compares both with an O(expected) CPU list and tells whether a reboot is needed for the
    configuration to take effect.
  - Never changes anything.
  - Every CPU set is returned twice, as a kernel CPU list string (V(0-1,3)) and as a list of
    integers (the same key with a C(_cpus) suffix).
author:
  - vps_brain developers (@marketdata)
options:
  expected:
    description:
      - The CPU list (kernel syntax, for example V(1) or V(2-3)) that should be isolated.
      - An empty string means no CPU should be isolated.
      - Every CPU in it must be online, otherwise the module fails naming the missing CPUs.
      - When omitted, RV(matches_expected) and RV(configured_matches_expected) are V(null).
    type: str
  fail_on_mismatch:
    description:
      - Fail when the running isolation (RV(isolated)) differs from O(expected).
      - The failure message says whether the GRUB drop-in already holds O(expected), in which
        case only a reboot is missing.
      - Ignored when O(expected) is not set.
    type: bool
    default: false
  grub_dropin:
    description:
      - The GRUB defaults drop-in that carries the isolation parameters.
      - Relative to O(root). A missing file means nothing is configured.
    type: path
    default: /etc/default/grub.d/90-vps-brain-isolation.cfg
  root:
    description:
      - The file system root to read C(/proc), C(/sys) and O(grub_dropin) from.
      - Only tests and chroot inspections need anything but V(/).
    type: path
    default: /
extends_documentation_fragment:
  - marketdata.vps_brain.attributes
  - marketdata.vps_brain.attributes.info
notes:
  - RV(isolated) comes from C(/sys/devices/system/cpu/isolated), which lists the CPUs isolated
    from the scheduler domains (C(isolcpus=) with the C(domain) flag or no flag). When that file
    does not exist, the C(isolcpus=) of the running command line is used instead.
  - RV(reboot_required) compares the drop-in's C(isolcpus=) with RV(isolated) and, when the
    drop-in sets C(nohz_full=), that with RV(nohz_full). Without a drop-in it is V(false).
seealso:
  - module: marketdata.vps_brain.cpu_affinity
  - module: marketdata.vps_brain.irq_affinity
'''

EXAMPLES = r'''
- name: Read the CPU isolation
  marketdata.vps_brain.cpu_isolation_info:
  register: isolation

- name: Show the housekeeping CPUs
  ansible.builtin.debug:
    msg: "Housekeeping CPUs: {{ isolation.housekeeping }}"

- name: Check that CPU 1 is isolated, failing if it is not
  marketdata.vps_brain.cpu_isolation_info:
    expected: "1"
    fail_on_mismatch: true

- name: Reboot when the drop-in asks for an isolation the kernel does not run yet
  marketdata.vps_brain.cpu_isolation_info:
    expected: "1"
  register: isolation

- name: Reboot to apply the new isolation
  ansible.builtin.reboot:
  when: isolation.reboot_required
'''

RETURN = r'''
online:
  description: The online CPUs, from C(/sys/devices/system/cpu/online).
  returned: always
  type: str
  sample: "0-1"
online_cpus:
  description: RV(online) as a list of integers.
  returned: always
  type: list
  elements: int
  sample: [0, 1]
possible:
  description: The possible CPUs, from C(/sys/devices/system/cpu/possible) (V("") when it cannot be read).
  returned: always
  type: str
  sample: "0-1"
possible_cpus:
  description: RV(possible) as a list of integers.
  returned: always
  type: list
  elements: int
  sample: [0, 1]
isolated:
  description: The CPUs isolated from the scheduler now.
  returned: always
  type: str
  sample: "1"
isolated_cpus:
  description: RV(isolated) as a list of integers.
  returned: always
  type: list
  elements: int
  sample: [1]
nohz_full:
  description: The adaptive-tick CPUs now, from C(/sys/devices/system/cpu/nohz_full) or the command line.
  returned: always
  type: str
  sample: "1"
nohz_full_cpus:
  description: RV(nohz_full) as a list of integers.
  returned: always
  type: list
  elements: int
  sample: [1]
cmdline_isolcpus:
  description: The CPUs of C(isolcpus=) on the running command line, flags stripped (V("") when absent).
  returned: always
  type: str
  sample: "1"
cmdline_isolcpus_cpus:
  description: RV(cmdline_isolcpus) as a list of integers.
  returned: always
  type: list
  elements: int
  sample: [1]
cmdline_isolcpus_flags:
  description: The flags of C(isolcpus=) on the running command line.
  returned: always
  type: list
  elements: str
  sample: [managed_irq, domain]
cmdline_irqaffinity:
  description: The C(irqaffinity=) CPU list of the running command line, V(null) when absent.
  returned: always
  type: str
  sample: "0"
housekeeping:
  description: The online CPUs that are not isolated.
  returned: always
  type: str
  sample: "0"
housekeeping_cpus:
  description: RV(housekeeping) as a list of integers.
  returned: always
  type: list
  elements: int
  sample: [0]
dropin_present:
  description: Whether O(grub_dropin) exists.
  returned: always
  type: bool
  sample: true
configured:
  description: The C(isolcpus=) CPUs the GRUB drop-in configures, V(null) when the drop-in is absent or sets none.
  returned: always
  type: str
  sample: "1"
configured_cpus:
  description: RV(configured) as a list of integers, V(null) like RV(configured).
  returned: always
  type: list
  elements: int
  sample: [1]
configured_nohz_full:
  description: The C(nohz_full=) CPUs the GRUB drop-in configures, V(null) when it sets none.
  returned: always
  type: str
  sample: "1"
configured_nohz_full_cpus:
  description: RV(configured_nohz_full) as a list of integers, V(null) like RV(configured_nohz_full).
  returned: always
  type: list
  elements: int
  sample: [1]
configured_params:
  description: All kernel parameters the drop-in adds (value V(null) for a bare flag).
  returned: always
  type: dict
  sample: {"isolcpus": "1", "nohz_full": "1", "rcu_nocbs": "1"}
expected:
  description: O(expected) in canonical form, V(null) when not given.
  returned: always
  type: str
  sample: "1"
matches_expected:
  description: Whether RV(isolated) equals O(expected); V(null) without O(expected).
  returned: always
  type: bool
  sample: true
configured_matches_expected:
  description: Whether RV(configured) equals O(expected) (a missing drop-in configures nothing); V(null) without O(expected).
  returned: always
  type: bool
  sample: true
reboot_required:
  description: Whether the drop-in configures an isolation the running kernel does not have.
  returned: always
  type: bool
  sample: false
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.marketdata.vps_brain.plugins.module_utils.cpulist import (
    cmdline_cpus,
    format_cpulist,
    grub_cmdline,
    parse_cmdline,
    parse_cpulist,
    parse_grub_dropin,
    parse_isolcpus,
)

SYS_CPU = 'sys/devices/system/cpu'


def _under(root, path):
    return os.path.join(root, path.lstrip('/'))


def _read(path):
    """Return the stripped text of a file, or None when it does not exist."""
    try:
        with open(path) as handle:
            return handle.read().strip()
    except FileNotFoundError:
        return None


def _read_cpus(module, root, name):
    """Return the CPU set of /sys/devices/system/cpu/NAME, or None when the file does not exist."""
    path = _under(root, os.path.join(SYS_CPU, name))
    try:
        text = _read(path)
    except OSError as exc:
        module.fail_json(msg='cannot read %s: %s' % (path, exc))
    if text is None:
        return None
    # A kernel booted without nohz_full= prints its unallocated mask as "(null)" (seen on
    # Debian 12's 6.1 kernel, CONFIG_NO_HZ_FULL=y): no CPU.
    if text == '(null)':
        return frozenset()
    try:
        return parse_cpulist(text)
    except ValueError as exc:
        module.fail_json(msg='cannot parse %s: %s' % (path, exc))


def _both(result, key, cpus):
    """Store a CPU set as a CPU list string under KEY and as a list of ints under KEY_cpus."""
    if cpus is None:
        result[key] = None
        result[key + '_cpus'] = None
    else:
        result[key] = format_cpulist(cpus)
        result[key + '_cpus'] = sorted(cpus)


def run_module():
    module = AnsibleModule(
        argument_spec=dict(
            expected=dict(type='str'),
            fail_on_mismatch=dict(type='bool', default=False),
            grub_dropin=dict(type='path', default='/etc/default/grub.d/90-vps-brain-isolation.cfg'),
            root=dict(type='path', default='/'),
        ),
        supports_check_mode=True,
    )
    root = module.params['root']
    result = dict(changed=False)

    # Running state.
    online = _read_cpus(module, root, 'online')
    if online is None:
        module.fail_json(msg='cannot read %s: no such file (is %s a Linux root?)'
                         % (_under(root, os.path.join(SYS_CPU, 'online')), root))
    possible = _read_cpus(module, root, 'possible')

    cmdline_path = _under(root, '/proc/cmdline')
    try:
        cmdline_text = _read(cmdline_path)
    except OSError as exc:
        module.fail_json(msg='cannot read %s: %s' % (cmdline_path, exc))
    params = parse_cmdline(cmdline_text or '')
    try:
        cmd_isolcpus, cmd_flags = parse_isolcpus(params.get('isolcpus'))
        cmd_nohz = cmdline_cpus(params, 'nohz_full')
        cmd_irqaffinity = cmdline_cpus(params, 'irqaffinity')
    except ValueError as exc:
        module.fail_json(msg='cannot parse %s: %s' % (cmdline_path, exc))

    isolated = _read_cpus(module, root, 'isolated')
    if isolated is None:
        isolated = cmd_isolcpus
    nohz_full = _read_cpus(module, root, 'nohz_full')
    if nohz_full is None:
        nohz_full = cmd_nohz or frozenset()

    _both(result, 'online', online)
    _both(result, 'possible', possible or frozenset())
    _both(result, 'isolated', isolated)
    _both(result, 'nohz_full', nohz_full)
    _both(result, 'cmdline_isolcpus', cmd_isolcpus)
    result['cmdline_isolcpus_flags'] = list(cmd_flags)
    result['cmdline_irqaffinity'] = None if cmd_irqaffinity is None else format_cpulist(cmd_irqaffinity)
    _both(result, 'housekeeping', online - isolated)

    # Configured state (GRUB drop-in).
    dropin_path = _under(root, module.params['grub_dropin'])
    try:
        dropin_text = _read(dropin_path)
    except OSError as exc:
        module.fail_json(msg='cannot read %s: %s' % (dropin_path, exc))
    configured = configured_nohz = None
    configured_params = {}
    if dropin_text is not None:
        try:
            configured_params = grub_cmdline(parse_grub_dropin(dropin_text))
            configured = cmdline_cpus(configured_params, 'isolcpus')
            configured_nohz = cmdline_cpus(configured_params, 'nohz_full')
        except ValueError as exc:
            module.fail_json(msg='cannot parse %s: %s' % (dropin_path, exc))
    result['dropin_present'] = dropin_text is not None
    result['configured_params'] = configured_params
    _both(result, 'configured', configured)
    _both(result, 'configured_nohz_full', configured_nohz)

    reboot_required = False
    if dropin_text is not None:
        if (configured or frozenset()) != isolated:
            reboot_required = True
        if configured_nohz is not None and configured_nohz != nohz_full:
            reboot_required = True
    result['reboot_required'] = reboot_required

    # Expectation.
    expected = None
    if module.params['expected'] is not None:
        try:
            expected = parse_cpulist(module.params['expected'])
        except ValueError as exc:
            module.fail_json(msg='expected: %s' % exc, **result)
        offline = expected - online
        if offline:
            module.fail_json(msg='expected: CPU %s not online (online: %s)'
                             % (format_cpulist(offline), format_cpulist(online)), **result)
    result['expected'] = None if expected is None else format_cpulist(expected)
    result['matches_expected'] = None if expected is None else isolated == expected
    result['configured_matches_expected'] = (
        None if expected is None else (configured or frozenset()) == expected)

    if module.params['fail_on_mismatch'] and expected is not None and not result['matches_expected']:
        if result['configured_matches_expected']:
            hint = 'the GRUB drop-in %s already isolates %s: reboot to apply it' % (
                module.params['grub_dropin'], result['expected'] or 'nothing')
        else:
            hint = 'the GRUB drop-in %s isolates %s' % (
                module.params['grub_dropin'],
                result['configured'] if result['configured'] is not None else 'nothing (no isolcpus=)')
        module.fail_json(msg='running CPU isolation is "%s", expected "%s"; %s'
                         % (result['isolated'], result['expected'], hint), **result)

    module.exit_json(**result)


def main():
    run_module()


if __name__ == '__main__':
    main()
