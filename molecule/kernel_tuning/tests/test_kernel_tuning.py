"""kernel_tuning in a container: the drop-in is complete, the boot-time pieces are in place.

Two containers: vpsb-kernel-tuning has no cpufreq (the host's /sys, as in most VMs), so the
governor step is reported as skipped and writes nothing; vpsb-kernel-tuning-cpufreq points
kernel_tuning_cpu_sysfs_dir at a tree fabricated by converge.yml, where the governor is applied.
"""

import os
import subprocess
from pathlib import Path

import testinfra
import yaml

DROPIN = "/etc/sysctl.d/60-vps-brain.conf"
DEFAULTS = Path(__file__).parents[3] / "roles" / "kernel_tuning" / "defaults" / "main.yml"
NO_CPUFREQ = testinfra.get_host("podman://vpsb-kernel-tuning")
CPUFREQ = testinfra.get_host("podman://vpsb-kernel-tuning-cpufreq")
SYS_CPU = "/sys/devices/system/cpu"
FAKE_CPU = "/srv/fake-sys/devices/system/cpu"
GOVERNOR_UNIT = "vps-brain-cpu-governor.service"
ALL_PERFORMANCE = {"cpu0": "performance", "cpu1": "performance", "cpu2": "performance"}
SKIP_MESSAGE = (
    "Skipped the CPU frequency governor (performance): no cpufreq here"
    f" ({SYS_CPU}/cpu*/cpufreq/scaling_governor missing; in a container the host decides"
)


def proc_sys(key):
    return "/proc/sys/" + key.replace(".", "/")


def active_lines(host):
    lines = host.file(DROPIN).content_string.splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def test_sysctl_dropin_holds_every_parameter_this_kernel_has(host):
    dropin = host.file(DROPIN)
    assert dropin.exists and dropin.user == "root"
    written = dict(line.split("=", 1) for line in active_lines(host))
    defaults = yaml.safe_load(DEFAULTS.read_text())
    wanted = defaults["kernel_tuning_sysctl"] | {"vm.nr_hugepages": "16"}
    present = {k: v for k, v in wanted.items() if host.file(proc_sys(k)).exists}
    # A container's namespace hides some keys (net.core.default_qdisc); the core ones must be there.
    assert {"net.ipv4.tcp_congestion_control", "vm.swappiness", "vm.nr_hugepages"} <= present.keys()
    assert written == present


def test_parameters_the_kernel_lacks_are_commented_out_with_the_reason(host):
    assert not [line for line in active_lines(host) if "tcp_no_such_parameter" in line]
    assert (
        "# net.ipv4.tcp_no_such_parameter=1  (skipped: not present here)"
        in host.file(DROPIN).content_string
    )


def test_dropin_is_accepted_by_sysctl_syntax(host):
    # Every non-comment line is key=value with a key that exists on this kernel.
    for line in active_lines(host):
        key, sep, value = line.partition("=")
        assert sep and value, line
        assert host.file(proc_sys(key.strip())).exists, key


def test_bbr_loads_at_boot(host):
    assert host.file("/etc/modules-load.d/vps-brain-bbr.conf").content_string.strip() == "tcp_bbr"


def test_swap_stays_off(host):
    assert host.run("systemctl is-enabled swap.target").stdout.strip() == "masked"
    assert host.run("swapon --show --noheadings").stdout.strip() == ""


def test_thp_unit_is_enabled_and_not_failed(host):
    unit = host.service("vps-brain-thp.service")
    assert unit.is_enabled
    assert host.run("systemctl is-failed vps-brain-thp.service").stdout.strip() != "failed"
    assert (
        "echo never > /sys/kernel/mm/transparent_hugepage/enabled"
        in host.file("/etc/systemd/system/vps-brain-thp.service").content_string
    )


def cpu_dir(host):
    return FAKE_CPU if host.backend.name == "vpsb-kernel-tuning-cpufreq" else SYS_CPU


def unit_properties(host, *names):
    out = host.check_output(f"systemctl show {' '.join('-p ' + n for n in names)} {GOVERNOR_UNIT}")
    return dict(line.split("=", 1) for line in out.splitlines())


def governors(host):
    return {
        cpu: host.file(f"{FAKE_CPU}/{cpu}/cpufreq/scaling_governor").content_string.strip()
        for cpu in ("cpu0", "cpu1", "cpu2")
    }


def test_governor_unit_sets_the_governor_on_every_cpu_at_boot(host):
    unit = host.file(f"/etc/systemd/system/{GOVERNOR_UNIT}").content_string
    glob = f"{cpu_dir(host)}/cpu[0-9]*/cpufreq/scaling_governor"
    assert f"ConditionPathExistsGlob={glob}\n" in unit
    assert f"ConditionPathIsReadWrite={cpu_dir(host)}\n" in unit
    assert f'for f in {glob}; do echo performance > "$$f" || rc=1; done' in unit
    assert "WantedBy=multi-user.target" in unit
    assert host.service(GOVERNOR_UNIT).is_enabled


def test_without_cpufreq_the_governor_is_left_to_the_host_and_nothing_is_written():
    assert not NO_CPUFREQ.file(f"{SYS_CPU}/cpu0/cpufreq/scaling_governor").exists
    # At boot the unit's condition fails: inactive, not failed, nothing written.
    NO_CPUFREQ.check_output(f"systemctl restart {GOVERNOR_UNIT}")
    assert unit_properties(NO_CPUFREQ, "ActiveState", "ConditionResult") == {
        "ActiveState": "inactive",
        "ConditionResult": "no",
    }
    assert NO_CPUFREQ.run(f"systemctl is-failed {GOVERNOR_UNIT}").stdout.strip() != "failed"


def test_with_cpufreq_the_governor_is_set_now_on_the_cpus_that_have_one():
    assert governors(CPUFREQ) == ALL_PERFORMANCE
    # cpu3 has no cpufreq directory and the cpufreq/ entry is not a CPU: nothing created there.
    assert not CPUFREQ.file(f"{FAKE_CPU}/cpu3/cpufreq").exists
    assert not CPUFREQ.file(f"{FAKE_CPU}/cpufreq/scaling_governor").exists


def test_the_boot_unit_sets_the_governor_again():
    CPUFREQ.check_output(
        f"echo powersave > {FAKE_CPU}/cpu0/cpufreq/scaling_governor;"
        f" echo powersave > {FAKE_CPU}/cpu1/cpufreq/scaling_governor"
    )
    CPUFREQ.check_output(f"systemctl restart {GOVERNOR_UNIT}")
    assert unit_properties(CPUFREQ, "ActiveState", "Result") == {
        "ActiveState": "active",
        "Result": "success",
    }
    assert governors(CPUFREQ) == ALL_PERFORMANCE


def test_check_mode_reports_the_skip_and_changes_nothing(tmp_path):
    # The message is only on the controller's output: run the role again, in check mode, on the
    # container without cpufreq (converge.yml's dry run covers check mode on both, fresh and not).
    playbook = tmp_path / "check.yml"
    # The converge play's variables, so a converged host has nothing to change.
    playbook.write_text(
        "- hosts: vpsb-kernel-tuning\n  roles:\n    - role: marketdata.vps_brain.kernel_tuning\n"
        "      vars:\n        kernel_tuning_hugepages: 16\n"
        "        kernel_tuning_sysctl_extra: {net.ipv4.tcp_no_such_parameter: '1'}\n"
    )
    inventory = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "inventory")
    run = subprocess.run(
        ["ansible-playbook", "-i", inventory, "--check", str(playbook)],
        capture_output=True,
        text=True,
        check=False,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    recap = out[out.rindex("PLAY RECAP") :]
    line = next(line for line in recap.splitlines() if line.startswith("vpsb-kernel-tuning "))
    assert "changed=0" in line and "failed=0" in line, line
    assert " ".join(out.split()).count(SKIP_MESSAGE) == 1, out[-3000:]
