# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters of the wireguard, firewall and monitoring roles: IP addresses, networks, interface names.

The roles' preflight asserts ask these, one question each, instead of doing address arithmetic
in Jinja; the parsing is ``plugins/module_utils/network.py`` (Python's ``ipaddress``). Unit tested
in tests/unit/plugins/filter/test_network.py.

The ``*_valid`` filters, ``ipv4_host_of`` and ``ssh_connection`` never raise, so an assert can ask
them about any input and fail with its own message. ``ipv4_prefix``, ``ip_networks_covering``
and ``url_host`` raise ``AnsibleFilterError`` on what does not parse: ask them after the assert.
"""

from __future__ import annotations

from collections.abc import Iterable

from ansible.errors import AnsibleFilterError

from ansible_collections.marketdata.vps_brain.plugins.module_utils import network
from ansible_collections.marketdata.vps_brain.plugins.module_utils.irq import valid_interface_name


def _parses(parse, *args, **kwargs) -> bool:
    """Whether PARSE accepts ARGS (raises no ValueError)."""
    try:
        parse(*args, **kwargs)
    except ValueError:
        return False
    return True


def ipv4_address_valid(value) -> bool:
    """Whether VALUE is a dotted-quad IPv4 address (``10.8.0.1``)."""
    return _parses(network.ipv4_address, value)


def ipv4_network_valid(value, max_prefix: int = 32) -> bool:
    """Whether VALUE is an IPv4 network ``a.b.c.d/N`` with N at most MAX_PREFIX (host bits allowed)."""
    return _parses(network.ipv4_network, value, max_prefix=int(max_prefix))


def ipv4_host_of(address, net) -> bool:
    """Whether ADDRESS is a host address of the IPv4 network NET (not its network or broadcast address)."""
    return network.ipv4_is_host_of(address, net)


def ipv4_prefix(value) -> int:
    """The prefix length of the IPv4 network ``a.b.c.d/N``: N."""
    try:
        return network.ipv4_network(value).prefixlen
    except ValueError as exc:
        raise AnsibleFilterError('ipv4_prefix: %s' % exc)


def ip_address_valid(value) -> bool:
    """Whether VALUE is an IPv4 or IPv6 address (an IPv6 zone ``%eth0`` allowed)."""
    return _parses(network.ip_address, value)


def ip_network_valid(value, cidr: bool = False) -> bool:
    """Whether VALUE is an IPv4 or IPv6 network; an address alone counts unless CIDR is true."""
    return _parses(network.ip_network, value, cidr=bool(cidr))


def ip_networks_invalid(values: Iterable) -> list:
    """The entries of VALUES that are not IP networks (nor addresses), in their order."""
    return [value for value in values or [] if not ip_network_valid(value)]


def ip_networks_covering(address, networks: Iterable) -> list:
    """The entries of NETWORKS that contain ADDRESS (IPv4-mapped IPv6 seen as IPv4), in their order."""
    try:
        return network.covering_networks(address, networks or [])
    except ValueError as exc:
        raise AnsibleFilterError('ip_networks_covering: %s' % exc)


def interface_name_valid(value) -> bool:
    """Whether VALUE is a network interface name of the strict form the collection accepts.

    1-15 characters of A-Z a-z 0-9 _ . -, not starting with . or - (``plugins/module_utils/irq.py``,
    ``INTERFACE_NAME_PATTERN``, which the irq_affinity role and its module check too).
    """
    return valid_interface_name(value)


def ssh_connection(value) -> dict:
    """The parts of an ``SSH_CONNECTION`` value: ``{client, client_port, server, server_port}``.

    ``"192.0.2.7 50022 198.51.100.2 22"`` -> client ``192.0.2.7``, server port ``22``. Anything but
    four fields with numeric ports (no SSH session, a local connection) is ``{}``.
    """
    fields = str(value or '').split()
    if len(fields) != 4 or not (fields[1].isdigit() and fields[3].isdigit()):
        return {}
    return {'client': fields[0], 'client_port': int(fields[1]), 'server': fields[2], 'server_port': int(fields[3])}


def url_host(value) -> str:
    """VALUE as the host part of a URL or ``host:port``: an IPv6 address in brackets, else unchanged."""
    if not isinstance(value, str):
        raise AnsibleFilterError('url_host: expected a host name or address, got %r' % (value,))
    if ':' in value and not value.startswith('['):
        return '[%s]' % value
    return value


class FilterModule:
    """IP address and network filters of the wireguard, firewall and monitoring roles."""

    def filters(self):
        return {
            'ipv4_address_valid': ipv4_address_valid,
            'ipv4_network_valid': ipv4_network_valid,
            'ipv4_host_of': ipv4_host_of,
            'ipv4_prefix': ipv4_prefix,
            'ip_address_valid': ip_address_valid,
            'ip_network_valid': ip_network_valid,
            'ip_networks_invalid': ip_networks_invalid,
            'ip_networks_covering': ip_networks_covering,
            'interface_name_valid': interface_name_valid,
            'ssh_connection': ssh_connection,
            'url_host': url_host,
        }
