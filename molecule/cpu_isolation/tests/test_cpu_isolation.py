"""cpu_isolation in a 2-CPU container: the drop-in isolates the last CPU, the module agrees."""

DROPIN = "/etc/default/grub.d/90-vps-brain-isolation.cfg"


def test_dropin_isolates_the_last_cpu(host):
    online = host.file("/sys/devices/system/cpu/online").content_string.strip()
    last = max(int(part.split("-")[-1]) for part in online.split(","))
    content = host.file(DROPIN).content_string
    assert (
        'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT '
        f"isolcpus=managed_irq,domain,{last} nohz_full={last} rcu_nocbs={last} irqaffinity="
        in content
    )


def test_default_grub_is_never_edited(host):
    assert (
        not host.file("/etc/default/grub").exists
        or "isolcpus" not in host.file("/etc/default/grub").content_string
    )
