# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The package role trusts nothing the managed host says on the controller.

The host's Python version, architecture and C library name the wheelhouse the controller downloads
(roles/package/tasks/main.yml). A compromised host answers what it likes: the filter
``package_host_platform`` refuses anything but a plain value, and no controller-side shell renders a
value that came from a host (it runs roles/package/files/wheelhouse.py with argv instead).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from pathlib import Path

import pytest
import yaml

from ansible.errors import AnsibleFilterError

COLLECTION = Path(__file__).resolve().parents[2]
ROLE = COLLECTION / 'roles' / 'package'
_JINJA = re.compile(r'\{\{(.*?)\}\}|\{%(.*?)%\}', re.S)
_NAME = re.compile(r'(?<![.\w\'"])[A-Za-z_]\w*')


def probe(python='311', machine='x86_64', libc=('glibc', '2.36')):
    return json.dumps({'python': python, 'machine': machine, 'libc': list(libc)})


# ------------------------------------------------------------------------- package_host_platform

@pytest.fixture(name='f')
def _filters():
    """The filter plugin (imported per test, so the guards below run even where it is missing)."""
    from ansible_collections.marketdata.vps_brain.plugins.filter import package  # pylint: disable=import-outside-toplevel
    return package


def test_a_debian_host_names_its_wheelhouse(f):
    platform = f.package_host_platform(probe())
    assert platform['tag'] == 'cp311-x86_64-glibc2.36'
    assert (platform['pyver'], platform['arch'], platform['glibc_minor']) == ('311', 'x86_64', 36)
    assert platform['platforms'][0] == 'manylinux_2_17_x86_64'
    assert platform['platforms'][-3:] == ['manylinux_2_36_x86_64', 'manylinux2014_x86_64', 'linux_x86_64']
    assert len(platform['platforms']) == 36 - 17 + 1 + 2


@pytest.mark.parametrize('python, machine, libc', [
    ('312', 'aarch64', ('glibc', '2.39')),
    ('39', 'armv7l', ('glibc', '2.31')),
    ('313', 'ppc64le', ('glibc', '2.17')),
    ('311', 's390x', ('glibc', '2.36')),
])
def test_real_platforms_are_accepted(python, machine, libc, f):
    platform = f.package_host_platform(probe(python, machine, libc))
    assert platform['tag'] == 'cp%s-%s-glibc%s' % (python, machine, libc[1])


def test_the_probe_may_come_parsed(f):
    assert f.package_host_platform(json.loads(probe())) == f.package_host_platform(probe())


@pytest.mark.parametrize('python, machine, libc, named', [
    ('311', 'x86_64; touch /tmp/pwned', ('glibc', '2.36'), 'architecture'),
    ('311', 'x86_64 $(id)', ('glibc', '2.36'), 'architecture'),
    ('311', '`id`', ('glibc', '2.36'), 'architecture'),
    ('311', '../../etc', ('glibc', '2.36'), 'architecture'),
    ('311', '', ('glibc', '2.36'), 'architecture'),
    ('311', 'x86_64\n', ('glibc', '2.36'), 'architecture'),
    ('311', 'X' * 40, ('glibc', '2.36'), 'architecture'),
    ('3.11$(id)', 'x86_64', ('glibc', '2.36'), 'Python version'),
    ('311;id', 'x86_64', ('glibc', '2.36'), 'Python version'),
    ('311 ', 'x86_64', ('glibc', '2.36'), 'Python version'),
    ('27', 'x86_64', ('glibc', '2.36'), 'Python version'),
    ('311', 'x86_64', ('glibc', '2.36 && id'), 'C library'),
    ('311', 'x86_64', ('glibc', '2.36/../..'), 'C library'),
    ('311', 'x86_64', ('musl', '1.2.4'), 'C library'),
    ('311', 'x86_64', ('', ''), 'C library'),
])
def test_a_host_that_answers_anything_else_is_refused(python, machine, libc, named, f):
    with pytest.raises(AnsibleFilterError, match=named) as info:
        f.package_host_platform(probe(python, machine, libc))
    # The message quotes what the host said (repr: a newline or a quote shows as such).
    assert repr(machine if named == 'architecture' else python if named == 'Python version' else libc[1]) in str(info.value)


@pytest.mark.parametrize('answer', ['311 x86_64 2.36', '', 'null', '[]', '{"python": 311}',
                                    '{"python": "311", "machine": "x86_64", "libc": "glibc 2.36"}', None, 42])
def test_an_answer_that_is_not_the_probe_is_refused(answer, f):
    with pytest.raises(AnsibleFilterError, match='package_host_platform'):
        f.package_host_platform(answer)


def test_the_filter_is_registered(f):
    assert f.FilterModule().filters()['package_host_platform'] is f.package_host_platform


# ---------------------------------------------------------------- what the controller runs

def _load(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text(encoding='utf-8')) or []


def _tasks(node):
    for task in node or []:
        yield task
        for key in ('block', 'rescue', 'always'):
            yield from _tasks(task.get(key))


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _names(value) -> set[str]:
    """The variable names the Jinja expressions in VALUE read (attributes and string literals aside)."""
    names = set()
    for text in _strings(value):
        for match in _JINJA.finditer(text):
            expression = re.sub(r'"[^"]*"|\'[^\']*\'', '', match.group(1) or match.group(2) or '')
            names |= set(_NAME.findall(expression))
    return names


def _on_controller(task: dict) -> bool:
    return str(task.get('delegate_to', '')) in ('localhost', '127.0.0.1') or 'local_action' in task


def _module(task: dict):
    for key, value in task.items():
        if key.startswith('ansible.builtin.') or key in ('shell', 'command', 'raw', 'script', 'set_fact'):
            return key.rsplit('.', 1)[-1], value
    return None, None


def _with_vars(task: dict, tainted: set[str]) -> set[str]:
    """TAINTED plus the task's own vars (and loop item) that read a tainted name."""
    local = set(tainted)
    if _names(task.get('loop', task.get('with_items'))) & local:
        local.add('item')
    local |= {str(key) for key, value in (task.get('vars') or {}).items() if _names(value) & local}
    return local


def host_values(tasks: list[dict]) -> set[str]:
    """Names that hold what a host said: facts and hostvars, what a task run on a host registered,
    and every fact set from those (to a fixed point)."""
    tainted = {'hostvars', 'ansible_facts', 'ansible_local'} | {
        str(task['register']) for task in tasks if 'register' in task and not _on_controller(task)}
    while True:
        more = set(tainted)
        for task in tasks:
            module, args = _module(task)
            if module == 'set_fact' and isinstance(args, dict):
                local = _with_vars(task, more)
                more |= {str(key) for key, value in args.items() if _names(value) & local}
        if more == tainted:
            return tainted
        tainted = more


def shell_findings(tasks: list[dict]) -> list[str]:
    """Controller-side tasks whose shell command line renders a value from a host (argv is fine:
    each value is one argument and no shell parses it)."""
    tainted = host_values(tasks)
    findings = []
    for task in tasks:
        module, args = _module(task)
        if not _on_controller(task) or module not in ('shell', 'command', 'raw', 'script'):
            continue
        if isinstance(args, dict):
            if module == 'command' and 'argv' in args and not args.get('cmd'):
                continue
            line = args.get('cmd', args.get('_raw_params', ''))
        else:
            line = args
        used = sorted(_names(line) & _with_vars(task, tainted))
        if used:
            findings.append('%s: %s renders %s' % (task.get('name'), module, ', '.join(used)))
    return findings


def test_no_controller_shell_renders_a_host_value():
    findings = []
    for path in sorted((ROLE / 'tasks').glob('*.yml')):
        tasks = list(_tasks(_load(path)))
        findings += ['%s: %s' % (path.name, finding) for finding in shell_findings(tasks)]
    assert findings == [], 'host values in a controller shell:\n' + '\n'.join(findings)


def test_the_hosts_answer_is_read_only_through_the_filter():
    tasks = [task for path in sorted((ROLE / 'tasks').glob('*.yml')) for task in _tasks(_load(path))]
    probes = [task for task in tasks if _module(task)[0] == 'command' and str(task.get('register')) == '_package_host']
    assert len(probes) == 1
    uses = [text for task in tasks if task is not probes[0] for text in _strings(task) if '_package_host' in text]
    assert uses, 'nothing reads _package_host'
    for use in uses:
        for match in _JINJA.finditer(use):
            expression = match.group(1) or match.group(2) or ''
            if '_package_host' in expression:
                assert 'package_host_platform' in expression, expression


@pytest.mark.parametrize('task', [
    {'name': 'a', 'ansible.builtin.shell': 'pip download --platform {{ _package_platform.arch }}', 'delegate_to': 'localhost'},
    {'name': 'b', 'ansible.builtin.shell': {'cmd': 'echo {{ item.pyver }}'}, 'delegate_to': 'localhost',
     'loop': "{{ ansible_play_hosts | map('extract', hostvars) | map(attribute='_package_platform') }}"},
    {'name': 'c', 'ansible.builtin.command': 'pip {{ _package_host.stdout }}', 'delegate_to': 'localhost'},
])
def test_the_guard_finds_a_host_value_in_a_controller_shell(task):
    tasks = [{'name': 'probe', 'ansible.builtin.command': {'argv': ['python3']}, 'register': '_package_host'},
             {'name': 'facts', 'ansible.builtin.set_fact': {'_package_platform': '{{ _package_host.stdout }}'}},
             task]
    assert shell_findings(tasks) != []


def test_the_guard_lets_argv_and_controller_values_through():
    tasks = [{'name': 'probe', 'ansible.builtin.command': {'argv': ['python3']}, 'register': '_package_host'},
             {'name': 'facts', 'ansible.builtin.set_fact': {'_package_platform': '{{ _package_host.stdout }}'}},
             {'name': 'argv', 'ansible.builtin.command': {'argv': ['pip', '{{ _package_platform.arch }}']},
              'delegate_to': 'localhost'},
             {'name': 'hash', 'ansible.builtin.shell': {'cmd': 'cd {{ package_source_dir | quote }}'}, 'delegate_to': 'localhost'}]
    assert shell_findings(tasks) == []


# ------------------------------------------------------------------------ files/wheelhouse.py

def test_the_wheelhouse_script_passes_every_value_as_one_argument(tmp_path):
    """With a stand-in pip that records its argv: a value a shell would have run stays one argument."""
    fake = tmp_path / 'fake' / 'pip'
    fake.mkdir(parents=True)
    (fake / '__init__.py').write_text('')
    (fake / '__main__.py').write_text(
        'import json, os, sys\n'
        'dest = sys.argv[sys.argv.index("--dest") + 1]\n'
        'os.makedirs(dest, exist_ok=True)\n'
        'open(os.path.join(dest, "dep-1.0-py3-none-any.whl"), "w").write("wheel")\n'
        'open(os.path.join(dest, "vps_brain-0.1-py3-none-any.whl"), "w").write("ours")\n'
        'json.dump(sys.argv[1:], open(os.environ["ARGV_OUT"], "w"))\n')
    cache = tmp_path / 'cache'
    cache.mkdir()
    pwned = tmp_path / 'pwned'
    evil = 'manylinux_2_17_x86_64; touch %s' % pwned
    env = dict(os.environ, PYTHONPATH=str(tmp_path / 'fake'), ARGV_OUT=str(tmp_path / 'argv.json'))
    run = subprocess.run(
        [sys.executable, str(ROLE / 'files' / 'wheelhouse.py'), str(cache / 'cp311'), str(cache / 'vps_brain.whl'),
         '311$(touch %s)' % pwned, evil, 'linux_x86_64'],
        env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == 'wheelhouse made'
    argv = json.loads((tmp_path / 'argv.json').read_text())
    assert argv[:2] == ['download', '--quiet']
    assert ['--python-version', '311$(touch %s)' % pwned] == argv[argv.index('--python-version'):][:2]
    assert ['--platform', evil, '--platform', 'linux_x86_64'] == argv[argv.index('--platform'):][:4]
    assert not pwned.exists()
    listing = subprocess.run(['tar', '-tf', str(cache / 'cp311.tar')], capture_output=True, text=True, check=True)
    assert sorted(listing.stdout.split()) == ['./', './dep-1.0-py3-none-any.whl']
    # A second play finds the tar made and downloads nothing.
    (tmp_path / 'argv.json').unlink()
    again = subprocess.run(run.args, env=env, capture_output=True, text=True, check=False)
    assert (again.returncode, again.stdout.strip()) == (0, 'made by another play')
    assert not (tmp_path / 'argv.json').exists()
