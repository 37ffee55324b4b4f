"""playbooks/validate.yml, the operator's checklist, against the pipeline hosts.

It runs the playbook as an operator would and reads the tables it prints: every check appears
with a status, what must hold in the lab PASSes, what a container cannot have is a SKIP with the
reason, check mode changes nothing, and a real fault (the VPS's node exporter stopped, then started
again) is a critical FAIL that fails the run. That run also benchmarks Redis for real (a small
number of requests) as the redis role's bench user and must leave no vpsb:bench:* key behind.

The inventory is the scenario's (MOLECULE_INVENTORY_FILE), else the lab's, so the same test runs
against the lab:

    pytest molecule/pipeline/tests/test_validate.py \
        --hosts=podman://vpsb-lab-vps,podman://vpsb-lab-brain
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import testinfra

import waiting

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY") or Path(__file__).resolve().parents[3])
INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE") or str(PROJECT / "inventories/lab/hosts.yml")
DEADLINE_S = 60
NODE_EXPORTER = "prometheus-node-exporter.service"
BENCHMARK = "Redis benchmark SET/GET"
# Enough for a rate, few enough to take seconds.
BENCHMARK_REQUESTS = 20000

VPS_CHECKS = [
    "CPU isolation running as configured",
    "Transparent huge pages never",
    "Swap off",
    "Redis running and answering",
    "Redis threads on the isolated CPUs",
    "Collector running",
    "Collector threads on collector_cpus",
    "Redis noeviction and AOF",
    "Redis memory headroom",
    "Host memory for Redis to reach maxmemory",
    "BBR congestion control",
    "WireGuard up with a recent handshake",
    "irqbalance banned from the isolated CPUs",
    "NIC IRQs on housekeeping CPUs",
    "CPU frequency governor",
    "Exchange latency (websocket)",
    "Exchange latency (REST)",
    "Redis benchmark SET/GET",
    "Firewall active, default deny",
    "Listening only on loopback and the tunnel",
    "Exporters answering",
    "Clock synchronised",
    "Spool disk free",
]
BRAIN_CHECKS = [
    "Consumer running",
    "Consumer lag within bound",
    "Store growing",
    "VPS reachable through the tunnel",
    "Firewall active, default deny",
    "Listening only on loopback and the tunnel",
    "Exporters answering",
    "Clock synchronised",
    "Store disk free",
]
# What the lab provides, so it must PASS there (the host kernel decides THP, swap, BBR, disk).
VPS_PASS = [
    "Redis running and answering",
    "Redis threads on the isolated CPUs",
    "Collector running",
    "Collector threads on collector_cpus",
    "Redis noeviction and AOF",
    "Redis memory headroom",
    "WireGuard up with a recent handshake",
    "irqbalance banned from the isolated CPUs",
    "Exchange latency (websocket)",
    "Exchange latency (REST)",
    "Firewall active, default deny",
    "Listening only on loopback and the tunnel",
    "Exporters answering",
]
BRAIN_PASS = [
    "Consumer running",
    "Consumer lag within bound",
    "Store growing",
    "VPS reachable through the tunnel",
    "Firewall active, default deny",
    "Listening only on loopback and the tunnel",
    "Exporters answering",
]
# A container has no kernel, IRQs or clock of its own: SKIP, with the reason.
CONTAINER_SKIPS = [
    "CPU isolation running as configured",
    "NIC IRQs on housekeeping CPUs",
    "Clock synchronised",
]

# "vpsb-lab-vps: 23 checks: ..." opens a host's table; rows are "STATUS | check | detail", one
# a line as the json result format prints them (validate() asks for it).
TABLE = re.compile(r"([\w.-]+): \d+ checks: \d+ PASS")
ROW = re.compile(r"\b(PASS|WARN|FAIL|SKIP) \| (.+?) +\| (.*?)\"?,?$")
TASK = re.compile(r"^TASK \[(.*)\] \*+$", re.MULTILINE)
MEASURED = re.compile(
    r"^SET (\d+) ops/s, GET (\d+) ops/s as bench on vpsb:bench:\* \(minimum \d+, "
    + str(BENCHMARK_REQUESTS)
    + r" requests, 50 clients\); keys removed$"
)
RECAP = re.compile(
    r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE
)

T = TypeVar("T")


@dataclass
class Run:
    returncode: int
    output: str
    tables: dict[str, dict[str, tuple[str, str]]]  # host -> check -> (status, detail)

    def status(self, host: str, check: str) -> str:
        return self.tables[host][check][0]

    def tail(self) -> str:
        return self.output[-4000:]


def parse_tables(output: str) -> dict[str, dict[str, tuple[str, str]]]:
    tables: dict[str, dict[str, tuple[str, str]]] = {}
    host = None
    for line in output.splitlines():
        opened = TABLE.search(line)
        if opened:
            host = opened.group(1)
            tables[host] = {}
            continue
        row = ROW.search(line)
        if host and row:
            tables[host][row.group(2)] = (row.group(1), row.group(3))
        elif host and not line.strip().startswith(('"', "-", "|")) and "CHECK" not in line:
            host = None
    return tables


def validate(*extra: str) -> Run:
    args = ["ansible-playbook", "-i", INVENTORY, str(PROJECT / "playbooks/validate.yml"), *extra]
    # json prints each table row on one line (yaml wraps them at 80 columns).
    env = dict(
        os.environ,
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
    )
    done = subprocess.run(
        args, cwd=PROJECT, capture_output=True, text=True, check=False, env=env, timeout=900
    )
    output = done.stdout + done.stderr
    return Run(done.returncode, output, parse_tables(output))


def wait_for(probe: Callable[[], T], what: str) -> T:
    return waiting.wait_for(probe, what, deadline_s=DEADLINE_S)


@pytest.fixture(scope="module")
def inventory() -> dict[str, Any]:
    listed = subprocess.run(
        ["ansible-inventory", "-i", INVENTORY, "--list"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
    )
    data: dict[str, Any] = json.loads(listed.stdout)
    return data


@pytest.fixture(scope="module")
def vps_name(inventory: dict[str, Any]) -> str:
    return str(inventory["vps"]["hosts"][0])


@pytest.fixture(scope="module")
def brain_name(inventory: dict[str, Any]) -> str:
    return str(inventory["brain"]["hosts"][0])


@pytest.fixture(scope="module")
def vps(pytestconfig: pytest.Config, vps_name: str) -> Any:
    """The VPS as a testinfra host: the --hosts entry naming it, else podman://NAME."""
    given = (pytestconfig.getoption("hosts", None) or "").split(",")
    spec = next((h for h in given if h.rsplit("/", 1)[-1] == vps_name), f"podman://{vps_name}")
    return testinfra.get_host(spec)


# Two runs of the checklist (each about a minute): the healthy pair in check mode with the
# benchmark asked for (a read-only run must see all a real one does, and never benchmark), and a
# real run with a fault and the benchmark (exporter_stopped below).
@pytest.fixture(scope="module")
def healthy() -> Run:
    return validate("--check", "-e", "validate_benchmark=true")


@pytest.fixture(scope="module")
def check_mode(healthy: Run) -> Run:
    return healthy


def test_validate_succeeds_and_prints_a_table_per_host(
    healthy: Run, vps_name: str, brain_name: str
) -> None:
    assert healthy.returncode == 0, healthy.tail()
    assert set(healthy.tables) == {vps_name, brain_name}, healthy.tail()
    assert "No critical check failed" in healthy.output


def test_no_task_name_renders_an_error(healthy: Run, check_mode: Run) -> None:
    for run in (healthy, check_mode):
        names = TASK.findall(run.output)
        assert names, run.tail()
        assert not [n for n in names if "error" in n.lower() or "{{" in n], names


@pytest.mark.parametrize(("side", "checks"), [("vps", VPS_CHECKS), ("brain", BRAIN_CHECKS)])
def test_every_check_reports_a_status(
    healthy: Run, vps_name: str, brain_name: str, side: str, checks: list[str]
) -> None:
    table = healthy.tables[vps_name if side == "vps" else brain_name]
    assert list(table) == checks, table
    for check, (status, detail) in table.items():
        assert status in {"PASS", "WARN", "FAIL", "SKIP"}, (check, status)
        assert detail.strip(), f"{check}: no measured value or reason"


@pytest.mark.parametrize(
    ("side", "check"), [("vps", c) for c in VPS_PASS] + [("brain", c) for c in BRAIN_PASS]
)
def test_what_the_lab_provides_passes(
    healthy: Run, vps_name: str, brain_name: str, side: str, check: str
) -> None:
    status, detail = healthy.tables[vps_name if side == "vps" else brain_name][check]
    assert status == "PASS", f"{check}: {status} | {detail}"


@pytest.mark.parametrize("check", CONTAINER_SKIPS)
def test_what_a_container_cannot_have_is_skipped_with_the_reason(
    healthy: Run, vps_name: str, check: str
) -> None:
    status, detail = healthy.tables[vps_name][check]
    assert (status, detail.startswith("a container")) == ("SKIP", True), (check, detail)


def bench_keys(vps: Any) -> list[str]:
    """The vpsb:bench:* keys on the VPS, listed by the collector's user (SCAN sees every name)."""
    listed = vps.check_output(
        "REDISCLI_AUTH=$(cat /etc/vps-brain/collector.redis-password) redis-cli --no-auth-warning"
        " --user collector --scan --pattern 'vpsb:bench:*'"
    )
    return [key for key in listed.split() if key]


@pytest.fixture(scope="module")
def exporter_stopped(vps: Any, vps_name: str) -> Run:
    """Stop the VPS's node exporter, run the checklist (benchmark asked for), start it again."""
    vps.check_output(f"systemctl stop {NODE_EXPORTER}")
    try:
        return validate(
            "--limit",
            vps_name,
            "-e",
            "validate_benchmark=true",
            "-e",
            f"validate_benchmark_requests={BENCHMARK_REQUESTS}",
        )
    finally:
        vps.check_output(f"systemctl start {NODE_EXPORTER}")
        wait_for(
            lambda: vps.run("ss -Hltn 'sport = :9100'").stdout.strip(), "node exporter listening"
        )


def test_the_benchmark_is_opt_in() -> None:
    """Off unless asked for: the play's default, and the reason its row gives then."""
    play = (PROJECT / "playbooks/validate.yml").read_text()
    assert '_validate_benchmark: "{{ validate_benchmark | default(false) | bool }}"' in play
    tasks = (PROJECT / "playbooks/tasks/validate_benchmark.yml").read_text()
    assert "opt-in: -e validate_benchmark=true" in tasks


def test_check_mode_changes_nothing_and_never_benchmarks(
    check_mode: Run, vps_name: str, brain_name: str
) -> None:
    assert check_mode.returncode == 0, check_mode.tail()
    recap = {host: changed for host, changed, _, _ in RECAP.findall(check_mode.output)}
    assert recap == {vps_name: "0", brain_name: "0"}, recap
    assert list(check_mode.tables[vps_name]) == VPS_CHECKS
    status, detail = check_mode.tables[vps_name][BENCHMARK]
    assert (status, detail) == ("SKIP", "check mode: the benchmark writes vpsb:bench:* keys")


def test_a_stopped_exporter_is_a_critical_failure(exporter_stopped: Run, vps_name: str) -> None:
    run = exporter_stopped
    assert run.returncode != 0, run.tail()
    assert run.status(vps_name, "Exporters answering") == "FAIL", run.tables
    assert "node" in run.tables[vps_name]["Exporters answering"][1]
    assert run.status(vps_name, "Listening only on loopback and the tunnel") == "FAIL"
    assert run.status(vps_name, "Redis running and answering") == "PASS"
    assert "Critical checks failed: " in run.output and "Exporters answering" in run.output


def test_the_benchmark_measures_set_and_get_as_bench_and_removes_its_keys(
    exporter_stopped: Run, vps: Any, vps_name: str
) -> None:
    """A WARN (below validate_benchmark_min_ops, a busy lab) still carries both rates."""
    status, detail = exporter_stopped.tables[vps_name][BENCHMARK]
    assert status in {"PASS", "WARN"}, detail
    measured = MEASURED.match(detail)
    assert measured and all(int(rate) > 0 for rate in measured.groups()), detail
    assert bench_keys(vps) == []
