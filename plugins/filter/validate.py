# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters of playbooks/validate.yml: parse what the hosts print, grade checks, print the table.

Pure functions over text and plain data (no I/O), so the playbook stays a list of small reads and
the parsing and arithmetic are unit tested (tests/unit/test_validate_filters.py).

A check is a dict ``{check, ok, skip, critical, detail}``; ``validate_rows`` grades it:

* ``skip`` non-empty (a reason): ``SKIP``, the reason first in the detail;
* ``ok`` true: ``PASS``;
* otherwise ``FAIL`` when ``critical``, else ``WARN``.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import re

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from ansible.errors import AnsibleFilterError

from ansible_collections.marketdata.vps_brain.plugins.module_utils.cpulist import (
    format_cpulist,
    parse_cpulist,
    parse_mask,
)

STATUSES = ('PASS', 'WARN', 'FAIL', 'SKIP')
_DEFAULT_PORTS = {'ws': 80, 'http': 80, 'wss': 443, 'https': 443}
_WILDCARDS = {'*', '0.0.0.0', '::'}


def _truthy(value, name: str) -> bool:
    """A Jinja-rendered boolean: a bool, or the strings True/False/yes/no/1/0."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    text = str(value).strip().lower()
    if text in ('true', 'yes', '1'):
        return True
    if text in ('false', 'no', '0', ''):
        return False
    raise AnsibleFilterError('validate_rows: %s must be a boolean, got %r' % (name, value))


def _cpus(value) -> frozenset[int]:
    """A CPU set given as a kernel CPU list string or a list of integers."""
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return parse_cpulist(value)
    try:
        return frozenset(int(cpu) for cpu in value)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError('not a CPU set: %r (%s)' % (value, exc))


# ----------------------------------------------------------------------------------- the checklist

def validate_rows(checks: Iterable[Mapping]) -> list[dict]:
    """Grade checks into rows ``{check, status, critical, detail}`` (see the module docstring)."""
    rows = []
    for item in checks:
        if not isinstance(item, Mapping) or not item.get('check'):
            raise AnsibleFilterError('validate_rows: every check needs a name (check): %r' % (item,))
        critical = _truthy(item.get('critical', False), 'critical of %s' % item['check'])
        skip = str(item.get('skip') or '').strip()
        if skip.lower() == 'false':
            skip = ''
        detail = str(item.get('detail', '') or '').strip()
        if skip:
            status = 'SKIP'
            detail = skip + (' (%s)' % detail if detail else '')
        elif _truthy(item.get('ok', False), 'ok of %s' % item['check']):
            status = 'PASS'
        else:
            status = 'FAIL' if critical else 'WARN'
        rows.append({'check': str(item['check']), 'status': status, 'critical': critical,
                     'detail': ' '.join(detail.split())})
    return rows


def validate_table(rows: Iterable[Mapping], title: str = '') -> list[str]:
    """The rows as text table lines: a count line, a header, one ``STATUS | check | detail`` per
    row (a list, so that any callback prints one line per row)."""
    rows = list(rows)
    counts = dict((s, sum(1 for r in rows if r.get('status') == s)) for s in STATUSES)
    width = max([len('CHECK')] + [len(str(r.get('check', ''))) for r in rows])
    lines = ['%s%d checks: %s' % (title + ': ' if title else '', len(rows),
                                  ', '.join('%d %s' % (counts[s], s) for s in STATUSES)),
             '%-4s | %-*s | %s' % ('', width, 'CHECK', 'MEASURED')]
    for r in rows:
        lines.append('%-4s | %-*s | %s' % (r.get('status', '?'), width, r.get('check', ''), r.get('detail', '')))
    return lines


# ------------------------------------------------------------------------------------- CPU affinity

def cpu_list(value) -> list[int]:
    """A kernel CPU list (``"0-2,5"``) or a list of CPUs as a sorted list of integers."""
    return sorted(_cpus(value))


def cpu_list_text(value) -> str:
    """A CPU set as a canonical kernel CPU list string (``"0-2,5"``)."""
    return format_cpulist(_cpus(value))


def threads_outside(tasks: Mapping | None, cpus) -> list[str]:
    """Threads of a cpu_affinity result (``before.tasks``: PID -> TID -> CPU list) allowed on any
    CPU outside ``cpus``, as ``PID/TID:CPULIST``, sorted by PID and TID."""
    allowed = _cpus(cpus)
    out = []
    for pid, threads in sorted((tasks or {}).items(), key=lambda kv: int(kv[0])):
        for tid, cpulist in sorted(threads.items(), key=lambda kv: int(kv[0])):
            if not parse_cpulist(cpulist) <= allowed:
                out.append('%s/%s:%s' % (pid, tid, cpulist))
    return out


def cpus_outside(mapping: Mapping | None, cpus) -> list[str]:
    """Keys of a map of CPU lists (irq_affinity's ``before``: IRQ -> CPU list) allowed on any CPU
    outside ``cpus``, as ``KEY:CPULIST``, sorted by key."""
    allowed = _cpus(cpus)
    items = sorted((mapping or {}).items(), key=lambda kv: (len(str(kv[0])), str(kv[0])))
    return ['%s:%s' % (key, cpulist) for key, cpulist in items if not parse_cpulist(cpulist) <= allowed]


def affinity_text(summary: Mapping | None) -> str:
    """A cpu_affinity ``summary`` (CPU list -> thread count) in words: ``5 threads on CPUs 1``."""
    if not summary:
        return 'no thread'
    parts = ['%d thread%s on CPUs %s' % (n, '' if n == 1 else 's', cpulist or '-')
             for cpulist, n in sorted(summary.items(), key=lambda kv: (-kv[1], kv[0]))]
    return ', '.join(parts)


def irqbalance_banned(text: str | None) -> list[int]:
    """The CPUs /etc/default/irqbalance bans: IRQBALANCE_BANNED_CPULIST, or the older hex mask
    IRQBALANCE_BANNED_CPUS (both when both are set). Comments and quotes are ignored."""
    banned: set[int] = set()
    for line in (text or '').splitlines():
        line = line.split('#', 1)[0].strip()
        if line.startswith('export '):
            line = line[len('export '):].strip()
        name, sep, value = line.partition('=')
        if not sep:
            continue
        value = value.strip().strip('"\'')
        if name.strip() == 'IRQBALANCE_BANNED_CPULIST':
            banned |= parse_cpulist(value)
        elif name.strip() == 'IRQBALANCE_BANNED_CPUS' and value:
            banned |= parse_mask(value)
    return sorted(banned)


# ------------------------------------------------------------------------------------- text formats

def key_values(text: str | None, sep: str = ':') -> dict[str, str]:
    """``name<sep>value`` lines (Redis INFO, /proc/meminfo) as a dict; other lines are ignored."""
    out = {}
    for line in (text or '').splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        name, found, value = line.partition(sep)
        if found:
            out[name.strip()] = value.strip()
    return out


def redis_config(lines: Iterable[str] | str | None) -> dict[str, str]:
    """The reply of ``CONFIG GET a b ...`` (name and value on alternate lines) as a dict; {} for
    anything else (an error reply has one line)."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    items = [line.strip() for line in (lines or [])]
    if len(items) % 2:
        return {}
    return dict(zip(items[::2], items[1::2]))


def redis_memory(info: str | None, meminfo: str | None) -> dict:
    """Redis ``INFO memory`` and the host's /proc/meminfo as numbers (bytes):

    ``used``, ``maxmemory``, ``headroom`` (free fraction of maxmemory, None without a maxmemory),
    ``available`` (MemAvailable) and ``to_grow`` (what Redis may still take: maxmemory - used).
    """
    values = key_values(info)
    mem = key_values(meminfo)

    def number(name: str) -> int:
        try:
            return int(values.get(name, '0'))
        except ValueError:
            return 0

    used, maxmemory = number('used_memory'), number('maxmemory')
    available = mem.get('MemAvailable', '').split()
    available_bytes = int(available[0]) * (1024 if available[1:] == ['kB'] else 1) if available else None
    return {
        'used': used,
        'maxmemory': maxmemory,
        'headroom': round(1 - float(used) / maxmemory, 4) if maxmemory > 0 else None,
        'available': available_bytes,
        'to_grow': max(maxmemory - used, 0),
    }


def thp_mode(text: str | None) -> str:
    """The selected mode of /sys/kernel/mm/transparent_hugepage/enabled (``always [madvise] never``)."""
    found = re.search(r'\[([^\]]+)\]', text or '')
    return found.group(1) if found else (text or '').strip()


def wg_handshake_ages(text: str | None, now) -> list:
    """``wg show IFACE latest-handshakes`` (``PUBKEY\tEPOCH`` per peer) as the age in seconds of
    each peer's last handshake at epoch ``now``; None for a peer that never completed one."""
    try:
        now = int(now)
    except (TypeError, ValueError):
        return []
    ages = []
    for line in (text or '').splitlines():
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            continue
        epoch = int(fields[1])
        ages.append(max(now - epoch, 0) if epoch > 0 else None)
    return ages


def ufw_status(text: str | None) -> dict:
    """``ufw status verbose`` as ``{active, incoming, outgoing, routed}`` (policies as ufw prints
    them: deny, reject, allow, disabled; None when not shown)."""
    out = {'active': False, 'incoming': None, 'outgoing': None, 'routed': None}
    for line in (text or '').splitlines():
        name, _sep, value = line.partition(':')
        name = name.strip().lower()
        if name == 'status':
            out['active'] = value.strip().lower() == 'active'
        elif name == 'default':
            for policy in value.split(','):
                found = re.match(r'\s*(\w+)\s*\((\w+)\)', policy)
                if found and found.group(2) in ('incoming', 'outgoing', 'routed'):
                    out[found.group(2)] = found.group(1)
    return out


# ---------------------------------------------------------------------------------------- sockets

def _address(local: str) -> tuple[str, int]:
    """``127.0.0.1:6379``, ``[::1]:6379``, ``10.8.0.1%wg0:9100``, ``*:22`` -> (address, port)."""
    host, _sep, port = local.rpartition(':')
    host = host.strip('[]').split('%', 1)[0]
    if host.startswith('::ffff:') and '.' in host:
        host = host[len('::ffff:'):]
    return host, int(port)


def listeners(text: str | None) -> list[dict]:
    """``ss -Hltnp`` lines as ``{address, port, process}`` (process: the first program name)."""
    out = []
    for line in (text or '').splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        # State Recv-Q Send-Q Local Peer [Process]; -H drops the header, the state may be absent.
        local = fields[3] if fields[0].isalpha() else fields[2]
        try:
            address, port = _address(local)
        except ValueError:
            continue
        found = re.search(r'\(\("([^"]+)"', line)
        out.append({'address': address, 'port': port, 'process': found.group(1) if found else ''})
    return out


def _allowed(address: str, allowed: Iterable[str]) -> bool:
    if address in _WILDCARDS:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_loopback or any(ip == ipaddress.ip_address(a) for a in allowed if a)


def listening(socks: Iterable[Mapping], ports: Iterable, allowed: Iterable[str]) -> dict:
    """Which addresses each of ``ports`` listens on, judged against loopback plus ``allowed``:

    ``{on: {port: [addresses]}, outside: ['addr:port (process)'], missing: [ports not listening]}``.
    """
    ports = sorted(set(int(p) for p in ports))
    allowed = [str(a) for a in allowed]
    on: dict[int, list[str]] = dict((p, []) for p in ports)
    outside = []
    for s in socks:
        port = int(s['port'])
        if port not in on:
            continue
        if s['address'] not in on[port]:
            on[port].append(s['address'])
        if not _allowed(s['address'], allowed):
            outside.append('%s:%d (%s)' % (s['address'], port, s.get('process') or '?'))
    return {'on': dict((p, sorted(a)) for p, a in on.items()),
            'outside': sorted(set(outside)),
            'missing': [p for p in ports if not on[p]]}


def listening_text(summary: Mapping) -> str:
    """A ``listening`` summary in one line: ``6379 on 10.8.0.1,127.0.0.1; 9100 on 10.8.0.1``."""
    parts = ['%s on %s' % (p, ','.join(a) if a else 'nothing') for p, a in sorted(summary['on'].items())]
    if summary['outside']:
        parts.append('OUTSIDE: ' + ', '.join(summary['outside']))
    return '; '.join(parts)


# -------------------------------------------------------------------------------------- endpoints

def url_endpoint(url: str) -> dict:
    """``wss://host:port/path`` as ``{host, port}`` (scheme default ports: ws/http 80, wss/https 443)."""
    parts = urlsplit(str(url))
    if not parts.hostname:
        raise AnsibleFilterError('url_endpoint: no host in %r' % (url,))
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    if port is None:
        raise AnsibleFilterError('url_endpoint: no port in %r and no default for scheme %r' % (url, parts.scheme))
    return {'host': parts.hostname, 'port': port}


def median(values: Iterable) -> float | None:
    """The median of numbers (None for none)."""
    data = sorted(float(v) for v in values)
    if not data:
        return None
    mid = len(data) // 2
    return data[mid] if len(data) % 2 else (data[mid - 1] + data[mid]) / 2


def connect_times(lines: Iterable[str] | str | None) -> dict:
    """The connect probe's output, one ``ENDPOINT MS`` or ``ENDPOINT error REASON`` line per
    connect, as ``{ENDPOINT: {median_ms, samples, errors}}`` (errors: the distinct reasons)."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    out: dict[str, dict] = {}
    for line in lines or []:
        endpoint, _sep, rest = line.strip().partition(' ')
        if not endpoint:
            continue
        entry = out.setdefault(endpoint, {'times': [], 'errors': []})
        try:
            entry['times'].append(float(rest))
        except ValueError:
            reason = rest[len('error'):].strip() if rest.startswith('error') else rest
            if reason not in entry['errors']:
                entry['errors'].append(reason)
    return dict((endpoint, {'median_ms': median(e['times']), 'samples': len(e['times']), 'errors': e['errors']})
                for endpoint, e in out.items())


def market_urls(markets: Iterable[dict] | None, venue_endpoints: dict, ws_url: str, rest_url: str) -> dict:
    """The websocket and REST base URLs of the collector's markets, as ``{ws: [...], rest: [...]}``
    (each distinct URL once, in market order): a market's own ``ws_url``/``rest_url``, else its
    venue's (``venue_endpoints``, the collector role's ``_collector_venue_endpoints``). With no
    markets, the one spot market of the shorthand ``ws_url`` and ``rest_url``."""
    out: dict[str, list[str]] = {'ws': [], 'rest': []}
    chosen = list(markets or [])
    pairs = [(ws_url, rest_url)] if not chosen else []
    for market in chosen:
        venue = market.get('venue')
        if venue not in venue_endpoints:
            raise AnsibleFilterError('market_urls: unknown venue %r (known: %s)' % (venue, ', '.join(venue_endpoints)))
        defaults = venue_endpoints[venue]
        pairs.append((market.get('ws_url') or defaults['ws_url'], market.get('rest_url') or defaults['rest_url']))
    for ws, rest in pairs:
        for key, url in (('ws', ws), ('rest', rest)):
            if url not in out[key]:
                out[key].append(url)
    return out


def latency_check(times: dict, urls: Iterable[str], bound_ms: float) -> dict:
    """One latency row over several endpoints: ``{ok, detail}``, ok when every endpoint of
    ``urls`` has a median connect time (``connect_times``) at most ``bound_ms``; the detail names
    each endpoint with its median, or why it has none."""
    parts = []
    ok = True
    for url in urls:
        endpoint = url_endpoint(url)
        at = '%s:%s' % (endpoint['host'], endpoint['port'])
        t = times.get(at) or {'median_ms': None, 'samples': 0, 'errors': ['no probe output']}
        if t['median_ms'] is None:
            ok = False
            text = '%s no connect' % at
        else:
            ok = ok and float(t['median_ms']) <= float(bound_ms)
            text = '%s median %.2f ms of %d connects' % (at, float(t['median_ms']), int(t['samples']))
        if t['errors']:
            text += ' (%s)' % '; '.join(t['errors'])
        parts.append(text)
    return {'ok': ok and bool(parts), 'detail': '%s (maximum %s ms)' % ('; '.join(parts) or 'no endpoint', bound_ms)}


def prometheus_stat(text: str | None, name: str) -> dict:
    """The samples of metric ``name`` (any labels) in Prometheus text format, as
    ``{count, max, sum}`` (max and sum None when there is no sample)."""
    values = []
    for line in (text or '').splitlines():
        if not line or line.startswith('#'):
            continue
        found = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)', line)
        if found and found.group(1) == name:
            try:
                values.append(float(found.group(3)))
            except ValueError:
                continue
    return {'count': len(values), 'max': max(values) if values else None, 'sum': sum(values) if values else None}


def redis_benchmark_rps(text: str | None) -> dict[str, float]:
    """``redis-benchmark --csv`` output as ``{test: requests per second}`` (the test is the first
    word of the command: SET, GET)."""
    out = {}
    for row in csv.reader(io.StringIO(text or '')):
        if len(row) < 2 or row[0] == 'test':
            continue
        try:
            out[row[0].split()[0].upper()] = float(row[1])
        except (ValueError, IndexError):
            continue
    return out


# ------------------------------------------------------------------------------------------- disks

def mount_readonly(mounts: str | None, path: str) -> bool | None:
    """Whether ``path`` sits on a read-only mount, from /proc/mounts text (the mount point that is
    the longest prefix of ``path`` wins); None when no mount holds it."""
    best, readonly = '', None
    for line in (mounts or '').splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        point = fields[1].replace('\\040', ' ')
        inside = path == point or path.startswith(point.rstrip('/') + '/')
        if inside and len(point) >= len(best):
            best, readonly = point, 'ro' in fields[3].split(',')
    return readonly


def df_free(text: str | None) -> dict | None:
    """``df -B1 --output=target,size,avail PATH`` as ``{mount, size, available, free_percent}``
    (bytes); None when there is no data line."""
    lines = [line.split() for line in (text or '').splitlines()[1:] if line.strip()]
    if not lines or len(lines[-1]) < 3:
        return None
    mount, size, available = ' '.join(lines[-1][:-2]), lines[-1][-2], lines[-1][-1]
    try:
        size_bytes, available_bytes = int(size), int(available)
    except ValueError:
        return None
    return {'mount': mount, 'size': size_bytes, 'available': available_bytes,
            'free_percent': round(100.0 * available_bytes / size_bytes, 1) if size_bytes else None}


class FilterModule:
    """Filters of playbooks/validate.yml."""

    def filters(self):
        return {
            'validate_rows': validate_rows,
            'validate_table': validate_table,
            'cpu_list': cpu_list,
            'cpu_list_text': cpu_list_text,
            'threads_outside': threads_outside,
            'cpus_outside': cpus_outside,
            'affinity_text': affinity_text,
            'irqbalance_banned': irqbalance_banned,
            'key_values': key_values,
            'redis_config': redis_config,
            'redis_memory': redis_memory,
            'thp_mode': thp_mode,
            'wg_handshake_ages': wg_handshake_ages,
            'ufw_status': ufw_status,
            'listeners': listeners,
            'listening': listening,
            'listening_text': listening_text,
            'url_endpoint': url_endpoint,
            'median': median,
            'connect_times': connect_times,
            'market_urls': market_urls,
            'latency_check': latency_check,
            'prometheus_stat': prometheus_stat,
            'redis_benchmark_rps': redis_benchmark_rps,
            'df_free': df_free,
            'mount_readonly': mount_readonly,
        }
