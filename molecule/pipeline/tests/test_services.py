"""The collector (VPS) and the consumer (Brain) as sandboxed services, as site.yml installs them.

The data they move is checked end to end in test_pipeline.py.
"""

import re

import pytest
import testinfra

import waiting

VPS = testinfra.get_host("podman://vpsb-pipe-vps")
BRAIN = testinfra.get_host("podman://vpsb-pipe-brain")
UNITS = {
    "collector": (VPS, "vps-brain-collector.service", "vps-brain-collector"),
    "consumer": (BRAIN, "vps-brain-consumer.service", "vps-brain-consumer"),
}
DEADLINE_S = 90
# The collector's own Redis user on the VPS (it may SCAN, XLEN and XINFO the md:* streams).
REDIS = (
    "REDISCLI_AUTH=$(cat /etc/vps-brain/collector.redis-password)"
    " redis-cli --no-auth-warning --user collector"
)


def main_pid(host, unit):
    return int(host.check_output(f"systemctl show -P MainPID {unit}"))


def wait_for(probe, what):
    return waiting.wait_for(probe, what, deadline_s=DEADLINE_S)


@pytest.mark.parametrize("role", UNITS)
def test_unit_is_active_and_enabled(role):
    host, unit, _ = UNITS[role]
    svc = host.service(unit)
    assert svc.is_running
    assert svc.is_enabled
    assert host.check_output(f"systemctl show -P Restart {unit}") == "always"


@pytest.mark.parametrize("role", UNITS)
def test_runs_as_its_own_non_root_user(role):
    host, unit, user = UNITS[role]
    pid = main_pid(host, unit)
    assert pid > 0
    uid = host.check_output(f"stat -c %u /proc/{pid}")
    assert host.check_output(f"id -un {uid}") == user
    assert uid != "0"
    assert host.user(user).shell == "/usr/sbin/nologin"


def test_collector_runs_on_the_isolated_cpus_consumer_on_cpu_0():
    """Every thread where the unit says: the collector on the CPUs cpu_isolation isolated (the
    last one on a 2-CPU host), the consumer on CPU 0 (consumer_cpus in host_vars)."""
    # isolcpus=[flag,...,]cpulist (the role writes managed_irq,domain,<cpus>): the CPUs are the
    # items that are not flags.
    param = VPS.check_output("grep -ho 'isolcpus=[^ \"]*' /etc/default/grub.d/*.cfg | head -n1")
    assert param, "no isolcpus= in the GRUB drop-in"
    isolated = ",".join(
        i for i in param.split("=", 1)[1].split(",") if not i.isalpha() and "_" not in i
    )
    assert isolated, param
    for host, unit, want in (
        (VPS, UNITS["collector"][1], isolated),
        (BRAIN, UNITS["consumer"][1], "0"),
    ):
        assert host.check_output(f"systemctl show -P CPUAffinity {unit}"), unit
        pid = main_pid(host, unit)
        lists = host.check_output(
            f"grep -h Cpus_allowed_list /proc/{pid}/task/*/status | sort -u"
        ).splitlines()
        assert lists == [f"Cpus_allowed_list:\t{want}"], (unit, lists)


@pytest.mark.parametrize("role", UNITS)
def test_sandbox_exposure_is_at_most_2_5(role):
    host, unit, _ = UNITS[role]
    out = host.check_output(f"systemd-analyze security --no-pager {unit}")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert match, out[-500:]
    assert float(match.group(1)) <= 2.5, out


@pytest.mark.parametrize("role", UNITS)
def test_config_is_root_owned_group_readable_and_password_stays_out(role):
    host, _, user = UNITS[role]
    conf = host.file(f"/etc/vps-brain/{role}.yml")
    assert (conf.user, conf.group, conf.mode) == ("root", user, 0o640)
    secret = host.file(f"/etc/vps-brain/{role}.redis-password")
    assert (secret.user, secret.group, secret.mode) == ("root", user, 0o640)
    assert secret.content_string.strip() not in conf.content_string
    journal = host.check_output(f"journalctl --no-pager -o cat -u vps-brain-{role}")
    assert secret.content_string.strip() not in journal


def test_market_data_arrives_in_redis_streams():
    def streams():
        keys = VPS.check_output(f"{REDIS} --scan --pattern 'md:*'").split()
        lengths = {key: int(VPS.check_output(f"{REDIS} XLEN {key}")) for key in keys}
        return lengths if any(lengths.values()) else None

    lengths = wait_for(streams, "md:* stream entries")
    assert any("btcusdt" in key for key in lengths), lengths


def test_consumer_stores_parquet_files():
    store = "/var/lib/vps-brain-consumer/store"

    def parquet():
        return BRAIN.run(f"find {store} -name '*.parquet' -size +0").stdout.split()

    files = wait_for(parquet, "Parquet file in the store")
    magic = BRAIN.check_output(f"head -c 4 {files[0]}")
    assert magic == "PAR1"


def test_consumer_group_reads_the_vps_streams():
    def groups():
        keys = VPS.check_output(f"{REDIS} --scan --pattern 'md:*'").split()
        for key in keys:
            out = VPS.run(f"{REDIS} XINFO GROUPS {key}").stdout
            if "brain" in out:
                return True
        return False

    assert wait_for(groups, "consumer group 'brain' on the VPS streams")
