"""irq_affinity in a container: boot unit and irqbalance configured; the boot program really works.

The container has no IRQs of its own, so the boot program runs against fabricated /proc and /sys
trees (its --root option) with the unit's own arguments: an MSI NIC, a virtio NIC whose IRQs
belong to its parent PCI device, and a NIC without IRQs, which must fail loudly.
"""

import shlex

import pytest

PROGRAM = "/usr/local/sbin/vps-brain-irq-affinity"
LIBRARY = "/usr/local/lib/vps-brain-irq-affinity/irq.py"
UNIT = "/etc/systemd/system/vps-brain-irq-affinity.service"
ROOT = "/tmp/irq-tree"


def test_irqbalance_is_banned_from_the_isolated_cpu(host):
    assert host.package("irqbalance").is_installed
    assert "IRQBALANCE_BANNED_CPULIST=1\n" in host.file("/etc/default/irqbalance").content_string
    assert host.service("irqbalance").is_enabled


def test_boot_unit_is_enabled(host):
    assert host.service("vps-brain-irq-affinity").is_enabled
    assert host.run("systemctl is-failed vps-brain-irq-affinity").stdout.strip() != "failed"


def test_no_bad_interface_name_ran_anything(host):
    assert not host.file("/tmp/pwned").exists


def default_interface(host):
    return host.run("ip -o -4 route show default").stdout.split(" dev ")[1].split()[0]


def unit_argv(host):
    """The ExecStart= command line of the boot unit, split as systemd splits it."""
    lines = [
        line.split("=", 1)[1]
        for line in host.file(UNIT).content_string.splitlines()
        if line.startswith("ExecStart=")
    ]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])


def test_boot_unit_runs_the_program_with_the_interface_and_cpus(host):
    argv = unit_argv(host)
    assert argv[:4] == [PROGRAM, "--interface", default_interface(host), "--cpus"]
    # Every online CPU but the isolated one (converge.yml isolates CPU 1).
    assert argv[4] and "1" not in argv[4].split(","), argv
    # The program imports the discovery code the module uses, installed next to it by the role.
    assert host.file(LIBRARY).exists
    assert "def interface_irqs(" in host.file(LIBRARY).content_string


def fabricate(host, interrupts, irqs, links):
    """Fabricate ROOT: /proc/interrupts, /proc/irq/N for IRQS (affinity 0-1), and sysfs LINKS."""
    setup = [f"rm -rf {ROOT}"]
    for irq in irqs:
        setup.append(f"mkdir -p {ROOT}/proc/irq/{irq}")
        setup.append(f"echo 0-1 > {ROOT}/proc/irq/{irq}/smp_affinity_list")
    setup.append(f"printf '%s\\n' {shlex.quote(interrupts)} > {ROOT}/proc/interrupts")
    for command in links:
        setup.append(command.format(root=ROOT))
    run = host.run(" && ".join(setup))
    assert run.rc == 0, run.stderr


def run_as_the_unit(host):
    return host.run(shlex.join([*unit_argv(host), "--root", ROOT]))


def unit_cpus(host):
    return unit_argv(host)[4]


def affinities(host, irqs):
    return {
        irq: host.file(f"{ROOT}/proc/irq/{irq}/smp_affinity_list").content_string.strip()
        for irq in irqs
    }


def test_boot_program_pins_an_msi_nic_by_name_and_msi_irqs(host):
    iface = default_interface(host)
    pci = "sys/devices/pci0000:00/0000:00:02.0"
    fabricate(
        host,
        "\n".join(
            [
                "           CPU0       CPU1",
                f" 24:  1  0  PCI-MSI 1-edge  {iface}-TxRx-0",
                f" 25:  1  0  PCI-MSI 2-edge  {iface}-TxRx-1",
                f" 26:  1  0  PCI-MSI 3-edge  {iface}9",
            ]
        ),
        (24, 25, 26, 30),
        [
            f"mkdir -p {{root}}/{pci}/msi_irqs {{root}}/sys/class/net/{iface}",
            f"touch {{root}}/{pci}/msi_irqs/30",
            f"ln -s {{root}}/{pci} {{root}}/sys/class/net/{iface}/device",
        ],
    )
    run = run_as_the_unit(host)
    assert run.rc == 0, run.stderr
    # 24, 25 by name, 30 by msi_irqs; 26 belongs to another interface ({iface}9).
    cpus = unit_cpus(host)
    assert affinities(host, (24, 25, 26, 30)) == {24: cpus, 25: cpus, 26: "0-1", 30: cpus}


def test_boot_program_pins_a_virtio_nic_through_its_pci_device(host):
    iface = default_interface(host)
    pci = "sys/devices/pci0000:00/0000:00:03.0"
    fabricate(
        host,
        "\n".join(
            [
                "           CPU0       CPU1",
                " 37:  0  0  PCI-MSIX-0000:00:03.0  0-edge  virtio2-config",
                " 38:  0  9  PCI-MSIX-0000:00:03.0  1-edge  virtio2-input.0",
                " 39:  9  0  PCI-MSIX-0000:00:03.0  2-edge  virtio2-output.0",
                " 40:  0  0  PCI-MSIX-0000:00:04.0  0-edge  virtio20-config",
            ]
        ),
        (37, 38, 39, 40),
        [
            f"mkdir -p {{root}}/{pci}/msi_irqs {{root}}/{pci}/virtio2",
            f"mkdir -p {{root}}/sys/class/net/{iface}",
            f"cd {{root}}/{pci}/msi_irqs && touch 37 38 39",
            # As the kernel links it: the net device's "device" is the virtio device, whose
            # parent is the PCI function that owns the MSI-X vectors.
            f"ln -s {{root}}/{pci}/virtio2 {{root}}/sys/class/net/{iface}/device",
        ],
    )
    run = run_as_the_unit(host)
    assert run.rc == 0, run.stderr
    cpus = unit_cpus(host)
    assert affinities(host, (37, 38, 39, 40)) == {37: cpus, 38: cpus, 39: cpus, 40: "0-1"}


@pytest.mark.parametrize("with_sysfs", [True, False], ids=["no-irqs", "no-interface"])
def test_boot_program_fails_loudly_when_it_finds_no_irq(host, with_sysfs):
    iface = default_interface(host)
    links = [f"mkdir -p {{root}}/sys/class/net/{iface}"] if with_sysfs else []
    fabricate(host, "           CPU0       CPU1\n 24:  1  0  PCI-MSI 1-edge  other0", (24,), links)
    run = run_as_the_unit(host)
    assert run.rc != 0
    assert f"interface {iface}" in run.stderr
    assert "no IRQs found" in run.stderr or "not found" in run.stderr, run.stderr
    assert affinities(host, (24,)) == {24: "0-1"}
