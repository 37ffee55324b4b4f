# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os
import threading

import pytest

from ansible_collections.marketdata.vps_brain.plugins.modules import cpu_affinity


def add_process(root, pid, comm, ppid=1, threads=None, cpus='0-3', cgroup='0::/user.slice',
                exe=None, cmdline=None):
    """Fabricate ROOT/proc/PID with stat, comm, cgroup, exe, cmdline and one status per thread."""
    base = 'proc/%d/' % pid
    root.write(base + 'stat', '%d (%s) S %d %d %d 0 -1 4194560 0 0 0 0\n' % (pid, comm, ppid, pid, pid))
    root.write(base + 'comm', comm[:15] + '\n')
    root.write(base + 'cgroup', cgroup + '\n')
    root.write(base + 'cmdline', (cmdline if cmdline is not None else '/usr/bin/' + comm) + '\0')
    root.write(base + 'status', 'Name:\t%s\nPid:\t%d\nCpus_allowed_list:\t%s\n' % (comm[:15], pid, cpus))
    if exe:
        root.symlink(base + 'exe', exe)
    thread_cpus = threads or {pid: cpus}
    for tid, tcpus in thread_cpus.items():
        root.write(base + 'task/%d/status' % tid,
                   'Name:\t%s\nPid:\t%d\nCpus_allowed:\tf\nCpus_allowed_list:\t%s\nMems_allowed_list:\t0\n'
                   % (comm[:15], tid, tcpus))


@pytest.fixture
def host(fake_root):
    """A 4-CPU host running systemd, a redis-server with 3 threads and a collector with a child."""
    fake_root.cpus(online='0-3')
    add_process(fake_root, 1, 'systemd', ppid=0, cgroup='0::/init.scope')
    add_process(fake_root, 812, 'redis-server', threads={812: '0-3', 815: '0-3', 816: '1'},
                cgroup='0::/system.slice/redis-server.service', exe='/usr/bin/redis-server',
                cmdline='/usr/bin/redis-server 127.0.0.1:6379')
    add_process(fake_root, 900, 'vps-brain', cgroup='0::/system.slice/vps-brain-collector.service',
                cmdline='/opt/vps-brain/bin/python\0/opt/vps-brain/bin/vps-brain\0collect')
    add_process(fake_root, 901, 'zstd-worker', ppid=900, threads={901: '0-3', 902: '0-3'},
                cgroup='0::/system.slice/vps-brain-collector.service')
    add_process(fake_root, 950, 'a-very-long-process-name', cgroup='0::/user.slice')
    return fake_root


def test_reads_every_thread_of_a_pid(run_module, host):
    failed, result = run_module(cpu_affinity, {'root': str(host), 'pid': 812})
    assert not failed, result.get('msg')
    assert result['changed'] is False
    assert result['pids'] == [812]
    assert result['processes'] == [{'pid': 812, 'comm': 'redis-server'}]
    assert result['cpus'] is None
    assert result['before']['tasks'] == {'812': {'812': '0-3', '815': '0-3', '816': '1'}}
    assert result['before']['summary'] == {'0-3': 2, '1': 1}
    assert result['after'] == result['before']
    assert result['changed_tasks'] == []


def test_children_are_included_unless_disabled(run_module, host):
    _failed, result = run_module(cpu_affinity, {'root': str(host), 'pid': 900})
    assert result['pids'] == [900, 901]
    assert result['before']['tasks']['901'] == {'901': '0-3', '902': '0-3'}
    _failed, result = run_module(cpu_affinity, {'root': str(host), 'pid': 900, 'include_children': False})
    assert result['pids'] == [900]


def test_unit_is_found_by_cgroup_with_service_suffix_added(run_module, host):
    failed, result = run_module(cpu_affinity, {'root': str(host), 'unit': 'vps-brain-collector'})
    assert not failed, result.get('msg')
    assert result['pids'] == [900, 901]
    _failed, result = run_module(cpu_affinity, {'root': str(host), 'unit': 'redis-server.service'})
    assert result['pids'] == [812]


def test_unit_without_process_fails_naming_it(run_module, host):
    failed, result = run_module(cpu_affinity, {'root': str(host), 'unit': 'nginx'})
    assert failed
    assert result['msg'] == 'unit nginx.service has no running process'


@pytest.mark.parametrize('name, pids', [
    ('redis-server', [812]),                 # comm, exe and argv[0] with arguments
    ('vps-brain', [900, 901]),               # comm; its child comes along
    ('python', [900, 901]),                  # argv[0] base name
    ('a-very-long-process-name', [950]),     # comm is truncated to 15 characters
])
def test_name_matches_comm_exe_or_argv0(run_module, host, name, pids):
    failed, result = run_module(cpu_affinity, {'root': str(host), 'name': name})
    assert not failed, result.get('msg')
    assert result['pids'] == pids


def test_name_without_process_fails_naming_it(run_module, host):
    failed, result = run_module(cpu_affinity, {'root': str(host), 'name': 'nginx'})
    assert failed
    assert result['msg'] == 'no process named nginx'


def test_missing_pid_fails_naming_it(run_module, host):
    failed, result = run_module(cpu_affinity, {'root': str(host), 'pid': 4242})
    assert failed
    assert result['msg'] == 'no process with pid 4242'


def test_one_selector_is_required_and_only_one(run_module, host):
    failed, result = run_module(cpu_affinity, {'root': str(host)})
    assert failed
    assert 'one of the following is required: unit, pid, name' in result['msg']
    failed, result = run_module(cpu_affinity, {'root': str(host), 'pid': 812, 'name': 'redis-server'})
    assert failed
    assert 'mutually exclusive' in result['msg']


def test_check_mode_reports_the_change_and_changes_nothing(run_module, host):
    before_status = host.read('proc/812/task/815/status')
    failed, result = run_module(cpu_affinity, {'root': str(host), 'pid': 812, 'cpus': '1'}, check_mode=True)
    assert not failed, result.get('msg')
    assert result['changed'] is True
    assert result['cpus'] == '1'
    assert result['changed_tasks'] == ['812/812', '812/815']
    assert result['after']['tasks'] == {'812': {'812': '1', '815': '1', '816': '1'}}
    assert result['after']['summary'] == {'1': 3}
    assert result['before']['summary'] == {'0-3': 2, '1': 1}
    assert host.read('proc/812/task/815/status') == before_status


def test_setting_under_another_root_is_refused(run_module, host):
    failed, result = run_module(cpu_affinity, {'root': str(host), 'pid': 812, 'cpus': '1'})
    assert failed
    assert 'setting CPU affinity needs root=/' in result['msg']
    assert result['before']['summary'] == {'0-3': 2, '1': 1}


def test_nothing_to_set_under_another_root_is_fine(run_module, host):
    failed, result = run_module(cpu_affinity, {'root': str(host), 'pid': 901, 'cpus': '0-3'})
    assert not failed
    assert result['changed'] is False


def test_cpu_not_online_fails_naming_it(run_module, host):
    failed, result = run_module(cpu_affinity, {'root': str(host), 'pid': 812, 'cpus': '1,4-5'})
    assert failed
    assert result['msg'] == 'cpus: CPU 4-5 not online (online: 0-3)'


@pytest.mark.parametrize('cpus, fragment', [('1-', "'1-'"), ('x', "'x'"), ('', 'names no CPU')])
def test_bad_cpu_list_fails_clearly(run_module, host, cpus, fragment):
    failed, result = run_module(cpu_affinity, {'root': str(host), 'pid': 812, 'cpus': cpus})
    assert failed
    assert result['msg'].startswith('cpus: ')
    assert fragment in result['msg']


def test_process_without_task_directory_uses_its_status(run_module, host):
    host.write('proc/77/stat', '77 (old) S 1 77 77 0\n')
    host.write('proc/77/status', 'Name:\told\nCpus_allowed_list:\t2\n')
    failed, result = run_module(cpu_affinity, {'root': str(host), 'pid': 77})
    assert not failed, result.get('msg')
    assert result['before']['tasks'] == {'77': {'77': '2'}}


def test_comm_with_spaces_and_parentheses_keeps_the_right_parent(run_module, host):
    add_process(host, 960, 'odd) (name', ppid=901)
    _failed, result = run_module(cpu_affinity, {'root': str(host), 'pid': 900})
    assert result['pids'] == [900, 901, 960]


def test_unit_main_pid_asks_systemctl(monkeypatch):
    calls = []

    class FakeModule:
        def get_bin_path(self, name, required=False):
            return '/usr/bin/' + name

        def run_command(self, args):
            calls.append(args)
            return 0, '1234\n', ''

        def fail_json(self, **kwargs):
            raise AssertionError(kwargs)

    assert cpu_affinity.unit_main_pid(FakeModule(), 'redis-server.service') == 1234
    assert calls == [['/usr/bin/systemctl', 'show', '-p', 'MainPID', '--value', 'redis-server.service']]


@pytest.mark.parametrize('unit, name', [
    ('redis-server', 'redis-server.service'),
    ('redis-server.service', 'redis-server.service'),
    ('redis@6379', 'redis@6379.service'),
    ('session-1.scope', 'session-1.scope'),
    ('vps.brain', 'vps.brain.service'),
])
def test_unit_names_get_a_service_suffix(unit, name):
    assert cpu_affinity.unit_name(unit) == name


# Live tests: the module's real code path, on this test process's own threads.

@pytest.fixture
def own_threads():
    """Start a helper thread so the test process has two; restore every thread's affinity after."""
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip('needs two CPUs to move threads between')
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait, name='affinity-helper', daemon=True)
    helper.start()
    pid = os.getpid()
    before = {int(tid): os.sched_getaffinity(int(tid)) for tid in os.listdir('/proc/%d/task' % pid)}
    yield pid, helper.native_id, sorted(allowed)
    for tid, cpus in before.items():
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass
    stop.set()
    helper.join()


def test_sets_every_thread_of_a_live_process(run_module, own_threads):
    pid, helper_tid, allowed = own_threads
    target = {allowed[0]}
    failed, result = run_module(cpu_affinity, {'pid': pid, 'cpus': str(allowed[0]), 'include_children': False})
    assert not failed, result.get('msg')
    assert result['changed'] is True
    assert '%d/%d' % (pid, helper_tid) in result['changed_tasks']
    assert '%d/%d' % (pid, pid) in result['changed_tasks']
    assert os.sched_getaffinity(pid) == target
    assert os.sched_getaffinity(helper_tid) == target
    assert set(result['after']['summary']) == {str(allowed[0])}
    # A second run finds nothing to do.
    failed, result = run_module(cpu_affinity, {'pid': pid, 'cpus': str(allowed[0]), 'include_children': False})
    assert not failed
    assert result['changed'] is False
    assert result['changed_tasks'] == []


def test_check_mode_leaves_a_live_process_alone(run_module, own_threads):
    pid, helper_tid, allowed = own_threads
    failed, result = run_module(cpu_affinity, {'pid': pid, 'cpus': str(allowed[-1]), 'include_children': False},
                                check_mode=True)
    assert not failed, result.get('msg')
    assert result['changed'] is True
    assert os.sched_getaffinity(helper_tid) == set(allowed)
    assert os.sched_getaffinity(pid) == set(allowed)


def test_name_never_matches_the_module_itself(run_module):
    own = os.path.basename(os.readlink('/proc/self/exe'))
    failed, result = run_module(cpu_affinity, {'name': own})
    assert failed or os.getpid() not in result['pids']
