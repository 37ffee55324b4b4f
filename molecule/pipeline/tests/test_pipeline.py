"""The lab pipeline end to end: simulator -> collector -> Redis -> WireGuard -> consumer -> store.

Redis is probed with the services' own venv (redis-py) and their own password files, so the checks
use the same users the pipeline does. The last test stops the collector to drain the pipeline and
compare what the VPS wrote with what the Brain stored; it starts the collector again afterwards.
"""

import ipaddress
import json
import os
import shlex
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import testinfra

import waiting
from vps_brain.frame import stream_key
from vps_brain.venues import VENUES

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", str(PROJECT / "inventories/lab/hosts.yml"))
VPS = testinfra.get_host("podman://vpsb-pipe-vps")
BRAIN = testinfra.get_host("podman://vpsb-pipe-brain")
VPS_TUNNEL = "10.8.0.1"
BRAIN_TUNNEL = "10.8.0.2"
PY = "/opt/vps-brain/venv/bin/python"
STORE = "/var/lib/vps-brain-consumer/store"
DEADLINE_S = 120

# redis-py clients as the Brain's user (through the tunnel) and as the collector's user (loopback).
BRAIN_CLIENT = f"""
import json, redis
pw = open('/etc/vps-brain/consumer.redis-password').read().strip()
r = redis.Redis(host='{VPS_TUNNEL}', username='brain', password=pw, socket_timeout=5)
"""
VPS_CLIENT = """
import json, redis
pw = open('/etc/vps-brain/collector.redis-password').read().strip()
r = redis.Redis(host='127.0.0.1', username='collector', password=pw, socket_timeout=5)
"""


def collected_markets() -> list[dict]:
    """The markets the inventory gives the VPS's collector.

    collector_markets (the lab's: spot, USD-M and COIN-M), or while it is empty the one spot market
    of collector_symbols.
    """
    proc = subprocess.run(
        ["ansible-inventory", "-i", INVENTORY, "--host", "vpsb-pipe-vps"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    hostvars = json.loads(proc.stdout)
    return hostvars.get("collector_markets") or [
        {"venue": "spot", "symbols": hostvars.get("collector_symbols", ["btcusdt", "ethusdt"])}
    ]


MARKETS = collected_markets()
#: The venues collected, and md:<exchange>:<symbol> of every symbol (the exchange of a venue is
#: vps_brain.venues.VENUES's).
COLLECTED_VENUES = sorted({m["venue"] for m in MARKETS})
STREAMS = {stream_key(VENUES[m["venue"]].exchange, s) for m in MARKETS for s in m["symbols"]}


def test_the_lab_collects_spot_and_both_futures_venues():
    assert set(COLLECTED_VENUES) == set(VENUES), MARKETS


def py(host, code):
    """Run Python in the host's vps-brain venv; the script prints one JSON value."""
    script = textwrap.dedent(code)
    return json.loads(host.check_output(f"{PY} -c {shlex.quote(script)}"))


def wait_for(probe, what):
    return waiting.wait_for(probe, what, deadline_s=DEADLINE_S)


def tcp_connects(host, address, port):
    return host.run(f"timeout 5 bash -c 'exec 3<>/dev/tcp/{address}/{port}'").rc == 0


@pytest.mark.parametrize(
    ("host", "address", "peer"),
    [(VPS, VPS_TUNNEL, BRAIN_TUNNEL), (BRAIN, BRAIN_TUNNEL, VPS_TUNNEL)],
    ids=["vps", "brain"],
)
def test_tunnel_is_up_with_a_recent_handshake(host, address, peer):
    assert f"inet {address}/24" in host.check_output("ip -4 addr show dev wg0")
    handshakes = host.check_output("wg show wg0 latest-handshakes").split()
    assert len(handshakes) == 2, handshakes
    assert time.time() - int(handshakes[1]) < 600, handshakes
    assert peer in host.check_output("wg show wg0 allowed-ips")


def test_brain_reaches_redis_through_the_tunnel():
    assert tcp_connects(BRAIN, VPS_TUNNEL, 6379)
    assert py(BRAIN, BRAIN_CLIENT + "print(json.dumps(r.ping()))") is True


def test_redis_is_not_reachable_outside_the_tunnel():
    # The VPS's address on the podman network carries the tunnel (the Brain's WireGuard endpoint),
    # so the Brain can reach it; Redis must not answer there.
    out = VPS.check_output("ip -4 -o addr show dev eth0")
    lan = str(ipaddress.ip_interface(out.split()[3]).ip)
    endpoint = BRAIN.check_output("wg show wg0 endpoints").split()[1]
    assert endpoint.rsplit(":", 1)[0] == lan, (endpoint, lan)
    assert not tcp_connects(BRAIN, lan, 6379), f"Redis answers on the VPS's LAN address {lan}"
    listening = VPS.check_output("ss -Hltn 'sport = :6379'").splitlines()
    local = {line.split()[3].rsplit(":", 1)[0] for line in listening if line.strip()}
    assert VPS_TUNNEL in local, local
    assert local <= {"127.0.0.1", "[::1]", VPS_TUNNEL}, local


def test_brain_user_reads_but_cannot_write_or_delete_market_data():
    result = py(
        BRAIN,
        BRAIN_CLIENT
        + """
key = sorted(k.decode() for k in r.scan_iter(match='md:*'))[0]
denied = {}
for name, call in [
    ('xadd', lambda: r.xadd(key, {'x': '1'})),
    ('xtrim', lambda: r.xtrim(key, maxlen=0)),
    ('xdel', lambda: r.xdel(key, '0-1')),
    ('del', lambda: r.delete(key)),
    ('flushall', lambda: r.flushall()),
    ('set', lambda: r.set('md:x', '1')),
]:
    try:
        call()
        denied[name] = None
    except redis.exceptions.NoPermissionError as e:
        denied[name] = str(e)
print(json.dumps({'key': key, 'xlen': r.xlen(key), 'denied': denied}))
""",
    )
    assert result["xlen"] > 0, result
    for command, error in result["denied"].items():
        assert error and "permission" in error.lower(), (command, result)


def simulator_units():
    """The simulators playbooks/lab_market.yml installed on the VPS, one per venue."""
    out = VPS.check_output(
        "systemctl list-unit-files --no-legend --plain 'vps-brain-simulator-*.service'"
    )
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def test_one_simulator_runs_per_venue_collected():
    expected = [f"vps-brain-simulator-{venue}.service" for venue in COLLECTED_VENUES]
    assert simulator_units() == sorted(expected)


@pytest.mark.parametrize(
    ("host", "unit"),
    [
        *[(VPS, f"vps-brain-simulator-{venue}.service") for venue in COLLECTED_VENUES],
        (VPS, "vps-brain-collector.service"),
        (VPS, "redis-server.service"),
        (BRAIN, "vps-brain-consumer.service"),
    ],
    ids=[*(f"simulator-{venue}" for venue in COLLECTED_VENUES), "collector", "redis", "consumer"],
)
def test_pipeline_units_run_after_cutover(host, unit):
    svc = host.service(unit)
    assert svc.is_running
    assert svc.is_enabled


def test_status_on_the_brain_sees_the_collector_through_the_tunnel():
    out = BRAIN.check_output(
        "/opt/vps-brain/venv/bin/vps-brain status --once --config /etc/vps-brain/consumer.yml"
        f" --collector-metrics http://{VPS_TUNNEL}:9108/metrics"
    )
    missing = sorted(key for key in STREAMS if key not in out)
    assert not missing, (missing, out)
    assert "unreachable" not in out, out


# Per stream on the VPS: entries added since the stream began, the last entry id, and the Brain
# group's last delivered id and pending count.
VPS_STREAMS = (
    VPS_CLIENT
    + """
out = {}
for key in sorted(k.decode() for k in r.scan_iter(match='md:*')):
    info = r.xinfo_stream(key)
    groups = {g['name'].decode(): g for g in r.xinfo_groups(key)}
    brain = groups.get('brain', {})
    out[key] = {
        'added': info['entries-added'],
        'last': info['last-generated-id'].decode(),
        'delivered': brain.get('last-delivered-id', b'').decode(),
        'pending': brain.get('pending', -1),
    }
print(json.dumps(out))
"""
)

# Per stream in the Brain's store: distinct stream entries, record kinds per channel, and the
# continuity of trade ids and depth update ids (the simulator numbers both without holes). A depth
# event names the id it follows by its venue's rule (vps_brain.venues.SequenceRule): spot U - 1,
# futures pu (read from the payload: the store has no column for it).
STORE_SUMMARY = f"""
import json, pathlib, collections
import pyarrow.parquet as pq
from vps_brain.venues import SequenceRule, venue_of_exchange
entries = collections.defaultdict(set)
channels = collections.Counter()
trades = collections.defaultdict(list)
depth = collections.defaultdict(list)
for f in pathlib.Path('{STORE}/data').rglob('*.parquet'):
    if f.name.startswith('.'):
        continue
    part = dict(p.split('=', 1) for p in f.parent.parts if '=' in p)
    stream = 'md:%s:%s' % (part['exchange'], part['symbol'])
    by_pu = venue_of_exchange(part['exchange']).sequence is SequenceRule.FUTURES
    columns = ['entry_ms', 'entry_seq', 'rec', 'trade_id', 'first_update_id', 'update_id']
    if by_pu and part['channel'] == 'depth':
        columns.append('payload')
    t = pq.read_table(f, columns=columns).to_pylist()
    channels[part['channel']] += len(t)
    for row in t:
        entries[stream].add((row['entry_ms'], row['entry_seq']))
        pos = (row['entry_ms'], row['entry_seq'], row['rec'])
        if part['channel'] == 'trade':
            trades[stream].append((pos, row['trade_id']))
        elif part['channel'] == 'depth':
            follows = (json.loads(row['payload'])['data']['pu'] if by_pu
                       else row['first_update_id'] - 1)
            depth[stream].append((pos, follows, row['update_id']))
def trade_holes(rows):
    ids = [i for _, i in sorted(set(rows))]
    return [(a, b) for a, b in zip(ids, ids[1:]) if b != a + 1]
def depth_holes(rows):
    rows = sorted(set(rows))
    return [(a[2], b[1]) for a, b in zip(rows, rows[1:]) if b[1] != a[2]]
print(json.dumps({{
    'entries': {{k: len(v) for k, v in entries.items()}},
    'channels': channels,
    'trades': {{k: len(v) for k, v in trades.items()}},
    'trade_holes': {{k: trade_holes(v)[:5] for k, v in trades.items()}},
    'depth': {{k: len(v) for k, v in depth.items()}},
    'depth_holes': {{k: depth_holes(v)[:5] for k, v in depth.items()}},
}}))
"""


def test_every_message_reaches_the_brain_store_exactly_once():
    """Stop the collector, let the Brain drain, then compare entry counts and sequence numbers."""
    VPS.check_output("systemctl stop vps-brain-collector.service")
    try:

        def drained():
            streams = py(VPS, VPS_STREAMS)
            done = streams and all(
                s["pending"] == 0 and s["delivered"] == s["last"] for s in streams.values()
            )
            return streams if done else None

        streams = wait_for(drained, "drained consumer group on every md:* stream")
        store = py(BRAIN, STORE_SUMMARY)
    finally:
        VPS.check_output("systemctl start vps-brain-collector.service")

    added = {key: s["added"] for key, s in streams.items()}
    assert set(added) >= STREAMS, (sorted(STREAMS - set(added)), added)
    assert store["entries"] == added, (store["entries"], added)
    for key in sorted(STREAMS):
        assert store["trades"][key] > 100, store
        assert store["depth"][key] > 10, store
    assert not any(store["trade_holes"].values()), store["trade_holes"]
    assert not any(store["depth_holes"].values()), store["depth_holes"]
    assert not set(store["channels"]) & {"gap", "_invalid", "quarantine"}, store["channels"]


def test_only_the_brain_carries_the_store_dependencies():
    """The consumer role installs vps-brain[store]; the VPS's collector venv has no pyarrow."""
    assert VPS.run(f"{PY} -c 'import pyarrow'").rc != 0
    assert BRAIN.run(f"{PY} -c 'import pyarrow'").rc == 0
    assert VPS.run(f"{PY} -m vps_brain.cli collect --help").rc == 0


# --------------------------------------------------------------------- rollback and failed cutover
# Runs the playbooks against the scenario's inventory, after the data checks above: it stops the
# exchange, so the stored sequences get a hole from here on.
# The stand-in for a collector the Brain ran before the cutover.
DIRECT_FEED = "lab-direct-feed.service"


def playbook(name, *extra):
    project = os.environ["MOLECULE_PROJECT_DIRECTORY"]
    inventory = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "inventory")
    args = ["ansible-playbook", "-i", inventory, f"{project}/playbooks/{name}"]
    args += ["-e", f"cutover_direct_collector_unit={DIRECT_FEED}", *extra]
    return subprocess.run(args, cwd=project, capture_output=True, text=True, check=False)


def states():
    return {
        "collector": VPS.run("systemctl is-active vps-brain-collector.service").stdout.strip(),
        "consumer": BRAIN.run("systemctl is-active vps-brain-consumer.service").stdout.strip(),
        "direct": BRAIN.run(f"systemctl is-active {DIRECT_FEED}").stdout.strip(),
    }


def stored_rows():
    return sum(py(BRAIN, STORE_SUMMARY)["channels"].values())


def entries_added():
    return {key: s["added"] for key, s in py(VPS, VPS_STREAMS).items()}


def test_rollback_and_a_failed_cutover_keep_the_data_and_the_old_feed():
    BRAIN.check_output(
        "printf '[Service]\\nExecStart=/bin/sleep infinity\\n'"
        f" > /etc/systemd/system/{DIRECT_FEED} && systemctl daemon-reload"
    )
    keys = set(entries_added())

    rollback = playbook("rollback.yml")
    assert rollback.returncode == 0, rollback.stdout[-3000:]
    assert states() == {"collector": "inactive", "consumer": "inactive", "direct": "active"}
    added, rows = entries_added(), stored_rows()
    assert set(added) == keys and rows > 0, (keys, added, rows)

    # The exchange is down (every venue's simulator): no entries flow, so the cutover must stop
    # the collector it started and leave the Brain on its old feed, with the VPS streams and the
    # store untouched.
    simulators = " ".join(simulator_units())
    VPS.check_output(f"systemctl stop {simulators}")
    try:
        failed = playbook("cutover.yml", "-e", "cutover_flow_seconds=8")
        assert failed.returncode != 0, failed.stdout[-3000:]
        assert (
            "Cutover aborted on the VPS at 'Wait until new entries arrive'"
            in failed.stdout + failed.stderr
        )
        assert states() == {"collector": "inactive", "consumer": "inactive", "direct": "active"}
        # Same streams, nothing added, none deleted and recreated (entries-added would restart).
        # XLEN may shrink: the collector trims entries the Brain has acknowledged.
        assert entries_added() == added
        assert stored_rows() == rows
    finally:
        VPS.check_output(f"systemctl start {simulators}")

    # The exchange is back: the cutover goes through (it checks that the store grows) and stops
    # the old feed.
    done = playbook("cutover.yml", "-e", "cutover_watch_seconds=5")
    assert done.returncode == 0, done.stdout[-3000:]
    assert states() == {"collector": "active", "consumer": "active", "direct": "inactive"}


def test_a_failed_rerun_of_cutover_on_a_healthy_pipeline_leaves_collection_running():
    """Its rescue undoes only what that run did: here it started nothing, so it stops nothing."""
    assert states() == {"collector": "active", "consumer": "active", "direct": "inactive"}
    rows = stored_rows()
    # A lag bound no pipeline meets: the check after the watch fails, as a transient lag would.
    failed = playbook("cutover.yml", "-e", "cutover_watch_seconds=2", "-e", "cutover_max_lag=-1")
    out = failed.stdout + failed.stderr
    assert failed.returncode != 0, out[-3000:]
    assert "Cutover aborted at 'Check the lag stays bounded'" in out, out[-3000:]
    assert "This run started nothing, so it stopped nothing" in out, out[-3000:]
    assert states() == {"collector": "active", "consumer": "active", "direct": "inactive"}
    wait_for(lambda: stored_rows() > rows, "store growth after the failed re-run")
