"""irq_affinity in a container: boot unit and irqbalance configured; the script really works."""

SCRIPT = "/usr/local/sbin/vps-brain-irq-affinity"


def test_irqbalance_is_banned_from_the_isolated_cpu(host):
    assert host.package("irqbalance").is_installed
    assert "IRQBALANCE_BANNED_CPULIST=1\n" in host.file("/etc/default/irqbalance").content_string
    assert host.service("irqbalance").is_enabled


def test_boot_unit_is_enabled(host):
    assert host.service("vps-brain-irq-affinity").is_enabled
    assert host.run("systemctl is-failed vps-brain-irq-affinity").stdout.strip() != "failed"


def test_script_pins_the_nic_irqs_on_a_fabricated_tree(host):
    iface = host.run("ip -o -4 route show default").stdout.split(" dev ")[1].split()[0]
    root = "/tmp/irq-tree"
    interrupts = "\\n".join(
        [
            "           CPU0       CPU1",
            f" 24:  1  0  PCI-MSI 1-edge  {iface}-TxRx-0",
            f" 25:  1  0  PCI-MSI 2-edge  {iface}-TxRx-1",
            f" 26:  1  0  PCI-MSI 3-edge  {iface}9",
        ]
    )
    msi = f"{root}/sys/class/net/{iface}/device/msi_irqs"
    setup = f"""
    rm -rf {root}; for i in 24 25 26 30; do mkdir -p {root}/proc/irq/$i; done
    printf '{interrupts}\\n' > {root}/proc/interrupts
    mkdir -p {msi} && touch {msi}/30
    for i in 24 25 26 30; do echo 0-1 > {root}/proc/irq/$i/smp_affinity_list; done
    """
    assert host.run(setup).rc == 0
    run = host.run(f"ROOT={root} {SCRIPT}")
    assert run.rc == 0, run.stderr
    affinity = {
        irq: host.file(f"{root}/proc/irq/{irq}/smp_affinity_list").content_string.strip()
        for irq in (24, 25, 26, 30)
    }
    # 24, 25 by name, 30 by msi_irqs; 26 belongs to another interface ({iface}9).
    assert affinity == {24: "0", 25: "0", 26: "0-1", 30: "0"}
