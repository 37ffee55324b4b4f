"""wireguard between two containers: keys stay home, the tunnel carries ping and TCP."""

import time

import pytest
import testinfra

VPS = testinfra.get_host("podman://vpsb-wg-vps")
BRAIN = testinfra.get_host("podman://vpsb-wg-brain")
SIDES = {"vps": VPS, "brain": BRAIN}
PROBE_PORT = 18080


def wg(host, field):
    return host.check_output(f"wg show wg0 {field}").strip()


@pytest.mark.parametrize("side", SIDES)
def test_private_key_stays_on_its_host_readable_by_root_only(side):
    host = SIDES[side]
    key = host.file("/etc/wireguard/wg0.key")
    assert key.exists and key.user == "root" and key.mode == 0o600
    assert host.file("/etc/wireguard").mode == 0o700
    conf = host.file("/etc/wireguard/wg0.conf")
    assert conf.mode == 0o600
    assert "PrivateKey" not in conf.content_string
    assert key.content_string.strip() not in conf.content_string


def test_each_host_has_its_own_key():
    assert VPS.file("/etc/wireguard/wg0.key").content_string != (
        BRAIN.file("/etc/wireguard/wg0.key").content_string
    )


def test_public_keys_are_exchanged():
    vps_conf = VPS.file("/etc/wireguard/wg0.conf").content_string
    brain_conf = BRAIN.file("/etc/wireguard/wg0.conf").content_string
    assert f"PublicKey = {wg(BRAIN, 'public-key')}" in vps_conf
    assert f"PublicKey = {wg(VPS, 'public-key')}" in brain_conf
    assert wg(VPS, "peers") == wg(BRAIN, "public-key")
    assert wg(BRAIN, "peers") == wg(VPS, "public-key")


def test_vps_listens_and_brain_dials_with_keepalive():
    assert wg(VPS, "listen-port") == "51820"
    conf = BRAIN.file("/etc/wireguard/wg0.conf").content_string
    assert "Endpoint = vpsb-wg-vps:51820" in conf
    assert "ListenPort" not in conf
    assert wg(BRAIN, "persistent-keepalive").split()[-1] == "25"
    assert wg(VPS, "persistent-keepalive").split()[-1] == "off"


@pytest.mark.parametrize(("side", "address"), [("vps", "10.8.0.1/24"), ("brain", "10.8.0.2/24")])
def test_seed_addresses_and_mtu(side, address):
    host = SIDES[side]
    assert f"inet {address} " in host.check_output("ip -4 -o addr show dev wg0")
    assert "mtu 1420 " in host.check_output("ip -o link show dev wg0")


@pytest.mark.parametrize("side", SIDES)
def test_wg_quick_is_enabled_and_runs_wireguard_go(side):
    host = SIDES[side]
    unit = host.service("wg-quick@wg0")
    assert unit.is_enabled and unit.is_running
    dropin = host.file("/etc/systemd/system/wg-quick@wg0.service.d/10-wireguard-go.conf")
    assert "WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go" in dropin.content_string
    assert host.run("pgrep -x wireguard-go").rc == 0


def test_ping_crosses_the_tunnel_both_ways():
    assert BRAIN.run("ping -c 3 -i 0.2 -W 2 10.8.0.1").rc == 0
    assert VPS.run("ping -c 3 -i 0.2 -W 2 10.8.0.2").rc == 0
    assert "dev wg0" in BRAIN.check_output("ip route get 10.8.0.1")
    handshake = int(wg(BRAIN, "latest-handshakes").split()[-1])
    assert handshake > 0


@pytest.fixture
def tunnel_listener():
    # A TCP service bound to the VPS's tunnel address only: reachable through wg0 or not at all.
    VPS.run("systemctl stop vpsb-wg-probe.service")
    VPS.check_output(
        "systemd-run --unit=vpsb-wg-probe --collect python3 -m http.server "
        f"--bind 10.8.0.1 --directory /srv {PROBE_PORT}"
    )
    for _ in range(50):
        if VPS.run(f"ss -Htln 'sport = :{PROBE_PORT}'").stdout.strip():
            break
        time.sleep(0.1)
    yield
    VPS.run("systemctl stop vpsb-wg-probe.service")


@pytest.mark.usefixtures("tunnel_listener")
def test_tcp_connection_crosses_the_tunnel():
    script = (
        "import urllib.request;"
        f"print(urllib.request.urlopen('http://10.8.0.1:{PROBE_PORT}/', timeout=2).status)"
    )
    assert BRAIN.check_output(f'python3 -c "{script}"') == "200"
    # The same port on the VPS's network address is not listening: the connection used the tunnel.
    connect = f"import socket; socket.create_connection(('vpsb-wg-vps', {PROBE_PORT}), timeout=2)"
    refused = BRAIN.run(f'python3 -c "{connect}"')
    assert refused.rc != 0
