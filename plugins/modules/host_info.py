#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: host_info
short_description: Report what kind of host this is, for the roles that must know what they may change
version_added: "0.1.0"
description:
  - Tells whether the host is a container (which boots no kernel of its own, has no IRQs, and
    cannot change kernel sysctls, GRUB, swap or C(/sys)), and of which kind.
  - Reads the open-files limits that PID 1 (systemd) runs with, which bound what a unit's
    C(LimitNOFILE=) can get.
  - Reads the effective capabilities of the module's own process, as names.
  - Tells whether C(/sys) and C(/proc/sys) are mounted read-only.
  - The one place the roles and C(validate.yml) learn these facts; it never changes anything and
    needs no gathered facts.
author:
  - vps_brain developers (@marketdata)
options:
  root:
    description:
      - The file system root to read C(/proc), C(/run) and C(/) markers from.
      - Only tests and chroot inspections need anything but V(/).
    type: path
    default: /
extends_documentation_fragment:
  - marketdata.vps_brain.attributes
  - marketdata.vps_brain.attributes.info
notes:
  - Container detection takes the first match, in the order systemd uses for the same question;
    C(/run/systemd/container) (written by systemd as PID 1 when it finds itself in a container),
    the C(container=) variable of PID 1's environment, C(/run/.containerenv) (podman),
    C(/.dockerenv) (docker).
'''

EXAMPLES = r'''
- name: Learn what this host can change
  marketdata.vps_brain.host_info:
  register: _host

- name: Skip what a container cannot do
  ansible.builtin.debug:
    msg: "a {{ _host.container_type }} container boots no kernel of its own"
  when: _host.container
'''

RETURN = r'''
container:
  description: Whether the host is a container.
  returned: always
  type: bool
  sample: true
container_type:
  description: The container manager (V(podman), V(docker), V(lxc), V(systemd-nspawn), ...), empty on a machine or VM.
  returned: always
  type: str
  sample: podman
pid1_nofile_soft:
  description: PID 1's soft open-files limit; V(null) when unlimited.
  returned: always
  type: int
  sample: 1024
pid1_nofile_hard:
  description: PID 1's hard open-files limit, the most a unit's C(LimitNOFILE=) can get; V(null) when unlimited.
  returned: always
  type: int
  sample: 524288
capabilities:
  description: The effective capabilities of the module's process, lower-case names sorted by number (C(cap_42) for a number this module has no name for).
  returned: always
  type: list
  elements: str
  sample: [cap_chown, cap_net_admin]
pid1_cpus:
  description:
    - The CPUs PID 1 may run on (C(Cpus_allowed_list) of C(/proc/1/status)), sorted; V(null) where it is not readable.
    - After a boot with C(isolcpus=), the housekeeping CPUs only. systemd's C(ConditionCPUs=) counts these
      (Debian's irqbalance unit has C(ConditionCPUs=>1)).
  returned: always
  type: list
  elements: int
  sample: [0]
sys_read_only:
  description: Whether C(/sys) is mounted read-only.
  returned: always
  type: bool
proc_sys_read_only:
  description: Whether C(/proc/sys) is mounted read-only.
  returned: always
  type: bool
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.marketdata.vps_brain.plugins.module_utils.cpulist import parse_cpulist

# linux/capability.h, by number.
CAPABILITIES = (
    'chown', 'dac_override', 'dac_read_search', 'fowner', 'fsetid', 'kill', 'setgid', 'setuid',
    'setpcap', 'linux_immutable', 'net_bind_service', 'net_broadcast', 'net_admin', 'net_raw',
    'ipc_lock', 'ipc_owner', 'sys_module', 'sys_rawio', 'sys_chroot', 'sys_ptrace', 'sys_pacct',
    'sys_admin', 'sys_boot', 'sys_nice', 'sys_resource', 'sys_time', 'sys_tty_config', 'mknod',
    'lease', 'audit_write', 'audit_control', 'setfcap', 'mac_override', 'mac_admin', 'syslog',
    'wake_alarm', 'block_suspend', 'audit_read', 'perfmon', 'bpf', 'checkpoint_restore',
)


def _under(root, path):
    return os.path.join(root, path.lstrip('/'))


def _read(root, path, binary=False):
    try:
        with open(_under(root, path), 'rb' if binary else 'r') as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def container_type(root):
    """The container manager's name, or '' on a machine or VM."""
    marker = _read(root, '/run/systemd/container')
    if marker and marker.strip():
        return marker.strip()
    environ = _read(root, '/proc/1/environ', binary=True)
    for item in (environ or b'').split(b'\0'):
        if item.startswith(b'container=') and item[len(b'container='):]:
            return item[len(b'container='):].decode('utf-8', 'replace')
    if os.path.exists(_under(root, '/run/.containerenv')):
        return 'podman'
    if os.path.exists(_under(root, '/.dockerenv')):
        return 'docker'
    return ''


def nofile_limits(text):
    """(soft, hard) of 'Max open files' in a /proc/PID/limits text; None for unlimited."""
    for line in (text or '').splitlines():
        if line.startswith('Max open files'):
            fields = line[len('Max open files'):].split()
            if len(fields) >= 2:
                return tuple(None if value == 'unlimited' else int(value) for value in fields[:2])
    raise ValueError('no "Max open files" line')


def capability_names(status):
    """Effective capabilities (CapEff) of a /proc/PID/status text, as names."""
    for line in (status or '').splitlines():
        if line.startswith('CapEff:'):
            mask = int(line.split(':', 1)[1].strip(), 16)
            return ['cap_' + (CAPABILITIES[bit] if bit < len(CAPABILITIES) else str(bit))
                    for bit in range(mask.bit_length()) if mask >> bit & 1]
    raise ValueError('no CapEff line')


def allowed_cpus(status):
    """Cpus_allowed_list of a /proc/PID/status text as a sorted list; None without that line."""
    for line in (status or '').splitlines():
        if line.startswith('Cpus_allowed_list:'):
            return sorted(parse_cpulist(line.split(':', 1)[1].strip()))
    return None


def read_only_mounts(mountinfo):
    """Mount points of a /proc/PID/mountinfo text whose mount options include ro."""
    result = set()
    for line in (mountinfo or '').splitlines():
        fields = line.split()
        if len(fields) >= 6 and 'ro' in fields[5].split(','):
            result.add(fields[4])
    return result


def run_module():
    module = AnsibleModule(argument_spec=dict(root=dict(type='path', default='/')),
                           supports_check_mode=True)
    root = module.params['root']
    try:
        soft, hard = nofile_limits(_read(root, '/proc/1/limits'))
    except ValueError as exc:
        module.fail_json(msg='cannot read the open-files limit of PID 1 from %s: %s'
                         % (_under(root, '/proc/1/limits'), exc))
    try:
        capabilities = capability_names(_read(root, '/proc/self/status'))
    except ValueError as exc:
        module.fail_json(msg='cannot read the capabilities from %s: %s'
                         % (_under(root, '/proc/self/status'), exc))
    read_only = read_only_mounts(_read(root, '/proc/self/mountinfo'))
    kind = container_type(root)
    module.exit_json(
        changed=False,
        container=bool(kind),
        container_type=kind,
        pid1_nofile_soft=soft,
        pid1_nofile_hard=hard,
        pid1_cpus=allowed_cpus(_read(root, '/proc/1/status')),
        capabilities=capabilities,
        sys_read_only='/sys' in read_only,
        proc_sys_read_only='/proc/sys' in read_only,
    )


def main():
    run_module()


if __name__ == '__main__':
    main()
