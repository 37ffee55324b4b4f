"""No password, from a field or a URL, appears in any output of a failing command.

A recognisable password is set where a configuration can hold one (``redis.password``, the
userinfo or ``?password=`` of ``redis.url`` and ``consumer.live_redis_url``, a mistyped key, an
environment variable, a command-line flag) in configurations that fail in several ways; every
output of the failing command (stdout, stderr, log records, metrics) is searched for it. The
configuration failures run in-process through the CLI entry point; Redis refusing the password
runs the real processes against a real redis-server.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RedisServer, free_port

from vps_brain.cli import main
from vps_brain.config import redact_url

PASSWORD = "Zq8Xw3Kp-hunter2-vpsb"
#: The password and a prefix of it: a repr cut at some length must not show a part of it either.
SECRETS = (PASSWORD, PASSWORD[:8])

# The commands that load the configuration; each must fail on a bad one.
COMMANDS = (
    ("collect", "--check-config"),
    ("trim",),
    ("consume",),
    ("status", "--once", "--interval", "0.1", "--no-vps-redis"),
)

# name -> (file name, file text, environment); each is refused by every command.
BAD_CONFIGS: dict[str, tuple[str, str, dict[str, str]]] = {
    "url with user and password, wrong scheme": (
        "c.yaml",
        f"redis:\n  url: http://collector:{PASSWORD}@127.0.0.1:1/0\n",
        {},
    ),
    "url with only a password, wrong scheme": (
        "c.yaml",
        f"redis:\n  url: 'ftp://:{PASSWORD}@127.0.0.1:1/0'\n",
        {},
    ),
    "url with a password parameter, wrong scheme": (
        "c.yaml",
        f"redis:\n  url: 'http://127.0.0.1:1/0?db=0&password={PASSWORD}'\n",
        {},
    ),
    "url from the environment": (
        "c.yaml",
        "",
        {"VPS_BRAIN__REDIS__URL": f"tcp://collector:{PASSWORD}@127.0.0.1:1/0"},
    ),
    "invalid fields beside a password and a url with one": (
        "c.yaml",
        f"redis:\n  url: redis://collector:{PASSWORD}@127.0.0.1:1/0\n"
        f"  password: {PASSWORD}\n  socket_timeout_s: -1\n"
        "collector:\n  batch_max_records: 0\n  reconnect_min_s: 60\n"
        "consumer:\n  flush_interval_s: 0\n",
        {},
    ),
    "password and password_file both set": (
        "c.yaml",
        f"redis:\n  url: redis://collector:{PASSWORD}@127.0.0.1:1/0\n"
        f"  password: {PASSWORD}\n  password_file: /nonexistent\n",
        {},
    ),
    "password under a mistyped key": (
        "c.yaml",
        f"redis:\n  pasword: {PASSWORD}\n  auth: {PASSWORD}\n",
        {},
    ),
    "password of a wrong type": (
        "c.yaml",
        f"redis:\n  password: [{PASSWORD}]\n  username: {{pw: {PASSWORD}}}\n",
        {},
    ),
    "password from the environment beside an invalid field": (
        "c.yaml",
        "collector:\n  batch_max_records: 0\n",
        {"VPS_BRAIN__REDIS__PASSWORD": PASSWORD, "VPS_BRAIN__REDIS__URL": "http://x"},
    ),
    "YAML syntax error on the password line": (
        "c.yaml",
        f"redis:\n  password: {PASSWORD}: oops\n",
        {},
    ),
    "YAML syntax error after the password": (
        "c.yaml",
        f"redis:\n  password: {PASSWORD}\n   url: [unclosed\n",
        {},
    ),
    "TOML syntax error on the password line": (
        "c.toml",
        f'[redis]\npassword = "{PASSWORD}\n',
        {},
    ),
}


def assert_no_secret(text: str, what: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{what}: {secret!r} appears in:\n{text}"


def run_in_process(
    argv: list[str], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> tuple[int, str]:
    """``vps-brain <argv>`` in this process: its exit code and everything it printed or logged."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        code = main(argv)
    out, err = capsys.readouterr()
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    return code, f"{out}\n{err}\n{logged}"


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_refused_configuration_never_shows_the_password(
    case: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    name, text, env = BAD_CONFIGS[case]
    cfg = tmp_path / name
    cfg.write_text(text)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    for command in COMMANDS:
        code, output = run_in_process([*command, "--config", str(cfg)], capsys, caplog)
        assert code == 2, f"{command[0]} accepted the configuration ({case}):\n{output}"
        assert "redis" in output or "config" in output, output  # it says what is wrong
        assert_no_secret(output, f"{command[0]} ({case})")


@pytest.fixture
def good_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "good.yaml"
    cfg.write_text(
        f"redis:\n  url: redis://collector:{PASSWORD}@127.0.0.1:1/0\n"
        f"collector:\n  spool_dir: {tmp_path / 'spool'}\n"
        f"consumer:\n  store_dir: {tmp_path / 'store'}\n"
    )
    return cfg


def run_process(argv: list[str], timeout_s: float = 60) -> tuple[int, str]:
    """``vps-brain <argv>`` as a process: its exit code and all it wrote (stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPS_BRAIN__")}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "vps_brain.cli", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{argv} accepted its settings and ran for {timeout_s} s: {exc.stderr!r}")
    return done.returncode, f"{done.stdout}\n{done.stderr}"


@pytest.mark.parametrize(
    "argv",
    [
        ["collect", "--check-config", "--redis-url", f"http://collector:{PASSWORD}@127.0.0.1:1/0"],
        ["collect", "--check-config", "--redis-url", f"http://127.0.0.1:1/0?password={PASSWORD}"],
        ["collect", "--check-config", "--metrics-port", "99999"],
        ["consume", "--redis-url", f"http://collector:{PASSWORD}@127.0.0.1:1/0"],
        ["consume", "--live-url", f"http://:{PASSWORD}@127.0.0.1:1/0"],
        ["consume", "--flush-interval", "-1"],
    ],
    ids=lambda argv: " ".join(a.split("@")[-1] for a in argv[:3]),
)
def test_a_refused_command_line_override_never_shows_the_password(
    argv: list[str], good_config: Path
) -> None:
    code, output = run_process([*argv, "--config", str(good_config)], timeout_s=20)
    assert code == 2, f"{argv} was accepted:\n{output}"
    assert_no_secret(output, " ".join(argv))


def test_a_refused_live_feed_url_never_shows_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"consumer:\n  live: true\n  live_redis_url: 'http://:{PASSWORD}@127.0.0.1/0'\n")
    code, output = run_in_process(
        ["collect", "--check-config", "--config", str(cfg)], capsys, caplog
    )
    assert code == 2, output
    assert "consumer.live_redis_url" in output
    assert_no_secret(output, "live_redis_url")


# ------------------------------------------------------------------ Redis refusing the password


@pytest.fixture
def redis_refusing(redis_server: RedisServer) -> RedisServer:
    """A redis-server whose password is another one than PASSWORD."""
    redis_server.client().config_set("requirepass", "the-right-one")
    return redis_server


class Process:
    """A ``vps-brain`` process whose stdout and stderr are collected line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vps_brain.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("VPS_BRAIN__")},
        )
        self.lines: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, args=(pipe,), daemon=True)
            for pipe in (self.proc.stdout, self.proc.stderr)
        ]
        for t in self._threads:
            t.start()

    def _read(self, pipe: object) -> None:
        for line in pipe:  # type: ignore[attr-defined]
            self.lines.append(line)

    def until(self, cond: Callable[[str], bool], what: str, limit_s: float = 30) -> None:
        deadline = time.monotonic() + limit_s
        while not any(cond(line) for line in list(self.lines)):
            assert self.proc.poll() is None or any(cond(x) for x in self.lines), self.output()
            assert time.monotonic() < deadline, f"no {what} within {limit_s} s:\n{self.output()}"
            time.sleep(0.05)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for t in self._threads:
            t.join(timeout=10)
        return self.output()

    def output(self) -> str:
        return "".join(self.lines)


def test_redis_refusing_the_password_never_shows_it(
    redis_refusing: RedisServer, tmp_path: Path
) -> None:
    metrics_port = free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"redis:\n  url: redis://default:{PASSWORD}@127.0.0.1:{redis_refusing.port}/0\n"
        "collector:\n  ws_url: ws://127.0.0.1:1\n  rest_url: http://127.0.0.1:1\n"
        f"  spool_dir: {tmp_path / 'spool'}\n  metrics_port: {metrics_port}\n"
        f"consumer:\n  store_dir: {tmp_path / 'store'}\n  metrics_port: 0\n"
        f"  live: true\n  live_redis_url: redis://:{PASSWORD}@127.0.0.1:{redis_refusing.port}/0\n"
    )
    cfg_field = tmp_path / "field.yaml"
    cfg_field.write_text(
        f"redis:\n  url: redis://127.0.0.1:{redis_refusing.port}/0\n  password: {PASSWORD}\n"
        f"consumer:\n  store_dir: {tmp_path / 'store2'}\n  metrics_port: 0\n"
    )
    # The password as a URL parameter: the collector's start-up line names the URL it writes to.
    cfg_query = tmp_path / "query.yaml"
    cfg_query.write_text(
        f"redis:\n  url: 'redis://127.0.0.1:{redis_refusing.port}/0?password={PASSWORD}'\n"
        "collector:\n  ws_url: ws://127.0.0.1:1\n  rest_url: http://127.0.0.1:1\n"
        f"  spool_dir: {tmp_path / 'spool3'}\n  metrics_port: {free_port()}\n"
    )
    col = Process("collect", "--config", str(cfg))
    cons = Process("consume", "--config", str(cfg_field))
    col_query = Process("collect", "--config", str(cfg_query))
    try:
        col.until(lambda line: "invalid username-password" in line, "refusal logged by collect")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read()
        assert_no_secret(metrics.decode(), "collector metrics")
        cons.until(lambda line: "AuthenticationError" in line, "refusal logged by consume")
        col_query.until(
            lambda line: "invalid username-password" in line, "refusal logged by collect (query)"
        )
    finally:
        outputs = {
            "collect": col.stop(),
            "consume": cons.stop(),
            "collect, password as a URL parameter": col_query.stop(),
        }
    assert "collector started" in outputs["collect, password as a URL parameter"]
    for config in (cfg, cfg_field):
        for command in (["trim"], ["status", "--once", "--interval", "0.1"]):
            p = Process(*command, "--config", str(config))
            p.proc.wait(timeout=60)
            outputs[f"{command[0]} with {config.name}"] = p.stop()
    for what, output in outputs.items():
        assert "invalid username-password" in output or "AuthenticationError" in output, (
            f"{what} did not report the refusal:\n{output}"
        )
        assert_no_secret(output, what)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://collector:{PASSWORD}@10.8.0.1:6379/0", "redis://collector:***@10.8.0.1:6379/0"),
        (f"redis://:{PASSWORD}@127.0.0.1/0", "redis://:***@127.0.0.1/0"),
        (f"redis://{PASSWORD}@127.0.0.1/0", "redis://***@127.0.0.1/0"),
        (f"redis://u:{PASSWORD}@x@127.0.0.1/0", "redis://u:***@127.0.0.1/0"),
        (f"unix://u:{PASSWORD}@/run/redis.sock?db=0", "unix://u:***@/run/redis.sock?db=0"),
        (f"redis://h/0?db=1&password={PASSWORD}&x=1", "redis://h/0?db=1&password=***&x=1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_redact_url_hides_the_password_and_keeps_the_rest(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(f"cannot reach {url!r}: refused") == f"cannot reach {shown!r}: refused"
