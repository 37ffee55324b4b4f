# -*- coding: utf-8 -*-
# Copyright: (c) 2025, vps_brain developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The filters of playbooks/validate.yml on what the hosts really print (Debian 12 tools)."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.marketdata.vps_brain.plugins.filter import validate as f


# ----------------------------------------------------------------------------------- the checklist

def test_rows_are_graded_skip_first_then_ok_then_criticality():
    rows = f.validate_rows([
        {'check': 'a', 'ok': True, 'critical': True, 'detail': 'fine'},
        {'check': 'b', 'ok': False, 'critical': True, 'detail': 'down'},
        {'check': 'c', 'ok': False, 'critical': False, 'detail': 'slow'},
        {'check': 'd', 'ok': False, 'skip': 'a container', 'critical': True, 'detail': 'cubic'},
        {'check': 'e', 'ok': True, 'skip': 'no cpufreq', 'critical': False, 'detail': ''},
    ])
    assert [(r['check'], r['status']) for r in rows] == [
        ('a', 'PASS'), ('b', 'FAIL'), ('c', 'WARN'), ('d', 'SKIP'), ('e', 'SKIP')]
    assert rows[3]['detail'] == 'a container (cubic)'
    assert rows[4]['detail'] == 'no cpufreq'
    assert rows[1]['critical'] is True


@pytest.mark.parametrize('ok, status', [('True', 'PASS'), ('False', 'FAIL'), ('yes', 'PASS'), ('', 'FAIL'), (None, 'FAIL')])
def test_rendered_booleans_are_understood(ok, status):
    assert f.validate_rows([{'check': 'x', 'ok': ok, 'critical': 'True', 'skip': ''}])[0]['status'] == status


def test_a_skip_of_false_is_no_skip_and_details_are_one_line():
    row = f.validate_rows([{'check': 'x', 'ok': True, 'skip': 'False', 'critical': False, 'detail': ' a\n  b  '}])[0]
    assert row['status'] == 'PASS'
    assert row['detail'] == 'a b'


@pytest.mark.parametrize('check', [{'ok': True}, {'check': '', 'ok': True}, {'check': 'x', 'ok': 'maybe'}, 'not a dict'])
def test_malformed_checks_are_refused(check):
    with pytest.raises(AnsibleFilterError):
        f.validate_rows([check])


def test_table_counts_statuses_and_aligns_the_columns():
    rows = f.validate_rows([{'check': 'Swap off', 'ok': True, 'critical': False, 'detail': '0'},
                            {'check': 'Redis running', 'ok': False, 'critical': True, 'detail': 'inactive'}])
    lines = f.validate_table(rows, 'vps1')
    assert lines[0] == 'vps1: 2 checks: 1 PASS, 0 WARN, 1 FAIL, 0 SKIP'
    assert lines[1] == '     | CHECK         | MEASURED'
    assert lines[2:] == ['PASS | Swap off      | 0', 'FAIL | Redis running | inactive']


# ------------------------------------------------------------------------------------- CPU affinity

def test_threads_outside_lists_every_thread_not_within_the_cpus():
    tasks = {'812': {'812': '1', '815': '0-1', '816': '1'}, '90': {'90': '0'}}
    assert f.threads_outside(tasks, [1]) == ['90/90:0', '812/815:0-1']
    assert f.threads_outside(tasks, '0-1') == []
    assert f.threads_outside({}, [1]) == []


def test_cpus_outside_and_cpu_lists():
    assert f.cpus_outside({'24': '0', '25': '0-1', '100': '1'}, [0]) == ['25:0-1', '100:1']
    assert f.cpu_list('0-2,5') == [0, 1, 2, 5]
    assert f.cpu_list([3, 1]) == [1, 3]
    assert f.cpu_list_text([0, 1, 2, 5]) == '0-2,5'
    assert f.cpu_list_text([]) == ''


def test_affinity_text_counts_threads_per_cpu_list():
    assert f.affinity_text({'1': 5}) == '5 threads on CPUs 1'
    assert f.affinity_text({'0-1': 1, '1': 4}) == '4 threads on CPUs 1, 1 thread on CPUs 0-1'
    assert f.affinity_text({}) == 'no thread'


@pytest.mark.parametrize('text, banned', [
    ('# Debian default\n#IRQBALANCE_BANNED_CPULIST=\nIRQBALANCE_BANNED_CPULIST=1\n', [1]),
    ('IRQBALANCE_BANNED_CPULIST="2-3"  # isolated\n', [2, 3]),
    ('export IRQBALANCE_BANNED_CPUS=0000000c\n', [2, 3]),
    ('#IRQBALANCE_ONESHOT=\n', []),
    ('', []),
])
def test_irqbalance_banned_cpus(text, banned):
    assert f.irqbalance_banned(text) == banned


# ------------------------------------------------------------------------------------- text formats

REDIS_INFO_MEMORY = (
    '# Memory\r\nused_memory:1449832\r\nused_memory_human:1.38M\r\nmaxmemory:12635340800\r\n'
    'maxmemory_human:11.77G\r\nmaxmemory_policy:noeviction\r\n')
MEMINFO = 'MemTotal:       32853184 kB\nMemFree:         1002400 kB\nMemAvailable:   24042984 kB\n'


def test_redis_memory_headroom_and_host_room():
    mem = f.redis_memory(REDIS_INFO_MEMORY, MEMINFO)
    assert mem['used'] == 1449832
    assert mem['maxmemory'] == 12635340800
    assert mem['headroom'] == pytest.approx(1 - 1449832 / 12635340800, abs=1e-4)
    assert mem['available'] == 24042984 * 1024
    assert mem['to_grow'] == 12635340800 - 1449832


def test_redis_memory_without_maxmemory_or_answer():
    mem = f.redis_memory('used_memory:100\r\nmaxmemory:0\r\n', '')
    assert mem['headroom'] is None and mem['available'] is None and mem['to_grow'] == 0
    assert f.redis_memory('NOAUTH Authentication required.', MEMINFO)['used'] == 0


def test_redis_config_pairs_and_error_replies():
    assert f.redis_config('maxmemory-policy\nnoeviction\nappendonly\nyes\nappendfsync\neverysec\n') == {
        'maxmemory-policy': 'noeviction', 'appendonly': 'yes', 'appendfsync': 'everysec'}
    assert f.redis_config(['NOPERM this user has no permissions']) == {}
    assert f.redis_config('') == {}


def test_key_values_of_redis_info_and_timedatectl():
    assert f.key_values('# Persistence\r\naof_enabled:1\r\naof_last_write_status:ok\r\n') == {
        'aof_enabled': '1', 'aof_last_write_status': 'ok'}
    assert f.key_values('NTP=no\nNTPSynchronized=yes\n', '=') == {'NTP': 'no', 'NTPSynchronized': 'yes'}


@pytest.mark.parametrize('text, mode', [
    ('always [madvise] never\n', 'madvise'), ('always madvise [never]\n', 'never'), ('', '')])
def test_thp_mode_is_the_bracketed_one(text, mode):
    assert f.thp_mode(text) == mode


def test_wireguard_handshake_ages():
    text = 'qtnlDzqCkP7IM/A6rOSZA8L967WbNS7jC7/QsjsKgI=\t1796139364\nOtherPeerKey=\t0\n'
    assert f.wg_handshake_ages(text, '1796139396') == [32, None]
    assert f.wg_handshake_ages('', 1) == []
    assert f.wg_handshake_ages(text, '') == []


UFW_ACTIVE = '''Status: active
Logging: on (low)
Default: deny (incoming), allow (outgoing), deny (routed)
New profiles: skip

To                         Action      From
--                         ------      ----
22/tcp                     ALLOW IN    10.0.0.0/8                 # vps_brain admin ssh
6379/tcp on wg0            ALLOW IN    10.8.0.0/24                # vps_brain tunnel only
'''


def test_ufw_status():
    assert f.ufw_status(UFW_ACTIVE) == {'active': True, 'incoming': 'deny', 'outgoing': 'allow', 'routed': 'deny'}
    assert f.ufw_status('Status: inactive\n') == {'active': False, 'incoming': None, 'outgoing': None, 'routed': None}
    assert f.ufw_status('Default: reject (incoming), allow (outgoing), disabled (routed)')['incoming'] == 'reject'


# ---------------------------------------------------------------------------------------- sockets

SS = '''LISTEN 0      4096    10.8.0.1:9121 0.0.0.0:*
LISTEN 0      4096    10.8.0.1:9100 0.0.0.0:*
LISTEN 0      5       10.8.0.1:9108 0.0.0.0:* users:(("vps-brain",pid=7258,fd=7))
LISTEN 0      511    127.0.0.1:6379 0.0.0.0:* users:(("redis-server",pid=3227,fd=6))
LISTEN 0      511     10.8.0.1:6379 0.0.0.0:* users:(("redis-server",pid=3227,fd=7))
LISTEN 0      511        [::1]:6379    [::]:* users:(("redis-server",pid=3227,fd=8))
LISTEN 0      128      0.0.0.0:22   0.0.0.0:* users:(("sshd",pid=500,fd=3))
'''


def test_listeners_parse_ss():
    socks = f.listeners(SS)
    assert socks[2] == {'address': '10.8.0.1', 'port': 9108, 'process': 'vps-brain'}
    assert socks[5] == {'address': '::1', 'port': 6379, 'process': 'redis-server'}
    assert socks[0]['process'] == ''
    assert len(socks) == 7


@pytest.mark.parametrize('local, address, port', [
    ('*:9100', '*', 9100), ('[::]:9100', '::', 9100), ('10.8.0.1%wg0:9100', '10.8.0.1', 9100),
    ('[::ffff:10.8.0.1]:9100', '10.8.0.1', 9100), ('[fe80::1%eth0]:22', 'fe80::1', 22)])
def test_listener_addresses(local, address, port):
    assert f.listeners('LISTEN 0 4096 %s *:*\n' % local) == [{'address': address, 'port': port, 'process': ''}]


def test_listening_only_on_loopback_and_the_tunnel():
    summary = f.listening(f.listeners(SS), [6379, 9100, 9121, 9108], ['10.8.0.1'])
    assert summary == {'on': {6379: ['10.8.0.1', '127.0.0.1', '::1'], 9100: ['10.8.0.1'], 9108: ['10.8.0.1'],
                              9121: ['10.8.0.1']},
                       'outside': [], 'missing': []}
    assert f.listening_text(summary) == '6379 on 10.8.0.1,127.0.0.1,::1; 9100 on 10.8.0.1; 9108 on 10.8.0.1; 9121 on 10.8.0.1'


def test_listening_reports_wildcards_other_addresses_and_missing_ports():
    text = SS + 'LISTEN 0 4096 *:9100 *:* users:(("prometheus-node",pid=9,fd=3))\nLISTEN 0 511 172.16.0.5:6379 0.0.0.0:*\n'
    summary = f.listening(f.listeners(text), ['6379', 9100, 9200], ['10.8.0.1'])
    assert summary['outside'] == ['*:9100 (prometheus-node)', '172.16.0.5:6379 (?)']
    assert summary['missing'] == [9200]
    assert f.listening_text(summary).endswith('9200 on nothing; OUTSIDE: *:9100 (prometheus-node), 172.16.0.5:6379 (?)')


# -------------------------------------------------------------------------------------- endpoints

@pytest.mark.parametrize('url, host, port', [
    ('wss://data-stream.binance.vision', 'data-stream.binance.vision', 443),
    ('https://data-api.binance.vision/api', 'data-api.binance.vision', 443),
    ('ws://127.0.0.1:9443', '127.0.0.1', 9443),
    ('http://[::1]:8080/x', '::1', 8080),
    ('ws://localhost', 'localhost', 80)])
def test_url_endpoint(url, host, port):
    assert f.url_endpoint(url) == {'host': host, 'port': port}


@pytest.mark.parametrize('url', ['not a url', 'ftp://host'])
def test_url_endpoint_refuses_what_it_cannot_connect_to(url):
    with pytest.raises(AnsibleFilterError):
        f.url_endpoint(url)


def test_median():
    assert f.median([3, 1, 2]) == 2
    assert f.median(['4', '1', '3', '2']) == 2.5
    assert f.median([]) is None


def test_connect_times_per_endpoint_with_errors():
    lines = ['127.0.0.1:9443 0.050', '127.0.0.1:9443 0.030', '127.0.0.1:9443 0.040',
             'h:443 error [Errno 111] Connection refused', 'h:443 error [Errno 111] Connection refused',
             'h:443 12.5', 'x:1 error cannot resolve x: [Errno -2] Name or service not known', '']
    times = f.connect_times(lines)
    assert times['127.0.0.1:9443'] == {'median_ms': 0.04, 'samples': 3, 'errors': []}
    assert times['h:443'] == {'median_ms': 12.5, 'samples': 1, 'errors': ['[Errno 111] Connection refused']}
    assert times['x:1']['median_ms'] is None
    assert f.connect_times('') == {}


VENUE_ENDPOINTS = {
    'spot': {'ws_url': 'wss://data-stream.binance.vision', 'rest_url': 'https://data-api.binance.vision'},
    'usdm': {'ws_url': 'wss://fstream.binance.com', 'rest_url': 'https://fapi.binance.com'},
}


def test_market_urls_take_each_market_s_own_or_its_venue_s_once():
    markets = [{'venue': 'spot', 'symbols': ['a'], 'ws_url': 'ws://127.0.0.1:9443', 'rest_url': 'http://127.0.0.1:9443'},
               {'venue': 'usdm', 'symbols': ['b']}, {'venue': 'usdm', 'symbols': ['c'], 'channels': ['aggTrade']}]
    assert f.market_urls(markets, VENUE_ENDPOINTS, 'wss://x', 'https://x') == {
        'ws': ['ws://127.0.0.1:9443', 'wss://fstream.binance.com'],
        'rest': ['http://127.0.0.1:9443', 'https://fapi.binance.com'],
    }
    assert f.market_urls([], VENUE_ENDPOINTS, 'wss://x', 'https://y') == {'ws': ['wss://x'], 'rest': ['https://y']}
    with pytest.raises(AnsibleFilterError, match="unknown venue 'coinx'"):
        f.market_urls([{'venue': 'coinx'}], VENUE_ENDPOINTS, 'wss://x', 'https://x')


def test_latency_check_passes_only_when_every_endpoint_is_near():
    times = f.connect_times(['a:443 1.0', 'a:443 2.0', 'b:443 9.0', 'c:443 error [Errno 111] Connection refused'])
    near = f.latency_check(times, ['wss://a', 'https://a/x'], 5)
    assert near == {'ok': True, 'detail': 'a:443 median 1.50 ms of 2 connects; a:443 median 1.50 ms of 2 connects '
                                          '(maximum 5 ms)'}
    far = f.latency_check(times, ['wss://a', 'wss://b'], 5)
    assert not far['ok'] and 'b:443 median 9.00 ms of 1 connects' in far['detail']
    down = f.latency_check(times, ['wss://c'], 5)
    assert down == {'ok': False, 'detail': 'c:443 no connect ([Errno 111] Connection refused) (maximum 5 ms)'}
    assert not f.latency_check(times, ['wss://d'], 5)['ok']  # no probe line at all
    assert not f.latency_check(times, [], 5)['ok']


def test_prometheus_stat_over_labels():
    text = ('# HELP vps_brain_consumer_lag_entries Entries\n# TYPE vps_brain_consumer_lag_entries gauge\n'
            'vps_brain_consumer_lag_entries{stream="md:binance:btcusdt"} 3.0\n'
            'vps_brain_consumer_lag_entries{stream="md:binance:ethusdt"} 12.0\n'
            'vps_brain_consumer_lag_entries_other 99\nredis_up 1\n')
    assert f.prometheus_stat(text, 'vps_brain_consumer_lag_entries') == {'count': 2, 'max': 12.0, 'sum': 15.0}
    assert f.prometheus_stat(text, 'redis_up') == {'count': 1, 'max': 1.0, 'sum': 1.0}
    assert f.prometheus_stat(text, 'absent') == {'count': 0, 'max': None, 'sum': None}


def test_redis_benchmark_csv():
    text = ('"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms"\n'
            '"SET vpsb:bench:__rand_int__ 0123456789abcdef","11933.17","2.792","0.176","1.631"\n'
            '"GET vpsb:bench:__rand_int__","130718.95","0.2","0.1","0.2"\n')
    assert f.redis_benchmark_rps(text) == {'SET': 11933.17, 'GET': 130718.95}
    assert f.redis_benchmark_rps('Error from server: NOPERM') == {}


# ------------------------------------------------------------------------------------------- disks

def test_df_free():
    text = 'Mounted on    1B-blocks       Avail\n/          270553174016 82524504064\n'
    assert f.df_free(text) == {'mount': '/', 'size': 270553174016, 'available': 82524504064, 'free_percent': 30.5}
    assert f.df_free('Mounted on 1B-blocks Avail\n/mnt/my disk 100 5\n')['mount'] == '/mnt/my disk'
    assert f.df_free('') is None


MOUNTS = '''overlay / overlay rw,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
proc /proc/irq proc ro,nosuid,nodev,noexec,relatime 0 0
proc /proc/sys proc ro,nosuid,nodev,noexec,relatime 0 0
'''


def test_mount_readonly_takes_the_longest_mount_point():
    assert f.mount_readonly(MOUNTS, '/proc/irq') is True
    assert f.mount_readonly(MOUNTS, '/proc/irq/24/smp_affinity_list') is True
    assert f.mount_readonly(MOUNTS, '/proc/interrupts') is False
    assert f.mount_readonly(MOUNTS, '/var/lib') is False
    assert f.mount_readonly('', '/proc/irq') is None


def test_every_filter_is_exported():
    names = f.FilterModule().filters()
    assert set(names) >= {'validate_rows', 'validate_table', 'listening', 'connect_times', 'mount_readonly'}
    assert all(callable(fn) for fn in names.values())
