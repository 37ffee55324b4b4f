# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The IP filters the wireguard, firewall and monitoring roles check their input with."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.marketdata.vps_brain.plugins.filter import network as f
from ansible_collections.marketdata.vps_brain.plugins.module_utils import network


# ------------------------------------------------------------------------------ the tunnel (IPv4)

@pytest.mark.parametrize('text', ['10.8.0.1', '0.0.0.0', '255.255.255.255', '192.168.1.10'])
def test_dotted_quads_are_ipv4_addresses(text):
    assert f.ipv4_address_valid(text)


@pytest.mark.parametrize('text', ['', '10.8.0', '10.8.0.256', '10.8.0.01', '10.8.0.1/32', ' 10.8.0.1',
                                  'fe80::1', 'host', None, 167772161, ['10.8.0.1']])
def test_anything_else_is_no_ipv4_address(text):
    assert not f.ipv4_address_valid(text)


@pytest.mark.parametrize('text', ['10.8.0.0/24', '10.8.0.1/24', '0.0.0.0/0', '192.168.0.0/30', '10.0.0.0/8'])
def test_tunnel_networks_up_to_a_30_are_valid(text):
    assert f.ipv4_network_valid(text, 30)


@pytest.mark.parametrize('text', ['10.8.0.0/31', '10.8.0.0/32', '10.8.0.0/33', '10.8.0.0', '10.8.0.0/', '10.8.0.0/024',
                                  '10.8.0.0/+8', '10.8.0/24', '10.8.0.300/24', 'fd00::/64', '10.8.0.0/24 ', None])
def test_other_tunnel_networks_are_invalid(text):
    assert not f.ipv4_network_valid(text, 30)


def test_the_prefix_bound_defaults_to_32():
    assert f.ipv4_network_valid('10.8.0.7/32')
    assert not f.ipv4_network_valid('10.8.0.7/33')


def test_the_prefix_of_a_network_with_host_bits_is_its_own():
    assert f.ipv4_prefix('10.8.0.1/24') == 24
    assert f.ipv4_prefix('0.0.0.0/0') == 0
    with pytest.raises(AnsibleFilterError, match='ipv4_prefix'):
        f.ipv4_prefix('10.8.0.0')


@pytest.mark.parametrize('address, net, inside', [
    ('10.8.0.1', '10.8.0.0/24', True),
    ('10.8.0.254', '10.8.0.0/24', True),
    ('10.8.0.0', '10.8.0.0/24', False),       # the network address
    ('10.8.0.255', '10.8.0.0/24', False),     # the broadcast address
    ('10.9.0.2', '10.8.0.0/24', False),
    ('10.8.0.2', '10.8.0.5/24', True),        # host bits of the network are cleared
    ('192.168.0.1', '192.168.0.0/30', True),
    ('192.168.0.2', '192.168.0.0/30', True),
    ('192.168.0.3', '192.168.0.0/30', False),
    ('10.8.0.7', '10.8.0.7/32', False),       # a /32 has no host address
    ('10.8.0.6', '10.8.0.6/31', False),
    ('1.2.3.4', '0.0.0.0/0', True),
    ('10.8.0.x', '10.8.0.0/24', False),
    ('10.8.0.1', '10.8.0.0/33', False),
])
def test_a_host_address_is_inside_and_neither_network_nor_broadcast(address, net, inside):
    assert f.ipv4_host_of(address, net) is inside


# ------------------------------------------------------------------- firewall and monitoring (v4/v6)

@pytest.mark.parametrize('text, valid', [
    ('192.0.2.7', True), ('2001:db8::1', True), ('fe80::1%wg0', True), ('::ffff:192.0.2.7', True),
    ('0.0.0.0', True), ('10.0.0.300', False), ('nope', False), ('192.0.2.0/24', False), ('', False), (None, False),
])
def test_ip_addresses_of_either_family(text, valid):
    assert f.ip_address_valid(text) is valid


@pytest.mark.parametrize('text, valid', [
    ('192.0.2.0/24', True), ('192.0.2.7/24', True), ('192.0.2.7', True), ('2001:db8::/32', True),
    (' 198.51.100.0/24 ', True), ('10.0.0.300/8', False), ('10.8.0.0/33', False), ('any', False), (None, False),
])
def test_ip_networks_of_either_family_an_address_being_one_host(text, valid):
    assert f.ip_network_valid(text) is valid


def test_cidr_networks_need_a_prefix():
    assert f.ip_network_valid('10.8.0.0/24', cidr=True)
    assert not f.ip_network_valid('10.8.0.1', cidr=True)
    assert not f.ip_network_valid('10.8.0.0/33', cidr=True)


def test_invalid_networks_are_listed_in_their_order():
    assert f.ip_networks_invalid(['192.0.2.0/24', '10.0.0.300/8', '2001:db8::/32', 'x']) == ['10.0.0.300/8', 'x']
    assert f.ip_networks_invalid([]) == []


def test_covering_networks_of_an_address_in_their_order():
    sources = ['198.51.100.0/24', '192.0.2.0/24', 'garbage', '192.0.2.7', '2001:db8::/32', '0.0.0.0/0']
    assert f.ip_networks_covering('192.0.2.7', sources) == ['192.0.2.0/24', '192.0.2.7', '0.0.0.0/0']
    assert f.ip_networks_covering('203.0.113.5', sources) == ['0.0.0.0/0']
    assert f.ip_networks_covering('2001:db8::5', sources) == ['2001:db8::/32']
    assert f.ip_networks_covering('10.1.1.1', ['192.0.2.0/24']) == []


def test_an_ipv4_mapped_or_zoned_source_counts_as_its_address():
    assert f.ip_networks_covering('::ffff:192.0.2.7', ['192.0.2.0/24']) == ['192.0.2.0/24']
    assert f.ip_networks_covering('fe80::1%eth0', ['fe80::/10']) == ['fe80::/10']


def test_covering_refuses_an_address_that_does_not_parse():
    with pytest.raises(AnsibleFilterError, match="'nope' is not an IP address"):
        f.ip_networks_covering('nope', ['192.0.2.0/24'])


@pytest.mark.parametrize('text, host', [
    ('10.8.0.1', '10.8.0.1'), ('vps.example.org', 'vps.example.org'), ('::1', '[::1]'),
    ('2001:db8::1', '[2001:db8::1]'), ('[::1]', '[::1]'),
])
def test_url_hosts_put_ipv6_in_brackets(text, host):
    assert f.url_host(text) == host


def test_url_host_refuses_what_is_not_text():
    with pytest.raises(AnsibleFilterError, match='url_host'):
        f.url_host(None)


def test_the_parsers_say_what_they_expected():
    with pytest.raises(ValueError, match=r"'10.8.0.0/33' is not an IPv4 network a.b.c.d/0-30"):
        network.ipv4_network('10.8.0.0/33', max_prefix=30)
    with pytest.raises(ValueError, match='no /prefix'):
        network.ip_network('10.8.0.0', cidr=True)
    assert str(network.ipv4_network('10.8.0.9/24')) == '10.8.0.0/24'


@pytest.mark.parametrize('name, valid', [
    ('wg0', True), ('eth0', True), ('enp3s0f1', True), ('br-lan', True), ('wg_vps.1', True), ('a' * 15, True),
    ('', False), ('a' * 16, False), ('-wg0', False), ('.wg0', False), ('wg0:1', False), ('wg 0', False),
    ('wg/0', False), ('wg0;reboot', False), ('wg=0', False), (None, False), (0, False),
])
def test_interface_names_are_the_strict_form_irq_affinity_accepts(name, valid):
    assert f.interface_name_valid(name) is valid


def test_an_ssh_connection_is_split_into_client_and_server():
    assert f.ssh_connection('192.0.2.7 50022 198.51.100.2 22\n') == {
        'client': '192.0.2.7', 'client_port': 50022, 'server': '198.51.100.2', 'server_port': 22}
    assert f.ssh_connection('2001:db8::7 50022 2001:db8::2 2222')['server_port'] == 2222


@pytest.mark.parametrize('text', ['', None, '192.0.2.7 50022 198.51.100.2', '192.0.2.7 x 198.51.100.2 22', 'a b c d e'])
def test_no_ssh_session_is_an_empty_connection(text):
    assert f.ssh_connection(text) == {}


def test_every_filter_is_registered():
    names = f.FilterModule().filters()
    assert set(names) == {'ipv4_address_valid', 'ipv4_network_valid', 'ipv4_host_of', 'ipv4_prefix', 'ip_address_valid',
                          'ip_network_valid', 'ip_networks_invalid', 'ip_networks_covering', 'interface_name_valid',
                          'ssh_connection', 'url_host'}
