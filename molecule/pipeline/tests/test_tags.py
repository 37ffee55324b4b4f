"""Each tag of playbooks/site.yml runs its concern alone, on a provisioned pair.

`--tags X` must succeed and change nothing; the only tasks it runs outside X are those of the
always-tagged first play, which computes the shared facts through the owning roles' read-only
`facts` entry points (roles/*/tasks/facts.yml); no unit of the pipeline restarts. `--list-tasks
--tags X` lists that play and X's tasks only. A setting of one concern changed with -e changes
that concern's task alone, and the next run without it restores it.

Inside molecule verify the playbooks run against the scenario's inventory
(MOLECULE_INVENTORY_FILE); without it against the lab's, so the same file checks the lab:
`source scripts/env.sh; pytest molecule/pipeline/tests/test_tags.py`. The hosts come from the
inventory's vps and brain groups.
"""

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import testinfra
import yaml

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", str(PROJECT / "inventories/lab/hosts.yml"))
SITE = PROJECT / "playbooks" / "site.yml"
COLLECTION = "marketdata.vps_brain"
# The roles each tag runs (collector and consumer install the package through roles/package).
CONCERN_ROLES = {
    "collector": {"collector", "package", "service"},
    "consumer": {"consumer", "package", "service"},
    "monitoring": {"monitoring"},
    "redis": {"redis"},
}
# Roles whose facts entry point the always-tagged play runs.
FACT_ROLES = ("cpu_isolation", "wireguard", "redis")
# Units that must not restart while a tag runs (none of them belongs to the tags run here, except
# redis-server for the redis tag, which must leave it alone when nothing changed).
UNITS = {
    "vps": ["redis-server.service", "vps-brain-collector.service", "wg-quick@wg0.service"],
    "brain": ["vps-brain-consumer.service", "wg-quick@wg0.service"],
}

Result = dict[str, Any]


def ansible(*args: str, tool: str = "ansible-playbook") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_NOCOLOR="1")
    return subprocess.run(
        [tool, "-i", INVENTORY, *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def site(*args: str) -> Result:
    """Run site.yml with the JSON callback; return its report with the return code and stderr."""
    proc = ansible(str(SITE), *args)
    start = proc.stdout.find("{")
    assert start >= 0, (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    report: Result = json.loads(proc.stdout[start:])
    report["rc"], report["stderr"] = proc.returncode, proc.stderr
    return report


def groups() -> dict[str, list[str]]:
    proc = ansible("--list", tool="ansible-inventory")
    assert proc.returncode == 0, proc.stderr
    inventory = json.loads(proc.stdout)
    return {group: inventory[group]["hosts"] for group in ("vps", "brain")}


GROUPS = groups()
HOSTS = [host for members in GROUPS.values() for host in members]


def facts_task_names() -> set[str]:
    """The tasks of the roles' facts entry points, as the callback names them."""
    names = set()
    for role in FACT_ROLES:
        tasks = yaml.safe_load((PROJECT / "roles" / role / "tasks" / "facts.yml").read_text())
        names |= {f"{COLLECTION}.{role} : {task['name']}" for task in tasks}
        names.add(f"{COLLECTION}.{role} : Validating arguments against arg spec 'facts'")
    return names


def ran(report: Result) -> Iterator[tuple[int, str, str, Result]]:
    """(play index, task name, host, result) of every task a host did not skip."""
    for index, play in enumerate(report["plays"]):
        for task in play["tasks"]:
            for host, result in task["hosts"].items():
                if not result.get("skipped"):
                    yield index, task["task"]["name"], host, result


def role_of(task_name: str) -> str | None:
    prefix = f"{COLLECTION}."
    if " : " not in task_name or not task_name.startswith(prefix):
        return None
    return task_name.split(" : ", 1)[0].removeprefix(prefix)


def assert_ran_alone(report: Result, tag: str) -> None:
    """Succeeded everywhere; outside the facts play, only the tag's own roles ran."""
    failed = [
        (name, host, res.get("msg")) for _, name, host, res in ran(report) if res.get("failed")
    ]
    assert report["rc"] == 0 and not failed, (failed, report["stderr"][-3000:])
    stats = report["stats"]
    assert set(stats) == set(HOSTS), stats
    for host, counts in stats.items():
        assert counts["failures"] == 0 and counts["unreachable"] == 0, (host, counts)
    facts_tasks = facts_task_names()
    for play, name, host, _ in ran(report):
        role = role_of(name)
        if play == 0:
            assert role is None or any(name.startswith(n) for n in facts_tasks), (name, host)
        else:
            assert role is None or role in CONCERN_ROLES[tag], (tag, name, host)


def changed(report: Result) -> set[tuple[str, str]]:
    return {(host, name) for _, name, host, result in ran(report) if result.get("changed")}


def unit_starts() -> dict[str, str]:
    """When each pipeline unit last entered active, and its restart count, per host."""
    starts = {}
    for group, units in UNITS.items():
        for name in GROUPS[group]:
            host = testinfra.get_host(f"podman://{name}")
            props = "-p ActiveEnterTimestampMonotonic -p NRestarts -p ActiveState"
            for unit in units:
                starts[f"{name}/{unit}"] = host.check_output(f"systemctl show {props} {unit}")
    return starts


# The monitoring tag runs twice in the changed-setting test below; these two are the concerns
# that read the shared Redis passwords.
@pytest.mark.parametrize("tag", ["collector", "consumer"])
def test_a_tag_runs_its_concern_alone_and_changes_nothing_on_a_provisioned_pair(tag: str) -> None:
    before = unit_starts()
    report = site("--tags", tag)
    assert_ran_alone(report, tag)
    assert not changed(report), sorted(changed(report))
    for host, counts in report["stats"].items():
        assert counts["changed"] == 0, (host, counts)
    assert unit_starts() == before


@pytest.mark.parametrize("tag", sorted(CONCERN_ROLES))
def test_list_tasks_of_a_tag_lists_the_facts_play_and_that_concern_only(tag: str) -> None:
    proc = ansible(str(SITE), "--list-tasks", "--tags", tag)
    assert proc.returncode == 0, proc.stderr
    plays: list[list[tuple[str, list[str]]]] = []
    for line in proc.stdout.splitlines():
        if re.match(r"\s+play #\d+ ", line):
            plays.append([])
        elif (task := re.match(r"\s{6}(\S.*?)\s+TAGS: \[(.*)\]$", line)) and plays:
            plays[-1].append((task[1], [t.strip() for t in task[2].split(",") if t.strip()]))
    facts_play, *other_plays = plays
    assert facts_play and all(tags == ["always"] for _, tags in facts_play), facts_play
    listed = [task for play in other_plays for task in play]
    assert listed, proc.stdout
    for name, tags in listed:
        assert tag in tags and "always" not in tags, (name, tags)
    for name, _ in facts_play + listed:
        assert not re.search(r"grub|reboot|wg-quick", name, re.IGNORECASE), name


def test_a_changed_setting_changes_only_its_concern_and_is_restored() -> None:
    expected = {(host, f"{COLLECTION}.monitoring : Configure the health check") for host in HOSTS}
    before = unit_starts()
    try:
        report = site("--tags", "monitoring", "-e", "monitoring_health_stream_lag_max=12345")
        assert_ran_alone(report, "monitoring")
        assert changed(report) == expected
    finally:
        restored = site("--tags", "monitoring")
    assert_ran_alone(restored, "monitoring")
    assert changed(restored) == expected
    assert unit_starts() == before
