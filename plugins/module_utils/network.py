# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Parse the IP addresses and networks the roles are given, with Python's ``ipaddress``.

Pure functions, no Ansible imports, so the filters of ``plugins/filter/network.py`` and their unit
tests share one parser. Every parser raises ``ValueError`` naming the text and what was expected.

* A tunnel network: IPv4 only, always ``a.b.c.d/N``, host bits allowed (``10.8.0.1/24`` is the
  network ``10.8.0.0/24``), an upper bound on the prefix so that it has host addresses.
* A tunnel address: a dotted-quad IPv4 address, no leading zeros, no prefix.
* A host address of a network: inside it, neither its network nor its broadcast address.
* Firewall sources and the controller: IPv4 or IPv6; an address alone is a network of one host;
  an IPv6 zone (``%eth0``) and the IPv4-mapped form (``::ffff:192.0.2.7``) of a connection's
  source address are understood.
"""

from __future__ import annotations

import ipaddress
import re

from collections.abc import Iterable

__all__ = [
    'covering_networks',
    'ip_address',
    'ip_network',
    'ipv4_address',
    'ipv4_is_host_of',
    'ipv4_network',
]

# A prefix length as written after the slash: decimal, no sign, no leading zero.
_PREFIX_RE = re.compile(r'^(0|[1-9][0-9]?)$')


def _text(value, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError('%s must be a string, got %r' % (what, value))
    return value


def ipv4_address(value) -> ipaddress.IPv4Address:
    """The IPv4 address of the text ``a.b.c.d`` (each part 0-255, no leading zeros)."""
    text = _text(value, 'an IPv4 address')
    try:
        return ipaddress.IPv4Address(text)
    except ValueError as exc:
        raise ValueError('%r is not an IPv4 address a.b.c.d (%s)' % (text, exc)) from exc


def ipv4_network(value, max_prefix: int = 32) -> ipaddress.IPv4Network:
    """The IPv4 network of the text ``a.b.c.d/N`` with ``0 <= N <= max_prefix``.

    Host bits are allowed and cleared (``10.8.0.1/24`` -> ``10.8.0.0/24``); the prefix is required.
    """
    text = _text(value, 'an IPv4 network')
    address, sep, prefix = text.partition('/')
    if not sep or not _PREFIX_RE.match(prefix) or int(prefix) > max_prefix:
        raise ValueError('%r is not an IPv4 network a.b.c.d/0-%d' % (text, max_prefix))
    try:
        ipv4_address(address)
    except ValueError as exc:
        raise ValueError('%r is not an IPv4 network a.b.c.d/0-%d: %s' % (text, max_prefix, exc)) from exc
    return ipaddress.IPv4Network(text, strict=False)


def ipv4_is_host_of(address, network) -> bool:
    """Whether ADDRESS (text) is a host address of NETWORK (text ``a.b.c.d/N``).

    Inside the network, and neither its network nor its broadcast address (so a /31 or /32 has
    none). False when either text does not parse.
    """
    try:
        addr = ipv4_address(address)
        net = ipv4_network(network)
    except ValueError:
        return False
    return addr in net and addr not in (net.network_address, net.broadcast_address)


def ip_network(value, cidr: bool = False) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The IPv4 or IPv6 network of the text; an address alone is a network of one host.

    Host bits are allowed and cleared. With ``cidr`` the prefix (``/N``) is required. Surrounding
    whitespace is ignored.
    """
    text = _text(value, 'an IP network').strip()
    if cidr and '/' not in text:
        raise ValueError('%r is not an IP network in CIDR notation (no /prefix)' % (text,))
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise ValueError('%r is not an IP network (%s)' % (text, exc)) from exc


def ip_address(value) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IPv4 or IPv6 address of the text; an IPv6 zone is dropped, an IPv4-mapped address unwrapped."""
    text = _text(value, 'an IP address').split('%')[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError as exc:
        raise ValueError('%r is not an IP address (%s)' % (value, exc)) from exc
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def covering_networks(address, networks: Iterable) -> list[str]:
    """The texts among NETWORKS whose network contains ADDRESS, in their order.

    Texts that do not parse cover nothing; ADDRESS must parse (``ip_address``).
    """
    addr = ip_address(address)
    out = []
    for text in networks:
        try:
            net = ip_network(text)
        except ValueError:
            continue
        if addr in net:
            out.append(text)
    return out
