# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Make the collection importable under plain pytest and share the module runner.

``ansible-test units`` puts ``ansible_collections.marketdata.vps_brain`` on the path itself. Plain
pytest from the repository uses ``collections/ansible_collections/marketdata/vps_brain``, the
symlink back to the repository root that ``ansible.cfg`` relies on too.
"""

from __future__ import annotations

import json
import sys

from pathlib import Path

import pytest

_HERE = Path(__file__).resolve()
_COLLECTION = _HERE.parents[2]


def _collection_parent() -> Path | None:
    if (_COLLECTION.parent.name == 'marketdata' and _COLLECTION.name == 'vps_brain'
            and _COLLECTION.parents[1].name == 'ansible_collections'):
        return _COLLECTION.parents[2]
    symlinked = _COLLECTION / 'collections'
    if (symlinked / 'ansible_collections' / 'marketdata' / 'vps_brain' / 'galaxy.yml').exists():
        return symlinked
    return None


try:
    import ansible_collections.marketdata.vps_brain.plugins.module_utils.cpulist  # noqa: F401  pylint: disable=unused-import
except ImportError:
    _PARENT = _collection_parent()
    if _PARENT is None:
        raise
    sys.path.insert(0, str(_PARENT))
    for _name in [name for name in sys.modules if name == 'ansible_collections' or name.startswith('ansible_collections.')]:
        del sys.modules[_name]

from ansible.module_utils import basic  # noqa: E402  pylint: disable=wrong-import-position

try:
    from ansible.module_utils.testing import patch_module_args  # ansible-core >= 2.19
except ImportError:  # pragma: no cover - older ansible-core
    import contextlib

    from ansible.module_utils.common.text.converters import to_bytes

    @contextlib.contextmanager
    def patch_module_args(args=None):
        old = getattr(basic, '_ANSIBLE_ARGS', None)
        basic._ANSIBLE_ARGS = to_bytes(json.dumps({'ANSIBLE_MODULE_ARGS': args or {}}))
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = old


class ModuleExit(Exception):
    """Raised instead of exiting when a module calls exit_json or fail_json."""

    def __init__(self, result: dict, failed: bool):
        super().__init__(result.get('msg', ''))
        self.result = result
        self.failed = failed


def _exit_json(self, **kwargs):
    kwargs.setdefault('changed', False)
    raise ModuleExit(kwargs, failed=False)


def _fail_json(self, msg, **kwargs):
    kwargs['msg'] = msg
    kwargs['failed'] = True
    raise ModuleExit(kwargs, failed=True)


@pytest.fixture
def run_module(monkeypatch):
    """Return a function that runs a module's main() with ARGS and returns (failed, result)."""
    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', _exit_json)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', _fail_json)

    def run(module, args, check_mode=False):
        args = dict(args)
        if check_mode:
            args['_ansible_check_mode'] = True
        with patch_module_args(args):
            with pytest.raises(ModuleExit) as info:
                module.main()
        # Results go back to the controller as JSON: prove they serialise.
        json.dumps(info.value.result)
        return info.value.failed, info.value.result

    return run


class FakeRoot:
    """A fabricated file system root for the modules' ``root`` option."""

    def __init__(self, path: Path):
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    def write(self, rel: str, text: str) -> Path:
        """Create ROOT/REL with TEXT, making parent directories."""
        target = self.path / rel.lstrip('/')
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return target

    def read(self, rel: str) -> str:
        return (self.path / rel.lstrip('/')).read_text()

    def mkdir(self, rel: str) -> Path:
        target = self.path / rel.lstrip('/')
        target.mkdir(parents=True, exist_ok=True)
        return target

    def symlink(self, rel: str, target: str) -> Path:
        link = self.path / rel.lstrip('/')
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
        return link

    def cpus(self, online: str = '0-3', possible: str | None = None,
             isolated: str | None = '', nohz_full: str | None = None) -> None:
        """Fabricate ROOT/sys/devices/system/cpu; a value of None leaves that file out."""
        values = {'online': online, 'possible': possible if possible is not None else online,
                  'isolated': isolated, 'nohz_full': nohz_full}
        for name, value in values.items():
            if value is not None:
                self.write('sys/devices/system/cpu/' + name, value + '\n')


@pytest.fixture
def fake_root(tmp_path):
    """An empty fabricated file system root."""
    root = tmp_path / 'root'
    root.mkdir()
    return FakeRoot(root)
