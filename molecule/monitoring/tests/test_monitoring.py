"""monitoring: exporters on the listen address only, pinned, the health timer and its gauges.

The alert rules and the dashboard are checked on the controller: promtool (Debian's prometheus
package, installed by scripts/bootstrap.sh) validates and unit-tests the rules, and every metric
the rules and the dashboard name must exist in a live exporter, the health check's output or the
vps_brain package's own registries.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from promql import DASHBOARD, RULES, metric_names, panels, rules

RULES_TEST = Path(__file__).with_name("alerts_test.yml")
PROM = "/var/lib/prometheus/node-exporter/vps_brain_health.prom"
EXPORTERS = {"prometheus-node-exporter": 9100, "prometheus-redis-exporter": 9121}
# Every unit the role installs or starts, sandboxed to this systemd-analyze security exposure.
SANDBOXED = [*sorted(EXPORTERS), "vps-brain-health"]
EXPOSURE_MAX = 2.5
CHECKS = {"units", "redis_memory", "stream_lag", "tunnel", "cpu_isolation"}


def listen_address(host) -> str:
    return host.check_output("ip -4 -o route get 1.1.1.1 | sed -n 's/.* src \\([0-9.]*\\).*/\\1/p'")


def fetch(host, port: int) -> str:
    url = f"http://{listen_address(host)}:{port}/metrics"
    return host.check_output(
        f"python3 -c 'import urllib.request,sys; sys.stdout.write("
        f'urllib.request.urlopen("{url}", timeout=10).read().decode())\''
    )


def run_health(host):
    """Run the health check once the way the timer does; return its gauges."""
    host.run("systemctl reset-failed vps-brain-health.service")
    result = host.run("systemctl start vps-brain-health.service")
    return result, host.file(PROM).content_string


def gauge(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        metric, _, value = line.rpartition(" ")
        got = dict(re.findall(r'(\w+)="([^"]*)"', metric))
        if metric.split("{")[0] == name and all(got.get(k) == v for k, v in labels.items()):
            return float(value)
    raise AssertionError(f"{name}{labels} not in:\n{text}")


@pytest.mark.parametrize("unit", sorted(EXPORTERS))
def test_exporter_is_enabled_and_running(host, unit):
    service = host.service(unit)
    assert service.is_enabled
    assert service.is_running


@pytest.mark.parametrize("unit", sorted(EXPORTERS))
def test_exporter_listens_on_the_configured_address_only(host, unit):
    port = EXPORTERS[unit]
    addr = listen_address(host)
    listeners = host.check_output(f"ss -Hltn 'sport = :{port}'").split("\n")
    assert [line.split()[3] for line in listeners if line] == [f"{addr}:{port}"]
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
    assert not host.socket(f"tcp://127.0.0.1:{port}").is_listening


@pytest.mark.parametrize("unit", sorted(EXPORTERS))
def test_every_exporter_thread_is_pinned_to_the_housekeeping_cpu(host, unit):
    pid = host.check_output(f"systemctl show -p MainPID --value {unit}")
    assert int(pid) > 0
    lists = host.check_output(
        f"grep -h Cpus_allowed_list /proc/{pid}/task/*/status | awk '{{print $2}}' | sort | uniq -c"
    )
    assert lists.split()[1:] == ["0"], lists
    dropin = host.file(f"/etc/systemd/system/{unit}.service.d/vps-brain.conf").content_string
    assert "CPUAffinity=0\n" in dropin


@pytest.mark.parametrize("unit", sorted(EXPORTERS))
def test_exporter_waits_for_its_address_and_retries_forever(host, unit):
    props = "After,Restart,RestartUSec,StartLimitIntervalUSec"
    show = host.check_output(f"systemctl show -p {props} {unit}")
    assert "redis-server.service" in show
    assert "Restart=always" in show
    assert "RestartUSec=5s" in show
    assert "StartLimitIntervalUSec=0" in show


def exposure(host, unit: str) -> tuple[float, str]:
    """The overall exposure `systemd-analyze security` gives unit, and its whole table."""
    out = host.check_output(f"systemd-analyze security --no-pager {unit}.service")
    match = re.search(rf"Overall exposure level for {re.escape(unit)}\.service: ([0-9.]+)", out)
    assert match, out[-500:]
    return float(match.group(1)), out


@pytest.mark.parametrize("unit", SANDBOXED)
def test_unit_sandbox_exposure_is_at_most_2_5(host, unit):
    score, table = exposure(host, unit)
    print(f"{unit}: systemd-analyze security exposure {score}")
    assert score <= EXPOSURE_MAX, table


def test_node_exporter_serves_node_metrics_and_the_health_gauges(host):
    run_health(host)
    text = fetch(host, 9100)
    assert "node_cpu_seconds_total" in text
    assert 'vps_brain_health_check_ok{check="units"} 1' in text


# The node collectors that succeed in this container without any sandbox (the others find no
# such hardware here: bonding, dmi, hwmon, nvme, rapl, ...). Each reads what the sandbox could
# hide: /proc, /sys, the textfile directory, systemd over D-Bus, the kernel clock (adjtimex).
NODE_COLLECTORS = [
    "arp",
    "bcache",
    "btrfs",
    "conntrack",
    "cpu",
    "cpufreq",
    "diskstats",
    "edac",
    "entropy",
    "filefd",
    "filesystem",
    "loadavg",
    "meminfo",
    "netclass",
    "netdev",
    "netstat",
    "os",
    "powersupplyclass",
    "pressure",
    "selinux",
    "sockstat",
    "softnet",
    "stat",
    "systemd",
    "textfile",
    "thermal_zone",
    "time",
    "timex",
    "udp_queues",
    "uname",
    "vmstat",
    "xfs",
]


def test_node_exporter_collectors_still_read_what_they_need(host):
    text = fetch(host, 9100)
    success = dict(
        re.findall(r'^node_scrape_collector_success\{collector="(\w+)"\} (\S+)$', text, re.M)
    )
    failed = [c for c in NODE_COLLECTORS if success.get(c) != "1"]
    assert not failed, f"collectors failing: {failed}"
    assert re.search(r"^node_filesystem_size_bytes\{[^}]*\} [1-9]", text, re.M)
    unit = r'^node_systemd_unit_state\{name="redis-server.service",state="active"[^}]*\} 1$'
    assert re.search(unit, text, re.M)


def test_redis_exporter_reaches_redis_with_the_acl_user(host):
    text = fetch(host, 9121)
    assert re.search(r"^redis_up 1$", text, re.M)
    assert re.search(r'^redis_stream_length\{db="db0",stream="md:test"\} 5$', text, re.M)
    assert re.search(r"^redis_memory_max_bytes 6.7108864e\+07$", text, re.M)


def test_redis_password_stays_in_a_root_only_file(host):
    env = host.file("/etc/vps-brain/monitoring-redis.env")
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
    assert "monitor-test-secret" in env.content_string
    for path in (
        "/etc/default/prometheus-redis-exporter",
        "/etc/vps-brain/health.json",
        "/etc/systemd/system/prometheus-redis-exporter.service.d/vps-brain.conf",
    ):
        assert "monitor-test-secret" not in host.file(path).content_string
    assert "monitor-test-secret" not in host.check_output("ps -eo args")


def test_health_timer_is_enabled_and_waiting(host):
    timer = host.service("vps-brain-health.timer")
    assert timer.is_enabled
    assert timer.is_running
    assert (
        "OnCalendar=minutely"
        in host.file("/etc/systemd/system/vps-brain-health.timer").content_string
    )


def test_health_check_writes_one_gauge_per_check(host):
    result, text = run_health(host)
    assert result.rc == 0, result.stderr
    for check in CHECKS:
        assert gauge(text, "vps_brain_health_check_ok", check=check) == 1
    assert gauge(text, "vps_brain_health_check_skipped", check="cpu_isolation") == 1
    for check in CHECKS - {"cpu_isolation"}:
        assert gauge(text, "vps_brain_health_check_skipped", check=check) == 0
    assert gauge(text, "vps_brain_health_unit_active", unit="redis-server.service") == 1
    for unit in EXPORTERS:
        assert gauge(text, "vps_brain_health_unit_active", unit=f"{unit}.service") == 1
    group = {"stream": "md:test", "group": "brain"}
    assert gauge(text, "vps_brain_health_stream_lag_entries", **group) == 3
    assert gauge(text, "vps_brain_health_stream_pending_entries", **group) == 2
    assert 0.5 < gauge(text, "vps_brain_health_redis_memory_headroom_ratio") < 1
    assert gauge(text, "vps_brain_health_tunnel_up", peer="127.0.0.1") == 1
    assert gauge(text, "vps_brain_health_critical_failures") == 0
    prom = host.file(PROM)
    assert (prom.user, prom.mode) == ("prometheus", 0o644)


def test_health_check_fails_on_a_critical_check_and_says_which(host):
    config = json.loads(host.file("/etc/vps-brain/health.json").content_string)
    config["units"].append("vps-brain-no-such.service")
    config["output"] = "/tmp/vps_brain_health_fail.prom"
    host.run(f"echo '{json.dumps(config)}' > /tmp/health-fail.json")
    result = host.run(
        "set -a; . /etc/vps-brain/monitoring-redis.env; "
        "/usr/local/bin/vps-brain-health --config /tmp/health-fail.json"
    )
    assert result.rc == 2
    assert "CRIT units: not active: vps-brain-no-such.service" in result.stdout
    text = host.file("/tmp/vps_brain_health_fail.prom").content_string
    assert gauge(text, "vps_brain_health_check_ok", check="units") == 0
    assert gauge(text, "vps_brain_health_unit_active", unit="vps-brain-no-such.service") == 0
    assert gauge(text, "vps_brain_health_critical_failures") == 1


def test_installed_rules_and_dashboard_are_the_shipped_files(host):
    assert host.file("/etc/vps-brain/vps_brain_alerts.yml").content_string == RULES.read_text()
    assert host.file("/etc/vps-brain/vps_brain_dashboard.json").content_string == (
        DASHBOARD.read_text()
    )


# Controller side: promtool and metric names.


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool missing: scripts/bootstrap.sh installs Debian's prometheus package"
    return path


def test_promtool_accepts_the_alert_rules():
    out = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_alerts_fire_on_the_series_that_should_trigger_them():
    out = subprocess.run(
        [promtool(), "test", "rules", str(RULES_TEST)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


@cache
def package_metrics() -> set[str]:
    from vps_brain.collect.stats import CollectorStats
    from vps_brain.consume.metrics import ConsumerMetrics

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    names = set()
    for registry in (CollectorStats().registry, ConsumerMetrics().registry):
        for family in registry.collect():
            names.update(family.name + s for s in suffixes.get(family.type, [""]))
    return names


@pytest.fixture(scope="module")
def known_metrics(host):
    run_health(host)
    names = {"up"} | package_metrics()
    for text in (fetch(host, 9100), fetch(host, 9121), host.file(PROM).content_string):
        names.update(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", text, re.M))
    return names


def test_package_metric_names_are_the_ones_the_rules_expect():
    names = package_metrics()
    for name in (
        "vps_brain_collector_gaps_total",
        "vps_brain_consumer_lag_entries",
        "vps_brain_tunnel_rtt_seconds",
        "vps_brain_collector_spool_bytes",
    ):
        assert name in names


def test_every_alert_uses_metrics_that_exist(known_metrics):
    assert len(rules()) >= 20
    for rule in rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        unknown = metric_names(rule["expr"]) - known_metrics
        assert not unknown, f"{rule['alert']}: unknown metrics {unknown}"


def test_dashboard_panels_query_metrics_that_exist(known_metrics):
    titles = " ".join(p["title"].lower() for p in panels())
    for topic in ("messages in", "lag", "spool", "redis memory", "tunnel latency", "gaps"):
        assert topic in titles
    assert len({p["id"] for p in panels()}) == len(panels())
    for panel in panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, target["expr"]
            assert not names - known_metrics, f"{panel['title']}: {names - known_metrics}"
