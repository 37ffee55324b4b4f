"""Monitoring reaches the operator: the Brain's Prometheus scrapes everything, alerts arrive.

A webhook sink (molecule/pipeline/files/alert_sink.py) runs on the Brain as a transient systemd
unit, started here if it is not running; the inventory points Alertmanager's receivers at it
(`monitoring_server_alert_webhooks`: /alerts, `monitoring_server_heartbeat_webhooks`: /heartbeat,
inventories/lab/group_vars/all.yml). Then:

- every VPS's node exporter, Redis exporter and collector, and the Brain's node exporter and
  consumer, are scraped (the VPS's through its tunnel address);
- every metric the alert rules and the Grafana dashboard name is in the live scrape (series, or a
  metric family the target announces without a sample yet), and a failure lists those that are not;
- the heartbeat (the dead-man's switch) reaches its own receiver and never the operator's;
- stopping the collector makes VpsBrainTargetDown{job="collector"} arrive, and starting it again
  makes its resolution arrive, each within a bound computed from the inventory's settings (see
  `fire_bound` and `resolve_bound`). That test runs last in the scenario (conftest.py): a stopped
  collector misses exchange data, which test_pipeline.py's store comparison must not see.

Inside molecule verify the hosts come from the scenario's inventory (MOLECULE_INVENTORY_FILE);
without it from the lab's, so the same file checks the lab:
`source scripts/env.sh; pytest -s molecule/pipeline/tests/test_alerts.py` (-s prints the timings).
"""

import base64
import ipaddress
import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import testinfra
import yaml

import waiting
from promql import named_metrics

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", str(PROJECT / "inventories/lab/hosts.yml"))
ROLES = PROJECT / "roles"
SINK_SCRIPT = Path(__file__).resolve().parents[1] / "files" / "alert_sink.py"
SINK_UNIT = "vpsb-alert-sink.service"
SINK_PATH = "/usr/local/lib/vpsb-alert-sink/alert_sink.py"
SINK_OUT = "/var/lib/vpsb-alert-sink/received.jsonl"
SINK_PORT = 9095
COLLECTOR_UNIT = "vps-brain-collector.service"
# Time for a unit to come up and for a handful of HTTP round trips, on a loaded 2-core machine.
SLACK_S = 30


def inventory() -> dict:
    proc = subprocess.run(
        ["ansible-inventory", "-i", INVENTORY, "--list"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


INVENTORY_DATA = inventory()
BRAIN_NAME = INVENTORY_DATA["brain"]["hosts"][0]
VPS_NAMES = INVENTORY_DATA["vps"]["hosts"]
BRAIN = testinfra.get_host(f"podman://{BRAIN_NAME}")
VPS = testinfra.get_host(f"podman://{VPS_NAMES[0]}")
DEFAULTS = yaml.safe_load((ROLES / "monitoring_server" / "defaults" / "main.yml").read_text())
HOSTVARS = INVENTORY_DATA["_meta"]["hostvars"][BRAIN_NAME]


def setting(name: str):
    """The Brain's value of a monitoring_server setting: the inventory's, else the role default."""
    return HOSTVARS.get(name, DEFAULTS[name])


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


def fire_bound() -> float:
    """Collector stopped -> notification at the sink, at the latest.

    The next scrape fails (≤ scrape interval), the next evaluation makes the alert pending
    (≤ evaluation interval), it fires after `for:` at an evaluation (+ one more interval), and
    Alertmanager sends a new group after group_wait, or at the next group_interval tick when a
    group of that alert name is already open.
    """
    rule_for = setting("monitoring_server_rules_for_override") or "2m"  # VpsBrainTargetDown's
    return (
        seconds(setting("monitoring_server_scrape_interval"))
        + 2 * seconds(setting("monitoring_server_evaluation_interval"))
        + seconds(rule_for)
        + max(
            seconds(setting("monitoring_server_alert_group_wait")),
            seconds(setting("monitoring_server_alert_group_interval")),
        )
        + SLACK_S
    )


def resolve_bound() -> float:
    """Collector started -> resolution at the sink: a scrape, an evaluation, a group_interval."""
    return (
        seconds(setting("monitoring_server_scrape_interval"))
        + seconds(setting("monitoring_server_evaluation_interval"))
        + seconds(setting("monitoring_server_alert_group_interval"))
        + SLACK_S
    )


def until(probe, timeout: float, what: str):
    return waiting.wait_for(probe, what, deadline_s=timeout, every_s=1)


def prometheus(path: str) -> dict:
    """GET Prometheus's HTTP API on the Brain, at its listen address."""
    address = setting("monitoring_server_listen_address")
    address = f"[{address}]" if ":" in address else address
    url = f"http://{address}:{setting('monitoring_server_prometheus_port')}{path}"
    code = (
        "import urllib.request, sys; "
        f"sys.stdout.write(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
    )
    reply = json.loads(BRAIN.check_output(f"python3 -c {shlex.quote(code)}"))
    assert reply["status"] == "success", reply
    return reply["data"]


def received(since: float, path: str) -> list[dict]:
    """The notifications the sink got on `path` after `since` (Unix time), oldest first."""
    text = BRAIN.run(f"cat {SINK_OUT}").stdout
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [n for n in lines if n["path"] == path and n["received"] >= since]


def alerts_in(notifications: list[dict]):
    for note in notifications:
        for alert in note["body"]["alerts"]:
            yield note, alert


@pytest.fixture(scope="module", autouse=True)
def sink():
    """Start the webhook sink on the Brain unless it runs; the receivers must point at it."""
    url = f"http://127.0.0.1:{SINK_PORT}"
    assert f"{url}/alerts" in setting("monitoring_server_alert_webhooks"), (
        "monitoring_server_alert_webhooks must name the sink (inventories/lab/group_vars/all.yml)"
    )
    assert f"{url}/heartbeat" in setting("monitoring_server_heartbeat_webhooks")
    if BRAIN.run(f"systemctl is-active {SINK_UNIT}").stdout.strip() != "active":
        script = base64.b64encode(SINK_SCRIPT.read_bytes()).decode()
        BRAIN.check_output(
            f"mkdir -p {Path(SINK_PATH).parent} && echo {script} | base64 -d > {SINK_PATH}"
        )
        BRAIN.run(f"systemctl reset-failed {SINK_UNIT}")
        BRAIN.check_output(
            f"systemd-run --unit={SINK_UNIT} --property=StateDirectory=vpsb-alert-sink"
            f" /usr/bin/python3 {SINK_PATH} --port {SINK_PORT} --out {SINK_OUT}"
        )
    until(
        lambda: BRAIN.run(f"timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{SINK_PORT}'").rc == 0,
        10,
        "webhook sink listening",
    )
    BRAIN.check_output(f"touch {SINK_OUT}")


def expected_targets() -> set[tuple[str, str]]:
    """(job, host) of every target: the VPS's three, the Brain's node exporter and consumer."""
    vps = {(job, name) for name in VPS_NAMES for job in ("node", "redis", "collector")}
    return vps | {("node", BRAIN_NAME), ("consumer", BRAIN_NAME)}


def test_prometheus_scrapes_every_vps_through_the_tunnel_and_the_brain():
    network = ipaddress.ip_network(HOSTVARS["vps_brain_tunnel_network"])

    def all_up():
        targets = prometheus("/api/v1/targets?state=active")["activeTargets"]
        up = {(t["labels"]["job"], t["labels"]["host"]) for t in targets if t["health"] == "up"}
        return targets if expected_targets() <= up else None

    targets = until(all_up, 60, f"healthy scrape of {sorted(expected_targets())}")
    for target in targets:
        if target["labels"]["host"] in VPS_NAMES:
            address = target["labels"]["instance"].rsplit(":", 1)[0].strip("[]")
            assert ipaddress.ip_address(address) in network, target


def scraped_metrics() -> set[str]:
    """Names with a series now, and the families the targets announce (HELP/TYPE) with none yet.

    Prometheus's metadata names a counter family without its `_total`, a histogram without its
    `_bucket`/`_sum`/`_count`.
    """
    names = set(prometheus("/api/v1/label/__name__/values"))
    suffixes = {
        "counter": ["", "_total"],
        "histogram": ["_bucket", "_sum", "_count"],
        "summary": ["_sum", "_count"],
    }
    for family, metadata in prometheus("/api/v1/metadata").items():
        for suffix in suffixes.get(metadata[0]["type"], [""]):
            names.add(family + suffix)
    return names


def test_every_metric_of_the_rules_and_the_dashboard_is_in_the_live_scrape():
    uses = named_metrics()
    assert len(uses) > 20, uses
    # The health check's gauges appear once its minutely timer has run: wait for that, then list.
    wait_s = 2 * seconds(setting("monitoring_server_scrape_interval")) + 60 + SLACK_S
    deadline = time.monotonic() + wait_s
    while (missing := set(uses) - scraped_metrics()) and time.monotonic() < deadline:
        time.sleep(2)
    assert not missing, (
        f"named by the rules or the dashboard, absent from the scrape after {wait_s:.0f} s:\n"
        + "\n".join(f"  {name}: {', '.join(sorted(uses[name]))}" for name in sorted(missing))
    )


def test_the_heartbeat_reaches_its_own_receiver_only():
    start = time.time()
    interval = seconds(setting("monitoring_server_heartbeat_interval"))
    # Alertmanager repeats at its group_interval ticks once repeat_interval has passed: the pings
    # come every interval to twice the interval apart.
    bound = 2 * interval + seconds(setting("monitoring_server_evaluation_interval")) + SLACK_S
    notes = until(lambda: received(start, "/heartbeat"), bound, "heartbeat at the sink")
    t = notes[0]["received"] - start
    print(f"\nheartbeat arrived {t:.1f} s after the test started (bound {bound:.0f} s)")
    assert {a["labels"]["alertname"] for _, a in alerts_in(notes)} == {"VpsBrainHeartbeat"}
    assert all(a["status"] == "firing" for _, a in alerts_in(notes))
    operator = {a["labels"]["alertname"] for _, a in alerts_in(received(0, "/alerts"))}
    assert "VpsBrainHeartbeat" not in operator


def collector_down(since: float, status: str):
    """The first notification after `since` of VpsBrainTargetDown{job="collector"} in `status`."""
    for note, alert in alerts_in(received(since, "/alerts")):
        labels = alert["labels"]
        if (labels.get("alertname"), labels.get("job"), alert["status"]) == (
            "VpsBrainTargetDown",
            "collector",
            status,
        ):
            return note, alert
    return None


def test_a_stopped_collector_alerts_the_operator_and_its_restart_resolves_it():
    # Wait for a clean start: the collector's target is up, so the alert is not already firing.
    until(
        lambda: any(
            t["labels"]["job"] == "collector" and t["health"] == "up"
            for t in prometheus("/api/v1/targets")["activeTargets"]
        ),
        60,
        "collector target up",
    )
    stopped = time.time()
    VPS.check_output(f"systemctl stop {COLLECTOR_UNIT}")
    try:
        note, alert = until(lambda: collector_down(stopped, "firing"), fire_bound(), "firing alert")
        fired = note["received"] - stopped
        assert alert["labels"]["severity"] == "critical", alert
        assert alert["annotations"]["runbook_url"].endswith("#vpsbraintargetdown"), alert
        assert alert["labels"]["host"] in VPS_NAMES, alert
    finally:
        started = time.time()
        VPS.check_output(f"systemctl start {COLLECTOR_UNIT}")
    note, alert = until(lambda: collector_down(started, "resolved"), resolve_bound(), "resolution")
    resolved = note["received"] - started
    print(
        f"\nalert arrived {fired:.1f} s after the stop (bound {fire_bound():.0f} s),"
        f" resolution {resolved:.1f} s after the start (bound {resolve_bound():.0f} s)"
    )
