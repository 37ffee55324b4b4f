#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: cpu_affinity
short_description: Read or pin the CPU affinity of every thread of a process, a systemd unit or processes by name
version_added: "0.1.0"
description:
  - Finds the processes of a target, given as a systemd O(unit), a O(pid) or a process O(name),
    and by default their child processes.
  - Reads the CPU affinity of every thread (C(Cpus_allowed_list) in C(/proc/PID/task/TID/status)).
  - With O(cpus), sets the affinity of every thread that differs, with C(sched_setaffinity).
    Threads already on O(cpus) are left alone, so a second run changes nothing.
  - Without O(cpus), only reads.
  - Affinity is not persistent. A service restart starts new processes on the unit's own
    C(CPUAffinity=); use this module for a running process, and the unit file for a lasting pin.
author:
  - vps_brain developers (@marketdata)
options:
  unit:
    description:
      - A systemd unit. Its processes are its C(MainPID) (from C(systemctl show -p MainPID --value))
        and every process whose cgroup is the unit's (from C(/proc/PID/cgroup)).
      - A name without a unit type suffix gets C(.service).
      - With O(root) other than V(/), C(systemctl) is not asked and only the cgroups in O(root) count.
      - Exactly one of O(unit), O(pid) and O(name) is required.
    type: str
  pid:
    description:
      - A process ID.
    type: int
  name:
    description:
      - A process name, compared with the process's C(comm) (which the kernel truncates to
        15 characters), the base name of its executable and the base name of its first argument.
      - Matches every process of that name; when O(root) is V(/), the module's own process never
        matches, not even as a child of a matching process.
    type: str
  include_children:
    description:
      - Also act on every descendant of the selected processes (found through the parent PID in
        C(/proc/PID/stat)).
    type: bool
    default: true
  cpus:
    description:
      - The CPU list (kernel syntax, for example V(1) or V(0,2-3)) to pin every thread to.
      - Every CPU must be online, otherwise the module fails naming the missing CPUs.
      - When omitted, the module only reads.
    type: str
  root:
    description:
      - The file system root to read C(/proc) and C(/sys) from.
      - Setting an affinity is a system call on a live thread, so it only works with V(/).
        With any other root the module reads, and reports in check mode what it would change,
        but fails rather than pretend to set anything.
      - Only tests need anything but V(/).
    type: path
    default: /
extends_documentation_fragment:
  - marketdata.vps_brain.attributes
attributes:
  check_mode:
    support: full
    description: Reports in RV(after) and RV(changed_tasks) what would change, and changes nothing.
  diff_mode:
    support: none
    description: RV(before) and RV(after) carry the change.
notes:
  - A thread that exits between reading and setting is listed in RV(vanished) and is not an error.
  - The kernel refuses some threads (per-CPU kernel threads, or CPUs outside the process's
    cpuset); the module then fails naming the thread and the error, after setting the others.
seealso:
  - module: marketdata.vps_brain.cpu_isolation_info
  - module: marketdata.vps_brain.irq_affinity
'''

EXAMPLES = r'''
- name: Pin the collector and all its threads to the isolated CPU
  marketdata.vps_brain.cpu_affinity:
    unit: vps-brain-collector
    cpus: "1"

- name: Pin every redis-server process to CPU 1
  marketdata.vps_brain.cpu_affinity:
    name: redis-server
    cpus: "1"

- name: Read the affinity of a process, without its children
  marketdata.vps_brain.cpu_affinity:
    pid: 1234
    include_children: false
  register: affinity

- name: Show it
  ansible.builtin.debug:
    var: affinity.before.summary
'''

RETURN = r'''
pids:
  description: The processes acted on, sorted.
  returned: always
  type: list
  elements: int
  sample: [812, 830]
processes:
  description: The processes acted on, with their C(comm).
  returned: always
  type: list
  elements: dict
  sample: [{"pid": 812, "comm": "redis-server"}]
cpus:
  description: O(cpus) in canonical form, V(null) when only reading.
  returned: always
  type: str
  sample: "1"
before:
  description: The affinity of every thread before the module ran.
  returned: always
  type: dict
  contains:
    tasks:
      description: Map of PID to a map of thread ID to CPU list (keys are strings).
      type: dict
      sample: {"812": {"812": "0-1", "815": "0-1"}}
    summary:
      description: Map of CPU list to the number of threads that have it.
      type: dict
      sample: {"0-1": 2}
after:
  description: The affinity of every thread after the module ran (in check mode, what it would be).
  returned: always
  type: dict
  contains:
    tasks:
      description: Map of PID to a map of thread ID to CPU list (keys are strings).
      type: dict
      sample: {"812": {"812": "1", "815": "1"}}
    summary:
      description: Map of CPU list to the number of threads that have it.
      type: dict
      sample: {"1": 2}
changed_tasks:
  description: The threads whose affinity was (in check mode, would be) changed, as C(PID/TID).
  returned: always
  type: list
  elements: str
  sample: ["812/812", "812/815"]
vanished:
  description: Threads that exited before their affinity could be set, as C(PID/TID).
  returned: always
  type: list
  elements: str
  sample: []
'''

import errno
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.marketdata.vps_brain.plugins.module_utils.cpulist import (
    format_cpulist,
    parse_cpulist,
    parse_online_cpus,
)

UNIT_TYPES = frozenset((
    'service', 'socket', 'device', 'mount', 'automount', 'swap', 'target', 'path', 'timer',
    'slice', 'scope',
))


class ProcTree:
    """Read processes and threads from ROOT/proc."""

    def __init__(self, root):
        self.root = root
        self.proc = os.path.join(root, 'proc')

    def path(self, *parts):
        return os.path.join(self.proc, *[str(part) for part in parts])

    def pids(self):
        try:
            names = os.listdir(self.proc)
        except OSError:
            return []
        return sorted(int(name) for name in names if name.isdigit())

    def read(self, *parts):
        try:
            with open(self.path(*parts)) as handle:
                return handle.read()
        except (OSError, UnicodeDecodeError):
            return None

    def exists(self, pid):
        return os.path.isdir(self.path(pid))

    def ppid(self, pid):
        stat = self.read(pid, 'stat')
        if not stat:
            return None
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat.rpartition(')')[2].split()
        try:
            return int(fields[1])
        except (IndexError, ValueError):
            return None

    def comm(self, pid):
        comm = self.read(pid, 'comm')
        if comm is not None:
            return comm.rstrip('\n')
        stat = self.read(pid, 'stat')
        if stat and '(' in stat:
            return stat[stat.index('(') + 1:stat.rindex(')')]
        return None

    def names(self, pid):
        """Return the names a process answers to: comm, exe base name, argv[0] base name."""
        names = set()
        comm = self.comm(pid)
        if comm:
            names.add(comm)
        try:
            exe = os.readlink(self.path(pid, 'exe'))
        except OSError:
            exe = None
        if exe:
            names.add(os.path.basename(exe.replace(' (deleted)', '')))
        cmdline = self.read(pid, 'cmdline')
        if cmdline:
            argv0 = cmdline.split('\0', 1)[0]
            if argv0:
                # Some daemons rewrite argv[0] as "/usr/bin/redis-server 127.0.0.1:6379".
                names.add(os.path.basename(argv0.split(' ', 1)[0]))
        return names

    def cgroups(self, pid):
        text = self.read(pid, 'cgroup') or ''
        paths = []
        for line in text.splitlines():
            parts = line.split(':', 2)
            if len(parts) == 3:
                paths.append(parts[2])
        return paths

    def tids(self, pid):
        try:
            names = os.listdir(self.path(pid, 'task'))
        except OSError:
            return [pid] if self.exists(pid) else []
        return sorted(int(name) for name in names if name.isdigit())

    def affinity(self, pid, tid):
        """Return the CPU set a thread may run on, or None when the thread is gone."""
        status = self.read(pid, 'task', tid, 'status')
        if status is None and tid == pid:
            status = self.read(pid, 'status')
        if status is None:
            return None
        for line in status.splitlines():
            key, _sep, value = line.partition(':')
            if key == 'Cpus_allowed_list':
                return parse_cpulist(value)
        raise ValueError('no Cpus_allowed_list in %s' % self.path(pid, 'task', tid, 'status'))


def unit_name(unit):
    base, dot, suffix = unit.rpartition('.')
    if dot and suffix in UNIT_TYPES:
        return unit
    return unit + '.service'


def unit_main_pid(module, unit):
    """Return the MainPID systemd reports for UNIT (0 when it runs no process)."""
    systemctl = module.get_bin_path('systemctl', required=True)
    rc, out, err = module.run_command([systemctl, 'show', '-p', 'MainPID', '--value', unit])
    if rc != 0:
        module.fail_json(msg='systemctl show %s failed (rc=%d): %s' % (unit, rc, (err or out).strip()))
    try:
        return int(out.strip() or 0)
    except ValueError:
        module.fail_json(msg='systemctl show -p MainPID %s returned %r, not a PID' % (unit, out.strip()))


def descendants(tree, seeds):
    """Return SEEDS and every process below them."""
    children = {}
    for pid in tree.pids():
        ppid = tree.ppid(pid)
        if ppid is not None:
            children.setdefault(ppid, []).append(pid)
    found = set(seeds)
    todo = list(seeds)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def select_pids(module, tree, live):
    params = module.params
    if params['pid'] is not None:
        pid = params['pid']
        if pid <= 0 or not tree.exists(pid):
            module.fail_json(msg='no process with pid %d' % pid)
        seeds = {pid}
        what = 'pid %d' % pid
    elif params['name'] is not None:
        name = params['name']
        own = os.getpid() if live else None
        wanted = {name, name[:15]}
        seeds = {pid for pid in tree.pids() if pid != own and tree.names(pid) & wanted}
        if not seeds:
            module.fail_json(msg='no process named %s' % name)
        what = 'name %s' % name
    else:
        unit = unit_name(params['unit'])
        seeds = set()
        if live:
            main_pid = unit_main_pid(module, unit)
            if main_pid > 0 and tree.exists(main_pid):
                seeds.add(main_pid)
        for pid in tree.pids():
            if any(unit in path.split('/') for path in tree.cgroups(pid)):
                seeds.add(pid)
        if not seeds:
            module.fail_json(msg='unit %s has no running process' % unit)
        what = 'unit %s' % unit
    if params['include_children']:
        found = descendants(tree, seeds)
        if live and os.getpid() not in seeds:
            # A name such as python3 or sh can match an ancestor of this module: leave the module out.
            found.discard(os.getpid())
        seeds = found
    return sorted(seeds), what


def summary(tasks):
    counts = {}
    for threads in tasks.values():
        for cpus in threads.values():
            counts[cpus] = counts.get(cpus, 0) + 1
    return counts


def run_module():
    module = AnsibleModule(
        argument_spec=dict(
            unit=dict(type='str'),
            pid=dict(type='int'),
            name=dict(type='str'),
            include_children=dict(type='bool', default=True),
            cpus=dict(type='str'),
            root=dict(type='path', default='/'),
        ),
        mutually_exclusive=[('unit', 'pid', 'name')],
        required_one_of=[('unit', 'pid', 'name')],
        supports_check_mode=True,
    )
    root = module.params['root']
    live = os.path.realpath(root) == '/'

    wanted = None
    if module.params['cpus'] is not None:
        try:
            wanted = parse_online_cpus(module.params['cpus'], root, 'a thread')
        except ValueError as exc:
            module.fail_json(msg=str(exc))

    tree = ProcTree(root)
    pids, what = select_pids(module, tree, live)

    before = {}
    for pid in pids:
        threads = {}
        for tid in tree.tids(pid):
            try:
                cpus = tree.affinity(pid, tid)
            except ValueError as exc:
                module.fail_json(msg='cannot read the affinity of %d/%d: %s' % (pid, tid, exc))
            if cpus is not None:
                threads[tid] = cpus
        if threads:
            before[pid] = threads
    if not before:
        module.fail_json(msg='%s has no running process' % what)

    result = dict(
        changed=False,
        pids=sorted(before),
        processes=[dict(pid=pid, comm=tree.comm(pid)) for pid in sorted(before)],
        cpus=None if wanted is None else format_cpulist(wanted),
        changed_tasks=[],
        vanished=[],
    )
    after = {pid: dict(threads) for pid, threads in before.items()}
    todo = [] if wanted is None else [
        (pid, tid) for pid, threads in sorted(before.items()) for tid, cpus in sorted(threads.items()) if cpus != wanted]

    def report():
        result['before'] = dict(
            tasks={str(pid): {str(tid): format_cpulist(cpus) for tid, cpus in threads.items()}
                   for pid, threads in before.items()},
            summary=summary({pid: {tid: format_cpulist(cpus) for tid, cpus in threads.items()}
                             for pid, threads in before.items()}))
        result['after'] = dict(
            tasks={str(pid): {str(tid): format_cpulist(cpus) for tid, cpus in threads.items()}
                   for pid, threads in after.items()},
            summary=summary({pid: {tid: format_cpulist(cpus) for tid, cpus in threads.items()}
                             for pid, threads in after.items()}))
        return result

    if todo and not module.check_mode and not live:
        module.fail_json(msg='setting CPU affinity needs root=/; with root=%s the module only reads '
                             '(use check mode to see what would change)' % root, **report())

    for pid, tid in todo:
        key = '%d/%d' % (pid, tid)
        if module.check_mode:
            after[pid][tid] = wanted
            result['changed_tasks'].append(key)
            continue
        try:
            os.sched_setaffinity(tid, wanted)
            now = frozenset(os.sched_getaffinity(tid))
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                del after[pid][tid]
                result['vanished'].append(key)
                continue
            result['changed'] = bool(result['changed_tasks'])
            module.fail_json(msg='cannot set the affinity of thread %s (%s) to %s: %s'
                                 % (key, tree.comm(pid), format_cpulist(wanted), exc.strerror or exc),
                             **report())
        after[pid][tid] = now
        result['changed_tasks'].append(key)

    result['changed'] = bool(result['changed_tasks'])
    module.exit_json(**report())


def main():
    run_module()


if __name__ == '__main__':
    main()
