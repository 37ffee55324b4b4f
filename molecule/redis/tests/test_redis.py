"""redis in a 2-CPU container: ACL users per purpose, bounded buffer, AOF, pinned to CPU 1."""

import os
from pathlib import Path

import pytest

CREDENTIALS = (
    Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
    / "credentials"
    / "vpsb-redis"
)
USERS = ("collector", "brain", "monitor", "bench")


def password(user):
    return (CREDENTIALS / f"redis-{user}").read_text().split()[0]


def cli(host, user, *args):
    env = f"REDISCLI_AUTH={password(user)} " if user else ""
    quoted = " ".join(f"'{a}'" for a in args)
    return host.run(f"{env}redis-cli --no-auth-warning {'--user ' + user if user else ''} {quoted}")


def test_passwords_are_kept_on_the_controller_only_readable_by_the_owner():
    for user in USERS:
        path = CREDENTIALS / f"redis-{user}"
        assert path.stat().st_mode & 0o777 == 0o600
        assert len(password(user)) == 32


def test_redis_runs_enabled(host):
    svc = host.service("redis-server")
    assert svc.is_running and svc.is_enabled


def test_redis_listens_on_loopback_and_the_tunnel_address_only(host):
    tunnel = host.run("ip -4 -o route get 192.0.2.1").stdout.split(" src ")[1].split()[0]
    listening = host.run("ss -Htlnp sport = :6379").stdout
    local = sorted(line.split()[3] for line in listening.splitlines())
    assert local == sorted(["127.0.0.1:6379", f"{tunnel}:6379"])


def test_default_user_is_off(host):
    assert "NOAUTH" in host.run("redis-cli PING").stdout
    assert (
        "WRONGPASS" in host.run("redis-cli --no-auth-warning --user default --pass '' PING").stderr
    )


def test_collector_writes_market_streams_only(host):
    assert cli(host, "collector", "XADD", "md:x", "*", "k", "v").stdout.strip().count("-") == 1
    assert "NOPERM" in cli(host, "collector", "XADD", "other:x", "*", "k", "v").stdout
    assert "NOPERM" in cli(host, "collector", "FLUSHALL").stdout
    assert "NOPERM" in cli(host, "collector", "CONFIG", "SET", "maxmemory", "1").stdout


@pytest.mark.parametrize(
    "command",
    [
        ("XADD", "md:x", "*", "k", "v"),
        ("DEL", "md:x"),
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("CONFIG", "SET", "maxmemory-policy", "allkeys-lru"),
        ("XGROUP", "DESTROY", "md:x", "brain"),
    ],
)
def test_brain_cannot_write_or_reconfigure(host, command):
    assert "NOPERM" in cli(host, "brain", *command).stdout


def test_brain_reads_and_acknowledges_with_its_group(host):
    entry = cli(host, "collector", "XADD", "md:y", "*", "k", "v").stdout.strip()
    created = cli(host, "brain", "XGROUP", "CREATE", "md:y", "g", "0").stdout
    assert "OK" in created or "BUSYGROUP" in created
    read = cli(
        host, "brain", "XREADGROUP", "GROUP", "g", "c", "COUNT", "100", "STREAMS", "md:y", ">"
    ).stdout
    assert entry in read
    assert cli(host, "brain", "XACK", "md:y", "g", entry).stdout.strip() == "1"


def test_brain_reads_server_info_for_its_dashboard(host):
    assert "maxmemory:" in cli(host, "brain", "INFO", "memory").stdout


def test_bench_sets_gets_and_unlinks_its_own_keys(host):
    assert cli(host, "bench", "SET", "vpsb:bench:x", "v").stdout.strip() == "OK"
    assert cli(host, "bench", "GET", "vpsb:bench:x").stdout.strip() == "v"
    assert cli(host, "bench", "UNLINK", "vpsb:bench:x").stdout.strip() == "1"


@pytest.mark.parametrize(
    "command",
    [
        ("GET", "md:x"),
        ("XRANGE", "md:x", "-", "+"),
        ("XREAD", "STREAMS", "md:x", "0"),
        ("XADD", "md:x", "*", "k", "v"),
        ("SET", "md:x", "v"),
        ("DEL", "md:x"),
        ("UNLINK", "md:x"),
        ("SCAN", "0"),
        ("FLUSHALL",),
        ("CONFIG", "GET", "maxmemory"),
        ("SET", "other:x", "v"),
    ],
)
def test_bench_cannot_touch_market_data_or_anything_else(host, command):
    cli(host, "collector", "XADD", "md:x", "*", "k", "v")
    assert "NOPERM" in cli(host, "bench", *command).stdout
    assert cli(host, "monitor", "XLEN", "md:x").stdout.strip() not in ("", "0")


def test_memory_and_persistence_settings(host):
    def get(name):
        return cli(host, "monitor", "CONFIG", "GET", name).stdout.splitlines()[1]

    assert get("maxmemory-policy") == "noeviction"
    assert int(get("maxmemory")) > 0
    assert get("appendonly") == "yes"
    assert get("appendfsync") == "everysec"
    assert get("save") == "900 1 300 10 60 10000"
    assert "redis_version:7" in cli(host, "monitor", "INFO", "server").stdout
    assert "NOPERM" in cli(host, "monitor", "XADD", "md:x", "*", "k", "v").stdout


def test_every_redis_thread_is_pinned_to_cpu_1(host):
    pid = host.run("systemctl show -p MainPID --value redis-server").stdout.strip()
    assert pid != "0"
    tasks = host.run(f"ls /proc/{pid}/task").stdout.split()
    assert len(tasks) >= 2
    for tid in tasks:
        status = host.file(f"/proc/{pid}/task/{tid}/status").content_string
        cpus = next(
            line.split()[1] for line in status.splitlines() if line.startswith("Cpus_allowed_list")
        )
        assert cpus == "1", tid


def test_acl_file_holds_hashes_not_passwords(host):
    acl = host.file("/etc/redis/users.acl")
    assert acl.user == "redis" and acl.group == "redis" and acl.mode == 0o640
    content = acl.content_string
    for user in USERS:
        assert password(user) not in content
        assert f"user {user} reset on #" in content
    assert "user default off" in content


def test_settings_are_included_once_from_debians_file(host):
    conf = host.file("/etc/redis/redis.conf").content_string
    assert conf.count("include /etc/redis/vps-brain.conf") == 1
    dropin = host.file("/etc/systemd/system/redis-server.service.d/vps-brain.conf").content_string
    assert "CPUAffinity=1" in dropin and "MemoryMax=" in dropin and "LimitNOFILE=" in dropin
