# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""No secret on a command line: every local user reads /proc/<pid>/cmdline.

Read from the collection's own files (every YAML file under playbooks/ and roles/, every other text
file under roles/, scripts/*.sh), four guards:

* redis-cli (and redis-benchmark) get no password as an argument: ``-a``, ``--pass``,
  ``--user U --pass P``, ``-u redis://user:pass@host``;
* no command line (shell, command, raw, script; a free-form string, ``cmd`` or ``argv``) templates a
  secret variable (``*password*``, ``*secret*``, ``*token*``, ``*private_key*``): ``shell`` runs
  ``/bin/sh -c '<the rendered text>'``, so ``REDISCLI_AUTH={{ pw }} redis-cli`` shows it as well;
* no ``environment:`` carries a secret: Ansible prefixes it to the command line of the ``/bin/sh -c``
  that starts the module (``REDISCLI_AUTH=... python .../AnsiballZ_command.py``, see
  ``ShellBase.env_prefix``), for the whole run of the task;
* a task that hands a secret to a command (on stdin, the way that stays off every command line)
  has ``no_log: true``.

The one exception is named below with its reason; each detector is also shown to catch what it
is meant to catch, so a guard cannot pass by finding nothing.
"""

from __future__ import annotations

import re
import shlex

from pathlib import Path

import pytest
import yaml

COLLECTION = Path(__file__).resolve().parents[2]

_TOOL = re.compile(r'(?<![\w-])(redis-cli|redis-benchmark)(?![\w-])')
_JINJA = re.compile(r'\{\{(.*?)\}\}|\{%(.*?)%\}', re.S)
_SECRET = re.compile(r'\b\w*(password|passwd|secret|token|private_key)\w*\b', re.I)
# Where one shell command ends (the Jinja expressions are replaced before this is applied).
_END = re.compile(r'\|\|?|;|&&?|\n|\)|`')
_URL_PASSWORD = re.compile(r'rediss?://[^\s/@:]*:[^\s/@]+@')
# The modules that start a command line, and the task keys that are not module arguments.
_COMMAND_MODULES = {'shell', 'command', 'raw', 'script', 'expect'}
_TASK_KEYWORDS = {
    'name', 'when', 'tags', 'register', 'vars', 'loop', 'loop_control', 'with_items', 'until', 'retries',
    'delay', 'changed_when', 'failed_when', 'become', 'become_user', 'delegate_to', 'run_once', 'check_mode',
    'no_log', 'notify', 'listen', 'environment', 'args', 'ignore_errors', 'block', 'rescue', 'always',
    'any_errors_fatal', 'throttle', 'diff', 'timeout', 'local_action', 'delegate_facts', 'module_defaults',
}

# (file, task name): (the tool, why it may put a secret on a command line).
EXCEPTIONS = {
    ('playbooks/tasks/validate_benchmark.yml', 'Run redis-benchmark SET and GET'): (
        'redis-benchmark', 'it takes a password only as -a or -u (it does not read REDISCLI_AUTH); opt-in, '
        'and the bench ACL user may only SET/GET/UNLINK vpsb:bench:* keys'),
}


class _Loader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
    """SafeLoader that reads Ansible's tags (!unsafe, !vault) as plain values."""


def _any_tag(loader, _suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)


_Loader.add_multi_constructor('!', _any_tag)


def _rel(path: Path) -> str:
    return path.relative_to(COLLECTION).as_posix()


def yaml_files() -> list[Path]:
    return sorted(p for top in ('playbooks', 'roles') for p in (COLLECTION / top).rglob('*')
                  if p.suffix in ('.yml', '.yaml') and p.is_file())


def other_text_files() -> list[Path]:
    files = [p for p in (COLLECTION / 'roles').rglob('*') if p.is_file() and p.suffix not in ('.yml', '.yaml')]
    files += (COLLECTION / 'scripts').glob('*.sh')
    texts = []
    for path in sorted(files):
        try:
            path.read_text(encoding='utf-8')
        except UnicodeDecodeError:
            continue
        texts.append(path)
    return texts


def load(path: Path) -> list:
    return [doc for doc in yaml.load_all(path.read_text(encoding='utf-8'), Loader=_Loader) if doc is not None]


def strings(node):
    """Every string in a YAML document, and every list of strings (an argv)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        if node and all(isinstance(item, (str, int, float)) for item in node):
            yield [str(item) for item in node]
        for item in node:
            yield from strings(item)


def aliases(docs) -> set[str]:
    """Variables whose value is a redis-cli or redis-benchmark command line (``_redis_cli: redis-cli ...``)."""
    found = set()

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str) and _TOOL.match(value.strip()):
                    found.add(str(key))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for doc in docs:
        walk(doc)
    return found


# ------------------------------------------------------------------------ redis-cli command lines

def _tokens(segment: str) -> list[str]:
    try:
        return shlex.split(segment)
    except ValueError:
        return segment.split()


def invocations(text, names=frozenset()) -> list[list[str]]:
    """The argument lists of the redis-cli/redis-benchmark calls in TEXT: a shell string (Jinja
    rendered to placeholders, a ``{{ name }}`` of NAMES as the command itself), a Jinja list literal
    (``{{ ['redis-cli', '-a', pw] }}``) or an argv list."""
    if isinstance(text, list):
        return [text] if text and _TOOL.search(Path(text[0]).name) else []
    calls = []
    for match in _JINJA.finditer(text):
        expression = match.group(1) or match.group(2) or ''
        for literal in re.finditer(r'''['"](redis-cli|redis-benchmark)['"]''', expression):
            rest = expression[literal.start():].split(']', 1)[0]
            calls.append([item.strip().strip('\'"') for item in rest.split(',') if item.strip()])

    def placeholder(match):
        expression = (match.group(1) or match.group(2) or '').strip()
        return ' redis-cli ' if expression in names else ' JINJA '

    shell = _JINJA.sub(placeholder, text.replace('\\\n', ' '))
    for match in _TOOL.finditer(shell):
        calls.append(_tokens(_END.split(shell[match.start():], 1)[0]))
    return calls


def password_arguments(argv: list[str]) -> list[str]:
    """The arguments of one call that put a password on its command line."""
    bad = []
    for index, arg in enumerate(argv[1:], 1):
        following = argv[index + 1] if index + 1 < len(argv) else ''
        if arg in ('-a', '--pass'):
            bad.append('%s %s' % (arg, following))
        elif arg.startswith('--pass=') or (arg.startswith('-a') and not arg.startswith('--')):
            bad.append(arg)
        elif _URL_PASSWORD.search(arg):
            bad.append(arg)
    return bad


def redis_password_findings() -> tuple[list[str], int]:
    findings, seen = [], 0
    sources = [(path, list(strings(load(path))), aliases(load(path))) for path in yaml_files()]
    sources += [(path, [path.read_text(encoding='utf-8')], set()) for path in other_text_files()]
    for path, texts, names in sources:
        for text in texts:
            for argv in invocations(text, frozenset(names)):
                seen += 1
                for bad in password_arguments(argv):
                    findings.append('%s: %s ... %s' % (_rel(path), argv[0], bad))
    return findings, seen


# ---------------------------------------------------------------------------------------- tasks

def tasks(node, no_log=False):
    """(task, no_log in force) for every task, block and play in a YAML document."""
    if isinstance(node, list):
        for item in node:
            yield from tasks(item, no_log)
    elif isinstance(node, dict):
        no_log = no_log or str(node.get('no_log', '')).lower() in ('true', 'yes')
        yield node, no_log
        for key in ('tasks', 'pre_tasks', 'post_tasks', 'handlers', 'block', 'rescue', 'always'):
            if isinstance(node.get(key), list):
                yield from tasks(node[key], no_log)


def module_of(task: dict) -> tuple[str, object] | None:
    for key, value in task.items():
        if key not in _TASK_KEYWORDS and not key.startswith('with_'):
            return key.rsplit('.', 1)[-1], value
    return None


def command_lines(task: dict) -> list[str]:
    """The templates a command module renders into a command line (free form, cmd, argv)."""
    module = module_of(task)
    if module is None or module[0] not in _COMMAND_MODULES:
        return []
    args = module[1]
    if isinstance(args, str):
        return [args]
    lines = []
    for source in (args, task.get('args')):
        if isinstance(source, dict):
            for key in ('cmd', 'argv', '_raw_params'):
                value = source.get(key)
                lines += [str(v) for v in value] if isinstance(value, list) else [str(value)] if value else []
    return lines


def secrets_in(text: object) -> list[str]:
    names = []
    for match in _JINJA.finditer(str(text)):
        names += [m.group(0) for m in _SECRET.finditer(match.group(1) or match.group(2) or '')]
    return names


def module_arguments(task: dict) -> str:
    module = module_of(task)
    return '%r %r' % (module[1] if module else '', task.get('args', ''))


def task_findings(check) -> list[str]:
    findings = []
    for path in yaml_files():
        for doc in load(path):
            for task, no_log in tasks(doc):
                name = str(task.get('name', '(unnamed)'))
                if (_rel(path), name) in EXCEPTIONS:
                    continue
                findings += ['%s: %s: %s' % (_rel(path), name, what) for what in check(task, no_log)]
    return findings


def check_command_line(task, _no_log):
    return ['templates %s into its command line' % ', '.join(sorted(set(secrets_in(line))))
            for line in command_lines(task) if secrets_in(line)]


def check_environment(task, _no_log):
    environment = task.get('environment')
    if not environment:
        return []
    found = secrets_in(environment)
    if isinstance(environment, dict):
        found += [key for key, value in environment.items() if _SECRET.search(str(key)) or str(key).endswith('_AUTH')]
    return ['environment: %s (Ansible puts it on the module\'s sh -c command line)' % ', '.join(sorted(set(found)))] if found else []


def check_no_log(task, no_log):
    module = module_of(task)
    if no_log or module is None or module[0] not in _COMMAND_MODULES:
        return []
    found = secrets_in(module_arguments(task)) + secrets_in(task.get('environment', ''))
    return ['touches %s without no_log: true' % ', '.join(sorted(set(found)))] if found else []


# ------------------------------------------------------------------------------------ the guards

def test_redis_cli_gets_no_password_on_its_command_line():
    findings, seen = redis_password_findings()
    # The playbooks do call redis-cli: a scan that finds no call at all proves nothing.
    assert seen >= 5, 'found only %d redis-cli/redis-benchmark calls: is the scan reading the files?' % seen
    allowed = {'%s: %s ' % (rel, tool) for (rel, _name), (tool, _why) in EXCEPTIONS.items()}
    unexpected = [f for f in findings if not any(f.startswith(prefix) for prefix in allowed)]
    assert unexpected == [], 'password on a redis-cli command line:\n' + '\n'.join(unexpected)


def test_no_command_line_templates_a_secret():
    findings = task_findings(check_command_line)
    assert findings == [], 'secret rendered into a command line:\n' + '\n'.join(findings)


def test_no_environment_carries_a_secret():
    findings = task_findings(check_environment)
    assert findings == [], 'secret in environment: (on the sh -c command line):\n' + '\n'.join(findings)


def test_tasks_that_hand_a_secret_to_a_command_hide_their_output():
    findings = task_findings(check_no_log)
    assert findings == [], 'no_log missing:\n' + '\n'.join(findings)


def test_the_exceptions_still_exist():
    for rel, name in EXCEPTIONS:
        names = [str(task.get('name')) for doc in load(COLLECTION / rel) for task, _no_log in tasks(doc)]
        assert name in names, 'exception for a task that is gone: %s: %s' % (rel, name)


# ------------------------------------------------------------------------- the detectors detect

@pytest.mark.parametrize('text', [
    'redis-cli --no-auth-warning --user monitor --pass {{ pw | quote }} PING',
    'redis-cli -a {{ pw }} PING',
    'redis-cli -apassword PING',
    'redis-cli --pass=secret PING',
    'redis-cli -u redis://monitor:s3cret@127.0.0.1:6379 PING',
    yaml.safe_load('>-\n  set -o pipefail; redis-cli --scan | while read -r k; do redis-cli --user monitor\n'
                   '  --pass x XINFO GROUPS "$k"; done\n'),
    '/usr/bin/redis-cli \\\n  -a x PING',
    "{{ ['redis-cli', '-h', '127.0.0.1', '--user', 'bench', '-a', _pw, 'PING'] }}",
    ['redis-cli', '--user', 'monitor', '--pass', '{{ pw }}', 'PING'],
])
def test_a_password_on_the_command_line_is_found(text):
    assert [bad for argv in invocations(text) for bad in password_arguments(argv)] != []


def test_a_command_line_alias_is_followed():
    assert [bad for argv in invocations('{{ _redis_cli }} --pass x PING', frozenset({'_redis_cli'}))
            for bad in password_arguments(argv)] != []
    assert aliases([{'vars': {'_redis_cli': 'redis-cli --no-auth-warning', 'other': 'redis-server'}}]) == {'_redis_cli'}


@pytest.mark.parametrize('text', [
    'IFS= read -r REDISCLI_AUTH && export REDISCLI_AUTH && redis-cli --no-auth-warning --user monitor PING',
    'redis-cli --scan --pattern "md:*" | awk -a',
    'redis-cli -u redis://127.0.0.1:6379 PING',
    'redis-cli --askpass --user monitor PING',
    'redis-server --port 6379 -a x',
])
def test_a_command_line_without_a_password_passes(text):
    assert [bad for argv in invocations(text) for bad in password_arguments(argv)] == []


@pytest.mark.parametrize('task, finding', [
    ({'name': 'x', 'ansible.builtin.shell': 'REDISCLI_AUTH={{ _monitor_password }} redis-cli PING'}, check_command_line),
    ({'name': 'x', 'ansible.builtin.command': {'argv': ['tool', '--token', '{{ api_token }}']}}, check_command_line),
    ({'name': 'x', 'ansible.builtin.shell': {'cmd': 'echo {{ wireguard_private_key }} | wg pubkey'}}, check_command_line),
    ({'name': 'x', 'ansible.builtin.shell': 'redis-cli PING', 'environment': {'REDISCLI_AUTH': '{{ pw }}'}}, check_environment),
    ({'name': 'x', 'ansible.builtin.shell': 'redis-cli PING', 'environment': {'X': '{{ _monitor_password }}'}}, check_environment),
    ({'name': 'x', 'ansible.builtin.shell': {'cmd': 'read -r A', 'stdin': '{{ _monitor_password }}'}}, check_no_log),
])
def test_a_secret_in_a_task_is_found(task, finding):
    assert finding(task, False) != []


@pytest.mark.parametrize('task', [
    {'name': 'x', 'ansible.builtin.shell': {'cmd': 'IFS= read -r REDISCLI_AUTH && export REDISCLI_AUTH && redis-cli PING',
                                            'stdin': '{{ _monitor_password }}'}, 'no_log': True},
    {'name': 'x', 'ansible.builtin.command': {'argv': ['pip', 'install', '{{ wheel }}']},
     'environment': {'PIP_FIND_LINKS': '{{ dir }}'}},
])
def test_a_secret_kept_off_the_command_line_passes(task):
    no_log = bool(task.get('no_log'))
    assert check_command_line(task, no_log) == check_environment(task, no_log) == check_no_log(task, no_log) == []
