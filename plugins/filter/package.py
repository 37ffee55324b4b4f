# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters of roles/package: name a host's wheelhouse from what the host says, trusting none of it.

The package role asks each host for its Python version, architecture and C library
(``{"python": "311", "machine": "x86_64", "libc": ["glibc", "2.36"]}``) and downloads the dependency
wheels for them on the controller. A compromised host may answer anything, so every value must match
a strict pattern before it names a directory or reaches pip; anything else is refused with the value
quoted. The controller then passes the values as argv, never through a shell.
Unit tested in tests/unit/test_package_filters.py.
"""

from __future__ import annotations

import json
import re

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

# CPython 3 as major and minor digits (sys.version_info: 311 for 3.11).
_PYTHON = re.compile(r'3[0-9]{1,2}')
# platform.machine() as wheel tags spell it: x86_64, aarch64, armv7l, ppc64le, s390x, i686, riscv64.
_MACHINE = re.compile(r'[a-z][a-z0-9_]{0,31}')
# glibc's version as platform.libc_ver() reports it: 2.36.
_GLIBC = re.compile(r'2\.([0-9]{1,3})')
# The oldest glibc a manylinux tag names (manylinux2014 is manylinux_2_17).
_MANYLINUX_FIRST_MINOR = 17


def _refuse(what: str, value, wanted: str) -> AnsibleFilterError:
    return AnsibleFilterError(
        'package_host_platform: the host reported %s %r, which is not %s: refusing to use it on the controller'
        % (what, value, wanted))


def package_host_platform(answer) -> dict:
    """The wheelhouse of one host from its probe's answer (JSON text or the parsed mapping).

    Returns ``{tag, pyver, arch, glibc_minor, platforms}``: ``tag`` names the wheelhouse
    (``cp311-x86_64-glibc2.36``), ``platforms`` are pip's ``--platform`` values from
    manylinux_2_17 to the host's glibc, then manylinux2014 and linux.
    """
    if isinstance(answer, str):
        try:
            answer = json.loads(answer)
        except ValueError:
            raise AnsibleFilterError('package_host_platform: the host answered %r, not the probe\'s JSON' % (answer[:200],))
    if not isinstance(answer, Mapping):
        raise AnsibleFilterError('package_host_platform: the host answered %r, not a JSON object' % (answer,))
    python, machine, libc = answer.get('python'), answer.get('machine'), answer.get('libc')
    if not isinstance(python, str) or not _PYTHON.fullmatch(python):
        raise _refuse('the Python version', python, 'CPython 3 as digits (311 for 3.11)')
    if not isinstance(machine, str) or not _MACHINE.fullmatch(machine):
        raise _refuse('the architecture', machine, 'a machine name (lower-case letters, digits, _)')
    if not isinstance(libc, (list, tuple)) or len(libc) != 2 or not all(isinstance(part, str) for part in libc):
        raise AnsibleFilterError('package_host_platform: the host reported the C library %r, not [name, version]' % (libc,))
    glibc = _GLIBC.fullmatch(libc[1]) if libc[0] == 'glibc' else None
    if glibc is None:
        raise _refuse('the C library %r version' % (libc[0],), libc[1], 'glibc 2.N (musl and others have no wheelhouse)')
    minor = int(glibc.group(1))
    platforms = ['manylinux_2_%d_%s' % (m, machine) for m in range(_MANYLINUX_FIRST_MINOR, minor + 1)]
    return {
        'tag': 'cp%s-%s-glibc%s' % (python, machine, libc[1]),
        'pyver': python,
        'arch': machine,
        'glibc_minor': minor,
        'platforms': platforms + ['manylinux2014_%s' % machine, 'linux_%s' % machine],
    }


class FilterModule:
    """Filters of roles/package."""

    def filters(self):
        return {
            'package_host_platform': package_host_platform,
        }
