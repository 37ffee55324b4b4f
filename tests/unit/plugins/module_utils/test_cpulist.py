# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import random

import pytest

from ansible_collections.marketdata.vps_brain.plugins.module_utils.cpulist import (
    cmdline_cpus,
    format_cpulist,
    format_mask,
    grub_cmdline,
    parse_cmdline,
    parse_cpulist,
    parse_grub_dropin,
    parse_isolcpus,
    parse_mask,
    read_online,
)


@pytest.mark.parametrize('text, cpus', [
    ('0-3,5', {0, 1, 2, 3, 5}),
    ('', set()),
    ('   \n', set()),
    ('0-3,5\n', {0, 1, 2, 3, 5}),
    (' 0 - 3 ,\n 5 ', {0, 1, 2, 3, 5}),
    ('7', {7}),
    ('1,1,0-1', {0, 1}),
    ('3,1', {1, 3}),
    ('0-7:2/4', {0, 1, 4, 5}),
    ('0-0', {0}),
    (None, set()),
])
def test_parse_cpulist_accepts_kernel_syntax(text, cpus):
    assert parse_cpulist(text) == cpus


@pytest.mark.parametrize('text, fragment', [
    ('a', "'a'"),
    ('1-', "'1-'"),
    ('-1', "'-1'"),
    ('3-1', 'backwards'),
    ('1,,2', 'empty element'),
    (',', 'empty element'),
    ('0x3', "'0x3'"),
    ('1.5', "'1.5'"),
    ('1;2', "'1;2'"),
    ('0-99999', 'above the kernel limit'),
    ('0-7:0/4', 'bad group'),
    ('0-7:5/4', 'bad group'),
])
def test_parse_cpulist_rejects_garbage_naming_the_part(text, fragment):
    with pytest.raises(ValueError) as info:
        parse_cpulist(text)
    assert fragment in str(info.value)
    assert 'invalid CPU list' in str(info.value)


def test_parse_cpulist_rejects_non_strings():
    with pytest.raises(ValueError, match='must be a string'):
        parse_cpulist(3)


@pytest.mark.parametrize('cpus, text', [
    (set(), ''),
    ({0}, '0'),
    ({0, 1, 2, 3, 5}, '0-3,5'),
    ({1, 3, 5}, '1,3,5'),
    ([4, 3, 0, 1], '0-1,3-4'),
    (range(0, 64), '0-63'),
])
def test_format_cpulist_is_canonical(cpus, text):
    assert format_cpulist(cpus) == text


@pytest.mark.parametrize('bad', [-1, 'a', 1.0, True, 10 ** 6])
def test_format_cpulist_rejects_bad_cpu_numbers(bad):
    with pytest.raises(ValueError, match='invalid CPU number'):
        format_cpulist([0, bad])


def test_cpulist_round_trips():
    rng = random.Random(42)
    for _round in range(200):
        cpus = {rng.randrange(0, 300) for _pick in range(rng.randrange(0, 40))}
        text = format_cpulist(cpus)
        assert parse_cpulist(text) == cpus
        assert format_cpulist(parse_cpulist(text)) == text


@pytest.mark.parametrize('text, cpus', [
    ('00000000,0000000f', {0, 1, 2, 3}),
    ('0000000f\n', {0, 1, 2, 3}),
    ('f', {0, 1, 2, 3}),
    ('3', {0, 1}),
    ('00000000', set()),
    ('00000001,00000000', {32}),
    ('80000000,00000001', {0, 63}),
    ('ffffffff,ffffffff', set(range(64))),
    ('0x5', {0, 2}),
    ('00000001,00000000,00000002', {1, 64}),
])
def test_parse_mask_reads_proc_irq_masks(text, cpus):
    assert parse_mask(text) == cpus


@pytest.mark.parametrize('text', ['', 'g', '123456789', '1,,2', 'f f,1,', '0-3'])
def test_parse_mask_rejects_garbage(text):
    with pytest.raises(ValueError, match='invalid CPU mask'):
        parse_mask(text)


@pytest.mark.parametrize('cpus, nr_cpus, text', [
    ({0, 1, 2, 3}, None, '0000000f'),
    (set(), None, '00000000'),
    ({32}, None, '00000001,00000000'),
    ({0}, 64, '00000000,00000001'),
    ({0, 1}, 2, '00000003'),
    ({0, 63}, None, '80000000,00000001'),
])
def test_format_mask_groups_32_bits(cpus, nr_cpus, text):
    assert format_mask(cpus, nr_cpus) == text


def test_format_mask_refuses_cpus_beyond_nr_cpus():
    with pytest.raises(ValueError, match='does not fit'):
        format_mask({40}, nr_cpus=32)


def test_mask_round_trips():
    rng = random.Random(7)
    for _round in range(200):
        cpus = {rng.randrange(0, 130) for _pick in range(rng.randrange(0, 20))}
        assert parse_mask(format_mask(cpus)) == cpus


def test_parse_cmdline_splits_flags_values_and_quotes():
    params = parse_cmdline('BOOT_IMAGE=/vmlinuz ro quiet isolcpus=managed_irq,domain,1 '
                           'dyndbg="file x.c +p" nohz_full=1\n')
    assert params == {
        'BOOT_IMAGE': '/vmlinuz', 'ro': None, 'quiet': None,
        'isolcpus': 'managed_irq,domain,1', 'dyndbg': 'file x.c +p', 'nohz_full': '1',
    }


def test_parse_cmdline_stops_at_init_arguments_and_keeps_last_value():
    params = parse_cmdline('isolcpus=1 isolcpus=2-3 -- isolcpus=0 --single')
    assert params == {'isolcpus': '2-3'}


def test_parse_cmdline_of_empty_text_is_empty():
    assert parse_cmdline('') == {}


@pytest.mark.parametrize('value, cpus, flags', [
    ('managed_irq,domain,2-3', {2, 3}, ('managed_irq', 'domain')),
    ('2-3', {2, 3}, ()),
    ('nohz,1', {1}, ('nohz',)),
    ('managed_irq, domain,\n1,3', {1, 3}, ('managed_irq', 'domain')),
    ('domain', set(), ('domain',)),
    (None, set(), ()),
])
def test_parse_isolcpus_splits_flags(value, cpus, flags):
    assert parse_isolcpus(value) == (cpus, flags)


@pytest.mark.parametrize('value, fragment', [
    ('bogus,2', "unknown flag 'bogus'"),
    ('domain,1-x', "'1-x'"),
])
def test_parse_isolcpus_rejects_unknown_flags_and_bad_lists(value, fragment):
    with pytest.raises(ValueError) as info:
        parse_isolcpus(value)
    assert fragment in str(info.value)


def test_cmdline_cpus_reads_cpu_list_parameters():
    params = parse_cmdline('isolcpus=managed_irq,1-2 nohz_full=1-2 rcu_nocbs=1-2 irqaffinity=0')
    assert cmdline_cpus(params, 'isolcpus') == {1, 2}
    assert cmdline_cpus(params, 'nohz_full') == {1, 2}
    assert cmdline_cpus(params, 'rcu_nocbs') == {1, 2}
    assert cmdline_cpus(params, 'irqaffinity') == {0}


def test_cmdline_cpus_is_none_when_absent():
    assert cmdline_cpus(parse_cmdline('quiet'), 'nohz_full') is None


def test_cmdline_cpus_names_the_bad_parameter():
    with pytest.raises(ValueError, match='invalid nohz_full=1-x'):
        cmdline_cpus(parse_cmdline('nohz_full=1-x'), 'nohz_full')


def test_cmdline_cpus_refuses_other_parameters():
    with pytest.raises(ValueError, match='not a CPU-list parameter'):
        cmdline_cpus({'quiet': None}, 'quiet')


DROPIN = '''\
# Managed by Ansible (marketdata.vps_brain.cpu_isolation)
GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT isolcpus=managed_irq,domain,1 nohz_full=1 rcu_nocbs=1"
'''


def test_grub_dropin_appends_to_the_default_cmdline():
    values = parse_grub_dropin(DROPIN)
    assert values == {'GRUB_CMDLINE_LINUX_DEFAULT': 'isolcpus=managed_irq,domain,1 nohz_full=1 rcu_nocbs=1'}
    params = grub_cmdline(values)
    assert cmdline_cpus(params, 'isolcpus') == {1}
    assert cmdline_cpus(params, 'nohz_full') == {1}


def test_grub_dropin_accumulates_lines_and_both_variables():
    text = '''
GRUB_CMDLINE_LINUX="${GRUB_CMDLINE_LINUX} irqaffinity=0"   # housekeeping IRQs
  GRUB_CMDLINE_LINUX_DEFAULT='quiet'
GRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX_DEFAULT} isolcpus=2-3"
export GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT nohz_full=2-3"
GRUB_TIMEOUT=5
#GRUB_CMDLINE_LINUX_DEFAULT="isolcpus=0"
'''
    values = parse_grub_dropin(text)
    assert values == {
        'GRUB_CMDLINE_LINUX': 'irqaffinity=0',
        'GRUB_CMDLINE_LINUX_DEFAULT': 'quiet isolcpus=2-3 nohz_full=2-3',
    }
    assert grub_cmdline(values) == {'irqaffinity': '0', 'quiet': None, 'isolcpus': '2-3', 'nohz_full': '2-3'}


def test_grub_dropin_without_self_reference_replaces_the_value():
    values = parse_grub_dropin('GRUB_CMDLINE_LINUX_DEFAULT="isolcpus=1"\nGRUB_CMDLINE_LINUX_DEFAULT="isolcpus=3"\n')
    assert values == {'GRUB_CMDLINE_LINUX_DEFAULT': 'isolcpus=3'}


def test_grub_dropin_with_nothing_relevant_is_empty():
    assert parse_grub_dropin('# nothing here\nGRUB_TIMEOUT=1\n') == {}
    assert grub_cmdline({}) == {}


def test_grub_dropin_rejects_unbalanced_quotes():
    with pytest.raises(ValueError, match='cannot parse GRUB line'):
        parse_grub_dropin('GRUB_CMDLINE_LINUX_DEFAULT="isolcpus=1\n')


def test_read_online_parses_the_file_and_tells_a_missing_one_from_a_broken_one(tmp_path):
    assert read_online(str(tmp_path)) is None
    online = tmp_path / 'sys/devices/system/cpu/online'
    online.parent.mkdir(parents=True)
    online.write_text('0-2,5\n')
    assert read_online(str(tmp_path)) == frozenset({0, 1, 2, 5})
    online.write_text('zero\n')
    with pytest.raises(ValueError, match='cannot read .*sys/devices/system/cpu/online'):
        read_online(str(tmp_path))
