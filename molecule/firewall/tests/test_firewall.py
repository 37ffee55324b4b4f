"""firewall (ufw) on a VPS and a Brain: Redis and exporters only through the tunnel.

The stand-in listeners on the VPS bind every address, so only the firewall keeps the outsider out.
"""

import time

import pytest
import testinfra

VPS = testinfra.get_host("podman://vpsb-fw-vps")
BRAIN = testinfra.get_host("podman://vpsb-fw-brain")
OUTSIDER = testinfra.get_host("podman://vpsb-fw-out")
TUNNEL_ONLY_PORTS = [6379, 9100]


def connects(host, address, port, timeout=1.5):
    script = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(({address!r}, {port}), timeout={timeout}).close()\n"
        "except OSError as error:\n"
        "    sys.exit(str(error))\n"
    )
    return host.run("python3 -c %s", script).rc == 0


@pytest.mark.parametrize("host", [VPS, BRAIN], ids=["vps", "brain"])
def test_ufw_denies_incoming_by_default_and_starts_at_boot(host):
    status = host.check_output("ufw status verbose")
    assert "Status: active" in status
    assert "Default: deny (incoming), allow (outgoing), deny (routed)" in status
    assert host.service("ufw").is_enabled


@pytest.mark.parametrize("host", [VPS, BRAIN], ids=["vps", "brain"])
def test_ssh_only_from_the_admin_sources(host):
    rules = [line for line in host.check_output("ufw status").splitlines() if "22/tcp" in line]
    assert rules, "no SSH rule"
    assert all("192.0.2.0/24" in rule or "2001:db8::/32" in rule for rule in rules)


@pytest.mark.parametrize("host", [VPS, BRAIN], ids=["vps", "brain"])
def test_rules_dropped_from_the_variables_are_revoked(host):
    # converge.yml first applies a third admin source and a fourth tunnel port, then runs the role
    # without them: both rules are gone from the stored rules and from the running firewall.
    added = host.check_output("ufw show added")
    running = host.check_output("iptables-save")
    assert "198.51.100.0/24" not in added
    assert "198.51.100.0/24" not in running
    assert "port 9999" not in added
    assert "--dport 9999" not in running
    # What the role still names is still there.
    assert "from 192.0.2.0/24 to any port 22 proto tcp" in added
    assert "from 2001:db8::/32 to any port 22 proto tcp" in added
    assert "port 9121 proto tcp" in added


@pytest.mark.parametrize("host", [VPS, BRAIN], ids=["vps", "brain"])
def test_rules_the_role_does_not_own_are_kept(host):
    assert "ufw allow 8080/tcp comment 'operator rule'" in host.check_output("ufw show added")


@pytest.mark.parametrize("port", TUNNEL_ONLY_PORTS)
def test_stand_in_listens_on_every_address_of_the_vps(port):
    # Control: the service is up and bound to every address: a refusal below is the firewall's.
    assert f"0.0.0.0:{port}" in VPS.check_output(f"ss -Htln 'sport = :{port}'")
    assert connects(VPS, "127.0.0.1", port)


def test_outsider_reaches_the_vps_network_at_all():
    # Control: ping is allowed, so the VPS is routable from the outsider.
    assert OUTSIDER.run("ping -c 1 -W 2 vpsb-fw-vps").rc == 0


@pytest.mark.parametrize("port", TUNNEL_ONLY_PORTS)
def test_outsider_cannot_reach_redis_or_exporters(port):
    assert not connects(OUTSIDER, "vpsb-fw-vps", port)


@pytest.mark.parametrize("port", TUNNEL_ONLY_PORTS)
def test_brain_cannot_reach_them_outside_the_tunnel(port):
    assert not connects(BRAIN, "vpsb-fw-vps", port)


@pytest.mark.parametrize("port", TUNNEL_ONLY_PORTS)
def test_brain_reaches_redis_and_exporters_through_the_tunnel(port):
    assert connects(BRAIN, "10.8.0.1", port)


def test_wireguard_port_is_open_for_a_fresh_handshake():
    assert "51820/udp" in VPS.check_output("ufw status")
    # A restarted Brain dials from a new source port: no conntrack state carries it, only the
    # firewall's WireGuard rule lets the new handshake in.
    before = BRAIN.check_output("wg show wg0 listen-port")
    BRAIN.check_output("systemctl restart wg-quick@wg0")
    assert BRAIN.check_output("wg show wg0 listen-port") != before
    for _ in range(20):
        if BRAIN.run("ping -c 1 -W 1 10.8.0.1").rc == 0:
            break
        time.sleep(0.5)
    else:
        pytest.fail("no handshake through the firewall after restarting the Brain's tunnel")
    assert connects(BRAIN, "10.8.0.1", 6379)
