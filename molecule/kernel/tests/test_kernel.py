"""The kernel half on a real kernel, read after side_effect.yml's reboot (BIOS -> GRUB -> kernel).

converge.yml isolated CPU 1 of the guest's two (cpu_isolation_reboot: true); what is checked here
was set up by the boot: GRUB's command line, the THP and IRQ boot units, sysctl.d, swap kept off.
"""

import json
import os
import subprocess

ISOLATED = "1"
HOUSEKEEPING = "0"
UNITS_RAN_AT_BOOT = ["vps-brain-thp.service", "vps-brain-irq-affinity.service"]


def ansible_env():
    env = dict(
        os.environ,
        ANSIBLE_PIPELINING="1",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="json",
    )
    return env


def ansible_module(module, args):
    """Run MODULE on the guest with `ansible` over the scenario's inventory; its result dict."""
    out = subprocess.run(
        [
            "ansible",
            "vpsb-kernel",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            "-m",
            module,
            "-a",
            args,
        ],
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)["plays"][0]["tasks"][0]["hosts"]["vpsb-kernel"]


def read(host, path):
    return host.file(path).content_string.strip()


def test_the_guest_booted_through_grub_with_the_isolation(host):
    cmdline = read(host, "/proc/cmdline")
    assert cmdline.startswith("BOOT_IMAGE=/boot/vmlinuz-"), cmdline  # GRUB booted it
    for param in (
        f"isolcpus=managed_irq,domain,{ISOLATED}",
        f"nohz_full={ISOLATED}",
        f"rcu_nocbs={ISOLATED}",
        f"irqaffinity={HOUSEKEEPING}",
    ):
        assert param in cmdline.split(), cmdline
    # The command line is the one the guest's own update-grub wrote into grub.cfg.
    grub_cfg = host.file("/boot/grub/grub.cfg").content_string
    kernel_args = cmdline.split(None, 1)[1]
    assert any(
        line.strip().endswith(kernel_args)
        for line in grub_cfg.splitlines()
        if line.strip().startswith("linux")
    ), kernel_args


def test_isolated_and_nohz_full_are_the_chosen_cpus(host):
    assert read(host, "/sys/devices/system/cpu/isolated") == ISOLATED
    assert read(host, "/sys/devices/system/cpu/nohz_full") == ISOLATED


def test_cpu_isolation_info_reports_no_reboot_required():
    # The module itself, run by Ansible from the controller over the scenario's inventory.
    result = ansible_module("marketdata.vps_brain.cpu_isolation_info", f"expected={ISOLATED}")
    assert result["reboot_required"] is False, result
    assert result["matches_expected"] is True, result
    assert result["configured_matches_expected"] is True, result
    assert result["isolated"] == ISOLATED, result


def test_thp_is_never_after_the_reboot(host):
    assert "[never]" in read(host, "/sys/kernel/mm/transparent_hugepage/enabled")
    assert host.service("vps-brain-thp").is_enabled


def test_sysctls_read_back_and_bbr_is_active(host):
    expected = {
        "net.ipv4.tcp_congestion_control": "bbr",
        "net.core.default_qdisc": "fq",
        "vm.swappiness": "0",
        "net.core.somaxconn": "4096",
        "net.ipv4.tcp_slow_start_after_idle": "0",
        "kernel.sched_autogroup_enabled": "0",
    }
    for key, value in expected.items():
        assert host.check_output(f"sysctl -n {key}").strip() == value, key
    assert host.check_output("lsmod | awk '$1 == \"tcp_bbr\"' | wc -l").strip() == "1"
    assert "bbr" in read(host, "/proc/sys/net/ipv4/tcp_available_congestion_control").split()


def test_swap_is_off_after_the_reboot(host):
    # The disk has a swap partition in /etc/fstab (scripts/build-vm.sh); the boot left it off.
    assert host.check_output("swapon --noheadings --show").strip() == ""
    meminfo = dict(line.split(":", 1) for line in read(host, "/proc/meminfo").splitlines())
    assert meminfo["SwapTotal"].split() == ["0", "kB"], meminfo["SwapTotal"]


def nic_irqs(host):
    """IRQ numbers of the default route's virtio NIC, from its PCI device (INTx or MSI)."""
    nic = host.check_output("ip -o -4 route show default").split(" dev ")[1].split()[0]
    pci = host.check_output(f"readlink -f /sys/class/net/{nic}/device/..")
    irqs = set(host.check_output(f"ls {pci}/msi_irqs 2>/dev/null || true").split())
    irq = read(host, f"{pci}/irq")
    if irq and irq != "0":
        irqs.add(irq)
    assert irqs, f"no IRQ found for {nic} ({pci})"
    return nic, sorted(irqs, key=int)


def test_nic_irqs_are_on_the_housekeeping_cpu_set_by_the_boot_unit(host):
    nic, irqs = nic_irqs(host)
    for irq in irqs:
        assert read(host, f"/proc/irq/{irq}/smp_affinity_list") == HOUSEKEEPING, (nic, irq)
    # The boot unit ran in this boot and succeeded (the reboot came after every Ansible change).
    unit = host.run(
        "systemctl show -p Result -p ExecMainStatus -p ActiveEnterTimestampMonotonic "
        "vps-brain-irq-affinity.service"
    ).stdout
    assert "Result=success" in unit and "ExecMainStatus=0" in unit, unit
    assert "ActiveEnterTimestampMonotonic=0\n" not in unit, unit


def test_the_boot_units_ran_in_this_boot(host):
    for unit in UNITS_RAN_AT_BOOT:
        assert host.run(f"systemctl is-failed {unit}").stdout.strip() != "failed", unit
        log = host.run(f"journalctl -b -u {unit} -o cat --no-pager").stdout
        assert log.strip(), f"{unit} has no journal in this boot"


def test_irqbalance_is_banned_from_the_isolated_cpu(host):
    assert (
        f"IRQBALANCE_BANNED_CPULIST={ISOLATED}\n"
        in host.file("/etc/default/irqbalance").content_string
    )
    assert host.service("irqbalance").is_enabled
    if host.service("irqbalance").is_running:
        environ = host.check_output("tr '\\0' '\\n' < /proc/$(pidof irqbalance)/environ")
        assert f"IRQBALANCE_BANNED_CPULIST={ISOLATED}" in environ.splitlines()
    else:
        # Seen on the 2-vCPU guest: with CPU 1 isolated, PID 1 runs on one CPU and Debian's unit
        # (ConditionCPUs=>1) skips irqbalance: nothing is left to balance, nothing touches CPU 1.
        unit = host.check_output("systemctl show -p ConditionResult irqbalance")
        assert unit.strip() == "ConditionResult=no", unit
        log = host.check_output("journalctl -b -u irqbalance -o cat --no-pager")
        assert "ConditionCPUs=>1" in log, log


def test_every_redis_thread_runs_on_the_isolated_cpu(host):
    assert host.service("redis-server").is_running
    pid = host.check_output("systemctl show -p MainPID --value redis-server").strip()
    tids = host.check_output(f"ls /proc/{pid}/task").split()
    assert len(tids) >= 4, tids  # redis-server 7 runs its bio and jemalloc threads
    for tid in tids:
        status = host.file(f"/proc/{pid}/task/{tid}/status").content_string
        allowed = [
            line.split()[1] for line in status.splitlines() if line.startswith("Cpus_allowed_list:")
        ]
        assert allowed == [ISOLATED], (tid, allowed)
        stat = read(host, f"/proc/{pid}/task/{tid}/stat")
        last_cpu = stat.rsplit(")", 1)[1].split()[36]
        assert last_cpu == ISOLATED, (tid, last_cpu)


def test_redis_answers_after_the_reboot(host):
    assert host.check_output("redis-cli -h 127.0.0.1 --no-auth-warning ping 2>&1 || true") in (
        "PONG",
        "NOAUTH Authentication required.",
    )
