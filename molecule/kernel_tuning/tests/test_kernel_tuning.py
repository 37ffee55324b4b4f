"""kernel_tuning in a container: the drop-in is complete, the boot-time pieces are in place."""

from pathlib import Path

import yaml

DROPIN = "/etc/sysctl.d/60-vps-brain.conf"
DEFAULTS = Path(__file__).parents[3] / "roles" / "kernel_tuning" / "defaults" / "main.yml"


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
