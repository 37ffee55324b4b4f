# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Parse and format the CPU sets the Linux kernel speaks.

Pure functions, no Ansible imports, so the modules and their unit tests share one parser:

* CPU lists as in ``/sys/devices/system/cpu/online`` or ``isolcpus=``: ``"0-3,5"``, ``""``,
  stride groups ``"0-7:2/4"`` (the kernel's ``bitmap_parselist`` syntax).
* Hex masks as in ``/proc/irq/N/smp_affinity``: comma-separated 32-bit groups, most
  significant first, ``"00000000,0000000f"``.
* The kernel command line (``/proc/cmdline``) and the ``isolcpus=`` flags
  (``managed_irq,domain,2-3``).
* A GRUB drop-in that appends to ``GRUB_CMDLINE_LINUX_DEFAULT`` / ``GRUB_CMDLINE_LINUX``.
"""

from __future__ import annotations

import os
import re
import shlex

from collections.abc import Iterable, Mapping

__all__ = [
    'ISOLCPUS_FLAGS',
    'cmdline_cpus',
    'format_cpulist',
    'format_mask',
    'grub_cmdline',
    'parse_cmdline',
    'parse_cpulist',
    'parse_grub_dropin',
    'parse_isolcpus',
    'parse_mask',
]

# Flags the kernel accepts in front of the CPU list of ``isolcpus=`` (kernel-parameters.txt).
ISOLCPUS_FLAGS = frozenset(('nohz', 'domain', 'managed_irq'))

# Parameters whose value is a plain CPU list.
_CPULIST_PARAMS = frozenset(('nohz_full', 'rcu_nocbs', 'irqaffinity', 'isolcpus'))

_RANGE_RE = re.compile(r'^(\d+)(?:-(\d+)(?::(\d+)/(\d+))?)?$')
_HEX_GROUP_RE = re.compile(r'^[0-9a-fA-F]{1,8}$')
_GRUB_ASSIGN_RE = re.compile(r'^\s*(?:export\s+)?(GRUB_CMDLINE_LINUX(?:_DEFAULT)?)=(.*)$')
_GRUB_REF_RE = re.compile(r'\$(?:\{(\w+)\}|(\w+))')

# Upper bound on a CPU number (the kernel's NR_CPUS maximum is 8192); guards against a typo
# like "0-99999999" building a huge set.
MAX_CPU = 8191


def parse_cpulist(text: str | None) -> frozenset[int]:
    """Return the CPUs of a Linux CPU list such as ``"0-3,5"``.

    Whitespace and newlines anywhere are ignored, an empty string (or ``None``) is the empty set.
    Raise ``ValueError`` naming the offending part for anything else.
    """
    if text is None:
        return frozenset()
    if not isinstance(text, str):
        raise ValueError('CPU list must be a string, got %s' % type(text).__name__)
    compact = ''.join(text.split())
    if not compact:
        return frozenset()
    cpus: set[int] = set()
    for part in compact.split(','):
        if not part:
            raise ValueError('invalid CPU list %r: empty element' % text.strip())
        match = _RANGE_RE.match(part)
        if not match:
            raise ValueError('invalid CPU list %r: cannot parse %r (expected N, N-M or N-M:used/group)'
                             % (text.strip(), part))
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise ValueError('invalid CPU list %r: range %r runs backwards' % (text.strip(), part))
        if last > MAX_CPU:
            raise ValueError('invalid CPU list %r: CPU %d is above the kernel limit %d'
                             % (text.strip(), last, MAX_CPU))
        if match.group(3) is not None:
            used, group = int(match.group(3)), int(match.group(4))
            if group == 0 or used == 0 or used > group:
                raise ValueError('invalid CPU list %r: bad group %r (need 0 < used <= group)'
                                 % (text.strip(), part))
            cpus.update(cpu for cpu in range(first, last + 1) if (cpu - first) % group < used)
        else:
            cpus.update(range(first, last + 1))
    return frozenset(cpus)


def format_cpulist(cpus: Iterable[int]) -> str:
    """Return the canonical kernel CPU list for a set of CPUs: ``{0, 1, 2, 3, 5}`` -> ``"0-3,5"``."""
    ordered = sorted(set(_check_cpu(cpu) for cpu in cpus))
    parts: list[str] = []
    start = prev = None
    for cpu in ordered:
        if start is None:
            start = prev = cpu
        elif cpu == prev + 1:
            prev = cpu
        else:
            parts.append(_range_text(start, prev))
            start = prev = cpu
    if start is not None:
        parts.append(_range_text(start, prev))
    return ','.join(parts)


def read_online(root: str) -> frozenset[int] | None:
    """The online CPUs of the tree under ``root`` (``sys/devices/system/cpu/online``).

    None when the file does not exist; ValueError naming the file when it cannot be read or parsed.
    """
    path = os.path.join(root, 'sys/devices/system/cpu/online')
    try:
        with open(path) as handle:
            return parse_cpulist(handle.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError('cannot read %s: %s' % (path, exc)) from exc


def parse_online_cpus(text: str, root: str, holder: str) -> frozenset[int]:
    """The CPU list option ``cpus`` of a module, checked against the online CPUs under ``root``.

    ``holder`` names what needs at least one CPU ("a thread", "an IRQ"). ValueError carries the
    message the module fails with.
    """
    try:
        wanted = parse_cpulist(text)
    except ValueError as exc:
        raise ValueError('cpus: %s' % exc) from exc
    if not wanted:
        raise ValueError('cpus: %r names no CPU; %s needs at least one' % (text, holder))
    online = read_online(root)
    if online is not None and not wanted <= online:
        raise ValueError('cpus: CPU %s not online (online: %s)'
                         % (format_cpulist(wanted - online), format_cpulist(online)))
    return wanted


def parse_mask(text: str) -> frozenset[int]:
    """Return the CPUs of a hex mask as in ``/proc/irq/N/smp_affinity``.

    ``"00000000,0000000f"`` -> ``{0, 1, 2, 3}``. Groups are 32 bits, most significant first;
    a single group may be shorter than 8 digits (``"f"``). Whitespace is ignored.
    """
    if not isinstance(text, str):
        raise ValueError('CPU mask must be a string, got %s' % type(text).__name__)
    compact = ''.join(text.split())
    if compact.lower().startswith('0x'):
        compact = compact[2:]
    if not compact:
        raise ValueError('invalid CPU mask %r: empty' % text)
    groups = compact.split(',')
    cpus: set[int] = set()
    for index, group in enumerate(reversed(groups)):
        if not _HEX_GROUP_RE.match(group):
            raise ValueError('invalid CPU mask %r: cannot parse group %r (expected up to 8 hex digits)'
                             % (text.strip(), group))
        value = int(group, 16)
        bit = 0
        while value:
            if value & 1:
                cpus.add(index * 32 + bit)
            value >>= 1
            bit += 1
    return frozenset(cpus)


def format_mask(cpus: Iterable[int], nr_cpus: int | None = None) -> str:
    """Return the kernel hex mask for a set of CPUs: ``{0, 1, 2, 3}`` -> ``"0000000f"``.

    ``nr_cpus`` sets the width (one 8-digit group per 32 CPUs, as the kernel prints it for
    ``nr_cpu_ids``); by default the mask is just wide enough for the highest CPU.
    """
    cpu_set = set(_check_cpu(cpu) for cpu in cpus)
    width = max(cpu_set) + 1 if cpu_set else 1
    if nr_cpus is not None:
        if nr_cpus < width:
            raise ValueError('CPU %d does not fit in a mask of %d CPUs' % (width - 1, nr_cpus))
        width = nr_cpus
    value = 0
    for cpu in cpu_set:
        value |= 1 << cpu
    n_groups = max(1, (width + 31) // 32)
    groups = ['%08x' % ((value >> (32 * i)) & 0xFFFFFFFF) for i in reversed(range(n_groups))]
    return ','.join(groups)


def parse_cmdline(text: str) -> dict[str, str | None]:
    """Return the parameters of a kernel command line as a dict.

    ``"ro quiet isolcpus=2-3"`` -> ``{'ro': None, 'quiet': None, 'isolcpus': '2-3'}``. Quoted
    values (``foo="a b"``) are kept whole; a repeated parameter keeps its last value, as the
    kernel does for the ones this collection reads. Everything after ``--`` belongs to init
    and is ignored.
    """
    params: dict[str, str | None] = {}
    for token in _split_cmdline(text):
        if token == '--':
            break
        key, sep, value = token.partition('=')
        params[key] = value if sep else None
    return params


def parse_isolcpus(value: str | None) -> tuple[frozenset[int], tuple[str, ...]]:
    """Split an ``isolcpus=`` value into (CPUs, flags).

    ``"managed_irq,domain,2-3"`` -> ``({2, 3}, ('managed_irq', 'domain'))``. Unknown flags
    raise ``ValueError``.
    """
    if value is None:
        return frozenset(), ()
    parts = ''.join(value.split()).split(',')
    flags: list[str] = []
    while parts and parts[0] and not parts[0][0].isdigit():
        flag = parts.pop(0)
        if flag not in ISOLCPUS_FLAGS:
            raise ValueError('invalid isolcpus=%s: unknown flag %r (known: %s)'
                             % (value, flag, ', '.join(sorted(ISOLCPUS_FLAGS))))
        flags.append(flag)
    return parse_cpulist(','.join(parts)), tuple(flags)


def cmdline_cpus(params: Mapping[str, str | None], name: str) -> frozenset[int] | None:
    """Return the CPU set of a CPU-list parameter of a parsed command line, or ``None`` if absent.

    ``isolcpus`` has its flags stripped. ``nohz_full``, ``rcu_nocbs`` and ``irqaffinity`` are
    plain CPU lists.
    """
    if name not in _CPULIST_PARAMS:
        raise ValueError('%s is not a CPU-list parameter (known: %s)' % (name, ', '.join(sorted(_CPULIST_PARAMS))))
    if name not in params:
        return None
    value = params[name] or ''
    if name == 'isolcpus':
        return parse_isolcpus(value)[0]
    try:
        return parse_cpulist(value)
    except ValueError as exc:
        raise ValueError('invalid %s=%s: %s' % (name, value, exc))


def parse_grub_dropin(text: str) -> dict[str, str]:
    """Evaluate the ``GRUB_CMDLINE_LINUX[_DEFAULT]`` assignments of a GRUB defaults file.

    Handles the drop-in style ``GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT isolcpus=2-3"``:
    references to either variable expand to what earlier lines of this file gave it (the
    distribution's own value is not known here, so it starts empty). Comments, blank lines and
    other variables are ignored. Returns the final value of each variable that was assigned.
    """
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = _GRUB_ASSIGN_RE.match(line)
        if not match:
            continue
        name, rhs = match.group(1), match.group(2)
        try:
            words = shlex.split(rhs, comments=True, posix=True)
        except ValueError as exc:
            raise ValueError('cannot parse GRUB line %r: %s' % (line.strip(), exc))
        raw = ' '.join(words)

        def expand(ref: re.Match[str]) -> str:
            return values.get(ref.group(1) or ref.group(2), '')

        values[name] = ' '.join(_GRUB_REF_RE.sub(expand, raw).split())
    return values


def grub_cmdline(values: Mapping[str, str]) -> dict[str, str | None]:
    """Return the kernel parameters a GRUB defaults file adds to the normal boot entry.

    GRUB puts ``GRUB_CMDLINE_LINUX`` then ``GRUB_CMDLINE_LINUX_DEFAULT`` on the normal entry.
    """
    text = ' '.join(values.get(name, '') for name in ('GRUB_CMDLINE_LINUX', 'GRUB_CMDLINE_LINUX_DEFAULT'))
    return parse_cmdline(text)


def _split_cmdline(text: str) -> list[str]:
    """Split a kernel command line on whitespace, keeping double-quoted parts together."""
    tokens: list[str] = []
    current: list[str] = []
    in_quotes = False
    for char in text:
        if char == '"':
            in_quotes = not in_quotes
            continue
        if char.isspace() and not in_quotes:
            if current:
                tokens.append(''.join(current))
                current = []
            continue
        current.append(char)
    if current:
        tokens.append(''.join(current))
    return tokens


def _check_cpu(cpu: int) -> int:
    if isinstance(cpu, bool) or not isinstance(cpu, int) or cpu < 0 or cpu > MAX_CPU:
        raise ValueError('invalid CPU number %r' % (cpu,))
    return cpu


def _range_text(start: int, end: int) -> str:
    if start == end:
        return str(start)
    return '%d-%d' % (start, end)
