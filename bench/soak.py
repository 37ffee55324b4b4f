#!/usr/bin/env python
"""Soak the lab pipeline: memory, lag and exactly-once storage at a sustained message rate.

The lab (``scripts/lab.sh``) runs the exchange simulator, the collector and Redis on the
container ``vpsb-lab-vps`` and the consumer on ``vpsb-lab-brain``, joined by WireGuard. This script,
run on the host as root, drives everything through ``podman exec``:

1. raises the spot simulator's rate with a systemd drop-in on the VPS
   (``/etc/systemd/system/vps-brain-simulator-spot.service.d/soak.conf``: the lab's ExecStart with
   ``--depth-rate/--trade-rate/--ticker-rate`` scaled, in the lab's proportions, to ``--rate``
   messages/s in total over the lab's symbols), restarts it and the collector (a restarted
   simulator numbers trades from 1 again, which the collector would drop as duplicates) and lets
   the pipeline settle for ``--warmup-seconds``; the soak window starts after that;
2. every ``--sample-seconds`` prints one row: the memory of the collector, redis-server and the
   consumer (VmRSS of the unit's MainPID from /proc/PID/status by default, or the unit's cgroup
   ``memory.current`` with ``--memory cgroup``; the table says which), the consumer group's lag
   (XINFO GROUPS ``lag``, entries not yet delivered) and pending entries (delivered, not yet
   acknowledged), summed over the md:* streams and read on the VPS as the Redis ``monitor`` user
   (its password from the controller's credentials directory, handed to redis-cli as REDISCLI_AUTH
   in the environment of ``podman exec -e``, never on a command line), and the entry and message
   rates of the interval;
3. at the end: the achieved rates over the window, the least-squares slope of each memory series
   and of the backlog (lag + pending) over the whole window and over its second half (warm-up
   versus growth); then it stops the simulator, waits until the consumer has caught up (lag 0,
   pending 0, last delivered id = last id, on every stream) and compares, per stream, the entries
   added on the VPS during the window (XINFO STREAM ``entries-added`` deltas) with the distinct
   entries the Brain's Parquet store holds for the window, and counts stored rows that appear more
   than once (duplicates);
4. removes the drop-in and restarts the simulator at the lab's rate (and the collector), also on
   Ctrl-C, SIGTERM and failure.

PASS needs: the achieved msg/s >= ``--rate-min`` of ``--rate``, each memory slope over the second
half <= ``--rss-slope-max`` MiB/hour, the backlog slope over the second half <= ``--lag-slope-max``
entries/hour, no unit restarted in the window, every stream's stored entries = entries added, and
0 duplicates. Exit status 0 on PASS, 1 on FAIL, 2 when the soak
could not run (lab not up, drain timeout, a podman exec failed).

Run, from the repository root on the host, as root::

    scripts/lab.sh up                 # once (8-15 minutes); `scripts/lab.sh status` if it exists
    source scripts/env.sh
    python bench/soak.py              # 5,000 msg/s for 30 minutes, a sample a minute
    python bench/soak.py --minutes 4 --rate 5000 --sample-seconds 30     # a short trial
    python bench/soak.py --csv bench/results/soak.csv                      # samples kept as CSV

A paused lab must be unpaused first: ``podman unpause vpsb-lab-vps vpsb-lab-brain``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from vps_brain.frame import StreamId, parse_id

ROOT = Path(__file__).resolve().parents[1]

VPS = "vpsb-lab-vps"
BRAIN = "vpsb-lab-brain"
COLLECTOR = "vps-brain-collector.service"
REDIS = "redis-server.service"
CONSUMER = "vps-brain-consumer.service"
#: The spot simulator carries the soak's rate; the lab's futures simulators
#: (playbooks/lab_market.yml: one unit per venue) stay at the lab's rate and stop with it.
SIMULATOR = "vps-brain-simulator-spot.service"
SIMULATORS = "vps-brain-simulator-*.service"
DROPIN_DIR = f"/etc/systemd/system/{SIMULATOR}.d"
DROPIN = f"{DROPIN_DIR}/soak.conf"
VENV_PY = "/opt/vps-brain/venv/bin/python"
STORE_DATA = "/var/lib/vps-brain-consumer/store/data"
# The consumer group the Brain reads with (roles/consumer).
GROUP = "brain"
RATE_OPTIONS = ("--depth-rate", "--trade-rate", "--ticker-rate")
# Share of each channel when the lab's unit names no rates.
DEFAULT_SHARES = (0.1, 0.45, 0.45)
MIB = 1024 * 1024


class SoakError(RuntimeError):
    """The soak could not run or finish (not a FAIL of the pipeline)."""


# ------------------------------------------------------------------------------------- podman


def podman_exec(
    container: str,
    argv: Sequence[str],
    *,
    secrets: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 120.0,
) -> str:
    """Run ``argv`` in ``container`` and return its stdout.

    ``secrets`` reach the command as environment variables named by ``podman exec -e NAME``
    (no value on the command line: podman takes it from its own environment)."""
    env = dict(os.environ)
    cmd = ["podman", "exec"]
    if stdin is not None:
        cmd.append("-i")
    for name, value in (secrets or {}).items():
        env[name] = value
        cmd += ["-e", name]
    cmd += [container, *argv]
    try:
        done = subprocess.run(
            cmd,
            input=stdin,
            capture_output=True,
            text=True,
            # XINFO STREAM prints the first and last entries: binary (zstd) bytes, kept as they are.
            errors="surrogateescape",
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise SoakError(f"{container}: {argv[0]} did not finish within {timeout:.0f} s") from e
    if done.returncode != 0:
        err = (done.stderr or done.stdout).strip()[-800:]
        raise SoakError(f"{container}: {shlex.join(argv)[:120]} exited {done.returncode}: {err}")
    return done.stdout


def container_state(container: str) -> str:
    done = subprocess.run(
        ["podman", "container", "inspect", "--format", "{{.State.Status}}", container],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else "missing"


def systemctl(container: str, *args: str, timeout: float = 120.0) -> str:
    return podman_exec(container, ["systemctl", *args], timeout=timeout)


# ------------------------------------------------------------------------------- the probes

# Per unit: MainPID, NRestarts, VmRSS of the main process and the memory of the unit's cgroup
# (None where the container's systemd has no memory controller for its units, as under cgroup v1).
UNIT_PROBE = """
import json, subprocess, sys
out = {}
for unit in sys.argv[1:]:
    props = dict(line.split('=', 1) for line in subprocess.run(
        ['systemctl', 'show', '-p', 'MainPID,NRestarts,ControlGroup,ActiveState', unit],
        capture_output=True, text=True, check=True).stdout.splitlines() if '=' in line)
    pid = int(props.get('MainPID') or 0)
    rss = 0
    if pid:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    rss = int(line.split()[1]) * 1024
    cgroup = None  # cgroup v2 memory.current, else v1 memory.usage_in_bytes, if delegated
    for path in ('/sys/fs/cgroup%s/memory.current',
                 '/sys/fs/cgroup/memory%s/memory.usage_in_bytes'):
        try:
            with open(path % props.get('ControlGroup', '/-')) as f:
                cgroup = int(f.read())
            break
        except OSError:
            pass
    out[unit] = {'pid': pid, 'restarts': int(props.get('NRestarts') or 0), 'rss': rss,
                 'cgroup': cgroup, 'state': props.get('ActiveState', '')}
print(json.dumps(out))
"""

# The collector's counters (records and entries written to Redis, reconnects, gaps), summed over
# their labels, from its Prometheus endpoint on the VPS.
METRICS_PROBE = """
import json, sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
want = ('records_out', 'entries_out', 'reconnects', 'gaps', 'quarantined', 'spooled_batches')
out = dict.fromkeys(want, 0.0)
for line in text.splitlines():
    if line.startswith('#') or not line.strip():
        continue
    name = line.split('{', 1)[0].split(' ', 1)[0]
    for w in want:
        if name in ('vps_brain_collector_' + w, 'vps_brain_collector_' + w + '_total'):
            out[w] += float(line.rsplit(' ', 1)[1])
print(json.dumps(out))
"""

# XINFO STREAM and XINFO GROUPS of every md:* stream, as the monitor user (REDISCLI_AUTH from the
# environment), RESP3 replies as JSON; the first line lists the keys.
REDIS_PROBE = """
set -eu -o pipefail
cli() { redis-cli --no-auth-warning --user monitor "$@"; }
keys=$(cli --scan --pattern 'md:*' | sort)
echo "$keys" | tr '\\n' ' '; echo
for k in $keys; do printf 'XINFO STREAM %s\\nXINFO GROUPS %s\\n' "$k" "$k"; done | cli -3 --json
"""

# Per stream of the Brain's store: rows, distinct rows (entry id, record index) and distinct entry
# ids inside each stream's window (start, end], and rows per channel. argv: the store's data
# directory and a JSON object stream -> [start_ms, start_seq, end_ms, end_seq].
STORE_PROBE = """
import collections, json, pathlib, re, sys
import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
root, window = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2])
PART = re.compile(r'part-(\\d+)-(\\d+)_(\\d+)-(\\d+)\\.parquet')
tables = collections.defaultdict(list)
channels = collections.defaultdict(collections.Counter)
files = 0
for f in root.rglob('*.parquet'):
    if f.name.startswith('.'):
        continue
    part = dict(p.split('=', 1) for p in f.parent.parts if '=' in p)
    stream = 'md:%s:%s' % (part.get('exchange'), part.get('symbol'))
    if stream not in window:
        continue
    lo_ms, lo_seq, hi_ms, hi_seq = window[stream]
    m = PART.fullmatch(f.name)
    if m:
        a, b, c, d = map(int, m.groups())
        if (c, d) <= (lo_ms, lo_seq) or (a, b) > (hi_ms, hi_seq):
            continue
    t = pq.read_table(f, columns=['entry_ms', 'entry_seq', 'rec'])
    t = pa.table({n: pc.cast(t[n], pa.int64()) for n in t.column_names})
    ms, seq = t['entry_ms'], t['entry_seq']
    after = pc.or_(pc.greater(ms, lo_ms), pc.and_(pc.equal(ms, lo_ms), pc.greater(seq, lo_seq)))
    upto = pc.or_(pc.less(ms, hi_ms), pc.and_(pc.equal(ms, hi_ms), pc.less_equal(seq, hi_seq)))
    t = t.filter(pc.and_(after, upto))
    files += 1
    if t.num_rows:
        tables[stream].append(t)
        channels[stream][part.get('channel', '?')] += t.num_rows
out = {}
for stream in window:
    t = pa.concat_tables(tables[stream]) if tables[stream] else None
    rows = t.num_rows if t is not None else 0
    distinct = t.group_by(['entry_ms', 'entry_seq', 'rec']).aggregate([]).num_rows if rows else 0
    entries = t.group_by(['entry_ms', 'entry_seq']).aggregate([]).num_rows if rows else 0
    out[stream] = {'rows': rows, 'distinct_rows': distinct, 'entries': entries,
                   'channels': dict(channels[stream])}
print(json.dumps({'files': files, 'streams': out}))
"""


@dataclass
class StreamState:
    added: int
    last: StreamId
    lag: int | None
    pending: int
    delivered: StreamId | None


@dataclass
class Sample:
    t: float  # seconds since the start of the window
    memory: dict[str, int]  # unit -> bytes
    restarts: dict[str, int]  # unit -> NRestarts
    pids: dict[str, int]  # unit -> MainPID
    streams: dict[str, StreamState]
    metrics: dict[str, float]

    @property
    def lag(self) -> int:
        return sum(s.lag or 0 for s in self.streams.values())

    @property
    def pending(self) -> int:
        return sum(s.pending for s in self.streams.values())

    @property
    def added(self) -> int:
        return sum(s.added for s in self.streams.values())


def json_values(text: str) -> Iterator[Any]:
    """The replies ``redis-cli --json`` prints one after another; an error reply (printed as
    ``error:"MESSAGE"``) raises SoakError."""
    decoder = json.JSONDecoder()
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return
        error = text.startswith("error:", i)
        try:
            value, i = decoder.raw_decode(text, i + len("error:") if error else i)
        except json.JSONDecodeError as e:
            raise SoakError(f"unreadable redis-cli reply: {text[i : i + 200]!r}") from e
        if error:
            raise SoakError(f"Redis answered an error: {value}")
        yield value


@dataclass
class Lab:
    monitor_password: str
    metrics_url: str
    memory: str  # "rss" or "cgroup"
    vps_units: tuple[str, ...] = (COLLECTOR, REDIS)
    brain_units: tuple[str, ...] = (CONSUMER,)

    def units(self, container: str, units: Sequence[str]) -> dict[str, dict[str, Any]]:
        out = podman_exec(container, ["/usr/bin/python3", "-c", UNIT_PROBE, *units])
        result: dict[str, dict[str, Any]] = json.loads(out)
        return result

    def streams(self) -> dict[str, StreamState]:
        out = podman_exec(
            VPS,
            ["bash", "-c", REDIS_PROBE],
            secrets={"REDISCLI_AUTH": self.monitor_password},
        )
        first, _, rest = out.partition("\n")
        keys = first.split()
        replies = list(json_values(rest))
        if len(replies) != 2 * len(keys):
            raise SoakError(f"redis-cli answered {len(replies)} replies for {len(keys)} streams")
        streams: dict[str, StreamState] = {}
        for i, key in enumerate(keys):
            info, groups = replies[2 * i], replies[2 * i + 1]
            if not isinstance(info, dict) or not isinstance(groups, list):
                raise SoakError(f"unexpected XINFO reply for {key}: {str(info)[:200]}")
            group = next((g for g in groups if g.get("name") == GROUP), None)
            lag: int | None = None
            pending = 0
            delivered: StreamId | None = None
            if group is not None:
                lag = None if group.get("lag") is None else int(group["lag"])
                pending = int(group.get("pending") or 0)
                delivered = parse_id(str(group.get("last-delivered-id") or "0-0"))
            streams[key] = StreamState(
                added=int(info["entries-added"]),
                last=parse_id(str(info["last-generated-id"])),
                lag=lag,
                pending=pending,
                delivered=delivered,
            )
        return streams

    def metrics(self) -> dict[str, float]:
        out = podman_exec(VPS, [VENV_PY, "-c", METRICS_PROBE, self.metrics_url])
        result: dict[str, float] = json.loads(out)
        return result

    def sample(self, t: float) -> Sample:
        units = self.units(VPS, self.vps_units) | self.units(BRAIN, self.brain_units)
        for unit, u in units.items():
            if u["state"] != "active" or not u["pid"]:
                raise SoakError(f"{unit} is {u['state'] or 'unknown'} (MainPID {u['pid']})")
            if u[self.memory] is None:
                raise SoakError(
                    f"{unit}: no cgroup memory.current (nor v1 memory.usage_in_bytes) in the"
                    " container; use --memory rss"
                )
        return Sample(
            t=t,
            memory={unit: int(u[self.memory]) for unit, u in units.items()},
            restarts={unit: int(u["restarts"]) for unit, u in units.items()},
            pids={unit: int(u["pid"]) for unit, u in units.items()},
            streams=self.streams(),
            metrics=self.metrics(),
        )

    def store(self, window: Mapping[str, tuple[StreamId, StreamId]]) -> dict[str, Any]:
        arg = {k: [a[0], a[1], b[0], b[1]] for k, (a, b) in window.items()}
        out = podman_exec(
            BRAIN, [VENV_PY, "-c", STORE_PROBE, STORE_DATA, json.dumps(arg)], timeout=3600
        )
        result: dict[str, Any] = json.loads(out)
        return result


# ------------------------------------------------------------------------------ the simulator


def simulator_argv() -> list[str]:
    """The lab's simulator command line, from the unit file itself (not its drop-ins)."""
    path = systemctl(VPS, "show", "-p", "FragmentPath", "--value", SIMULATOR).strip()
    if not path:
        raise SoakError(f"{SIMULATOR} is not installed on {VPS} (playbooks/lab_market.yml)")
    text = podman_exec(VPS, ["cat", path]).replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line.removeprefix("ExecStart="))
    raise SoakError(f"no ExecStart= in {path}")


def option(argv: Sequence[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def soak_argv(lab: Sequence[str], total_rate: float) -> tuple[list[str], dict[str, float], int]:
    """The lab's command with its rates scaled, in the same proportions, to ``total_rate``."""
    symbols = [s for s in (option(lab, "--symbols") or "").split(",") if s]
    if not symbols:
        raise SoakError(f"the simulator unit names no --symbols: {shlex.join(lab)}")
    current = [float(option(lab, o) or 0) for o in RATE_OPTIONS]
    shares = [c / sum(current) for c in current] if sum(current) > 0 else list(DEFAULT_SHARES)
    per_symbol = total_rate / len(symbols)
    rates = {o: round(per_symbol * s, 2) for o, s in zip(RATE_OPTIONS, shares, strict=True)}
    argv: list[str] = []
    skip = False
    for a in lab:
        if skip:
            skip = False
            continue
        if a in RATE_OPTIONS:
            skip = True
            continue
        if a.split("=", 1)[0] in RATE_OPTIONS:
            continue
        argv.append(a)
    for o, r in rates.items():
        argv += [o, str(r)]
    return argv, rates, len(symbols)


def install_dropin(argv: Sequence[str]) -> None:
    text = (
        "# Written by bench/soak.py for the duration of a soak; it removes it at the end.\n"
        f"[Service]\nExecStart=\nExecStart={shlex.join(argv)}\n"
    )
    podman_exec(VPS, ["mkdir", "-p", DROPIN_DIR])
    podman_exec(VPS, ["sh", "-c", f"cat > {DROPIN}"], stdin=text)
    systemctl(VPS, "daemon-reload")
    restart_market()


def remove_dropin() -> None:
    """Back to the lab's rate: remove the drop-in and restart the simulator (and collector)."""
    podman_exec(
        VPS, ["sh", "-c", f"rm -f {DROPIN} && rmdir --ignore-fail-on-non-empty {DROPIN_DIR}"]
    )
    systemctl(VPS, "daemon-reload")
    restart_market()


def restart_market() -> None:
    """Restart the simulator, then the collector.

    A restarted simulator numbers trades and book updates from 1 again; the collector would take
    every message below the ids it has seen for a renewal overlap and drop it as a duplicate, for as
    long as the new simulator needs to pass the old ids (hours, after a soak). A real exchange
    never renumbers, so the collector starts afresh with it instead: before the soak window, and
    again at the end."""
    systemctl(VPS, "restart", SIMULATORS)
    systemctl(VPS, "restart", COLLECTOR)


# ------------------------------------------------------------------------------ arithmetic


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) in value per hour; None under three points."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    sxx = sum((t - mt) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    sxy = sum((t - mt) * (v - mv) for t, v in points)
    return sxy / sxx * 3600


def second_half(samples: Sequence[Sample]) -> list[Sample]:
    if not samples:
        return []
    mid = samples[-1].t / 2
    return [s for s in samples if s.t >= mid]


def fmt_slope(v: float | None, unit: str) -> str:
    return "n/a (too few samples)" if v is None else f"{v:+.2f} {unit}"


# ----------------------------------------------------------------------------------- output

SHORT = {COLLECTOR: "collector", REDIS: "redis", CONSUMER: "consumer"}


def header(memory: str) -> str:
    what = "VmRSS" if memory == "rss" else "cgroup"
    cols = [f"{SHORT[u]} {what} MiB" for u in (COLLECTOR, REDIS, CONSUMER)]
    return (
        f"{'time':>8} {'t+s':>6} "
        + " ".join(f"{c:>20}" for c in cols)
        + f" {'lag':>7} {'pending':>8} {'entries/s':>10} {'msg/s':>9}"
    )


def row(s: Sample, prev: Sample | None) -> str:
    eps = mps = "-"
    if prev is not None and s.t > prev.t:
        dt = s.t - prev.t
        eps = f"{(s.added - prev.added) / dt:.1f}"
        mps = f"{(s.metrics['records_out'] - prev.metrics['records_out']) / dt:.0f}"
    mem = " ".join(f"{s.memory[u] / MIB:>20.1f}" for u in (COLLECTOR, REDIS, CONSUMER))
    unknown = "?" if any(st.lag is None for st in s.streams.values()) else ""
    return (
        f"{time.strftime('%H:%M:%S')} {s.t:>6.0f} {mem} {str(s.lag) + unknown:>7} "
        f"{s.pending:>8} {eps:>10} {mps:>9}"
    )


def write_csv(path: Path, samples: Sequence[Sample]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        units = (COLLECTOR, REDIS, CONSUMER)
        w.writerow(["t_s", *[SHORT[u] + "_bytes" for u in units], "lag", "pending", "added"])
        for s in samples:
            w.writerow([f"{s.t:.1f}", *[s.memory[u] for u in units], s.lag, s.pending, s.added])


# --------------------------------------------------------------------------------- the soak


@dataclass
class Verdict:
    failures: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)

    def check(self, ok: bool, line: str) -> None:
        self.lines.append(f"{'PASS' if ok else 'FAIL'}  {line}")
        if not ok:
            self.failures.append(line)


def wait_drained(lab: Lab, timeout: float) -> dict[str, StreamState]:
    """Wait until nothing new arrives and the group has delivered and acknowledged everything."""
    deadline = time.monotonic() + timeout
    previous: dict[str, int] | None = None
    while True:
        streams = lab.streams()
        added = {k: s.added for k, s in streams.items()}
        caught_up = all(
            s.lag == 0 and s.pending == 0 and s.delivered == s.last for s in streams.values()
        )
        if caught_up and added == previous:
            return streams
        if time.monotonic() > deadline:
            state = {k: (s.lag, s.pending) for k, s in streams.items()}
            raise SoakError(f"the consumer did not catch up within {timeout:.0f} s: {state}")
        previous = added
        time.sleep(3)


def run(args: argparse.Namespace) -> int:
    for c in (VPS, BRAIN):
        state = container_state(c)
        if state != "running":
            raise SoakError(
                f"container {c} is {state}: run scripts/lab.sh up"
                + (f" (or podman unpause {VPS} {BRAIN})" if state == "paused" else "")
            )
    pw_file = Path(args.credentials_dir) / VPS / "redis-monitor"
    try:
        password = pw_file.read_text().strip()
    except OSError as e:
        raise SoakError(f"cannot read the monitor password {pw_file}: {e}") from e
    lab = Lab(monitor_password=password, metrics_url=args.metrics_url, memory=args.memory)
    lab.sample(0.0)  # every unit up, Redis and the metrics answer

    argv, rates, nsym = soak_argv(simulator_argv(), args.rate)
    print(
        f"soak: {args.rate:g} msg/s over {nsym} symbols for {args.minutes:g} min, a sample every "
        f"{args.sample_seconds:g} s; simulator per symbol: "
        + ", ".join(f"{o.removeprefix('--')} {r:g}/s" for o, r in rates.items()),
        flush=True,
    )
    samples: list[Sample] = []
    installed = False
    try:
        installed = True
        install_dropin(argv)
        print(
            f"soak: {DROPIN} installed, simulator and collector restarted; warm-up "
            f"{args.warmup_seconds:g} s",
            flush=True,
        )
        time.sleep(max(0.0, args.warmup_seconds - 5))
        before, t_before = lab.metrics(), time.monotonic()
        time.sleep(5)
        rate = (lab.metrics()["records_out"] - before["records_out"]) / (
            time.monotonic() - t_before
        )
        if rate < args.rate / 2:
            print(
                f"soak: WARNING: the collector writes {rate:.0f} records/s after the warm-up,"
                f" under half of {args.rate:g}",
                flush=True,
            )

        t0 = time.monotonic()
        start = lab.sample(0.0)
        samples.append(start)
        print(header(args.memory), flush=True)
        print(row(start, None), flush=True)
        duration = args.minutes * 60
        k = 1
        while True:
            due = k * args.sample_seconds
            if due > duration + 1e-6:
                break
            time.sleep(max(0.0, t0 + due - time.monotonic()))
            s = lab.sample(time.monotonic() - t0)
            print(row(s, samples[-1]), flush=True)
            samples.append(s)
            k += 1
        if args.csv:
            write_csv(Path(args.csv), samples)

        print("soak: stopping the simulators, waiting for the consumer to catch up", flush=True)
        systemctl(VPS, "stop", SIMULATORS)
        t_stop = time.monotonic()
        drained = wait_drained(lab, args.drain_timeout)
        print(f"soak: caught up {time.monotonic() - t_stop:.0f} s after the stop", flush=True)
        final_units = lab.units(VPS, lab.vps_units) | lab.units(BRAIN, lab.brain_units)

        window = {
            k: (start.streams[k].last if k in start.streams else (0, 0), s.last)
            for k, s in drained.items()
        }
        print(f"soak: reading the Brain's store for {len(window)} streams", flush=True)
        t_read = time.monotonic()
        store = lab.store(window)
        read_s = time.monotonic() - t_read
    finally:
        if installed:
            try:
                remove_dropin()
                print(f"soak: {DROPIN} removed, simulator back at the lab's rate", flush=True)
            except SoakError as e:
                print(
                    f"soak: could not remove {DROPIN} ({e}); remove it by hand: podman exec {VPS}"
                    f" sh -c 'rm -f {DROPIN} && systemctl daemon-reload && systemctl restart"
                    f" {SIMULATOR}'",
                    file=sys.stderr,
                )

    return summarize(args, samples, drained, final_units, store, read_s)


def summarize(
    args: argparse.Namespace,
    samples: Sequence[Sample],
    drained: Mapping[str, StreamState],
    final_units: Mapping[str, Mapping[str, Any]],
    store: Mapping[str, Any],
    read_s: float,
) -> int:
    """Print the summary block; 0 on PASS, 1 on FAIL."""
    verdict = Verdict()
    start, end = samples[0], samples[-1]
    span = end.t - start.t
    verdict.add(
        f"window   {span / 60:.1f} min, {len(samples)} samples every {args.sample_seconds:g} s, "
        f"target {args.rate:g} msg/s"
    )
    entries_rate = (end.added - start.added) / span if span > 0 else 0.0
    records = end.metrics["records_out"] - start.metrics["records_out"]
    msg_rate = records / span if span > 0 else 0.0
    verdict.check(
        msg_rate >= args.rate * args.rate_min,
        f"achieved {entries_rate:,.1f} entries/s (XINFO STREAM entries-added), "
        f"{msg_rate:,.0f} msg/s (collector records_out): {msg_rate / args.rate:.0%} of the "
        f"target (bound {args.rate_min:.0%})",
    )
    counted = ("reconnects", "gaps", "quarantined", "spooled_batches")
    verdict.add(
        "collector during the window: "
        + ", ".join(f"{n} {end.metrics[n] - start.metrics[n]:g}" for n in counted)
    )

    what = "VmRSS of MainPID" if args.memory == "rss" else "cgroup memory.current"
    verdict.add(f"memory   {what}: MiB at start -> end; slope over the run / its second half")
    half = second_half(samples)
    for unit in (COLLECTOR, REDIS, CONSUMER):
        series = [(s.t, s.memory[unit] / MIB) for s in samples]
        whole = slope_per_hour(series)
        late = slope_per_hour([(s.t, s.memory[unit] / MIB) for s in half])
        verdict.check(
            late is not None and late <= args.rss_slope_max,
            f"{SHORT[unit]:<9} {series[0][1]:7.1f} -> {series[-1][1]:7.1f} MiB (max "
            f"{max(v for _, v in series):.1f}); {fmt_slope(whole, 'MiB/h')} / "
            f"{fmt_slope(late, 'MiB/h')} (bound {args.rss_slope_max:g})",
        )
    for unit in (COLLECTOR, REDIS, CONSUMER):
        restarts = int(final_units[unit]["restarts"]) - start.restarts[unit]
        pids = {s.pids[unit] for s in samples} | {int(final_units[unit]["pid"])}
        verdict.check(
            restarts == 0 and len(pids) == 1,
            f"{SHORT[unit]:<9} restarts during the soak: {restarts} (MainPIDs seen: "
            f"{', '.join(map(str, sorted(pids)))})",
        )

    lags = [s.lag for s in samples]
    pend = [s.pending for s in samples]
    verdict.add(
        f"lag      entries not yet delivered: max {max(lags)}, mean {sum(lags) / len(lags):.0f}; "
        f"pending (not acked): max {max(pend)}, mean {sum(pend) / len(pend):.0f}"
    )
    whole = slope_per_hour([(s.t, float(s.lag + s.pending)) for s in samples])
    late = slope_per_hour([(s.t, float(s.lag + s.pending)) for s in half])
    verdict.check(
        late is not None and late <= args.lag_slope_max,
        f"backlog  (lag + pending) slope {fmt_slope(whole, 'entries/h')} / "
        f"{fmt_slope(late, 'entries/h')} (bound {args.lag_slope_max:g})",
    )

    verdict.add(
        f"store    {store['files']} Parquet files read in {read_s:.0f} s; per stream: entries "
        "added on the VPS in the window / distinct entries stored / rows / duplicate rows"
    )
    empty = {"entries": 0, "rows": 0, "distinct_rows": 0, "channels": {}}
    for key, state in drained.items():
        added = state.added - (start.streams[key].added if key in start.streams else 0)
        st = store["streams"].get(key, empty)
        dups = st["rows"] - st["distinct_rows"]
        odd = {c: n for c, n in st["channels"].items() if c in ("gap", "_invalid", "quarantine")}
        verdict.check(
            added == st["entries"] and dups == 0,
            f"{key:<20} {added:>9} / {st['entries']:>9} / {st['rows']:>10} / {dups}"
            + (f"  (also stored: {odd})" if odd else ""),
        )

    result = "PASS" if not verdict.failures else "FAIL"
    bar = "=" * 100
    print(f"\n{bar}\nSOAK SUMMARY: {result}")
    for line in verdict.lines:
        print("  " + line)
    print(bar, flush=True)
    return 0 if result == "PASS" else 1


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--minutes", type=float, default=30.0, help="length of the window (30)")
    p.add_argument("--rate", type=float, default=5000.0, help="total msg/s, all symbols (5000)")
    p.add_argument("--sample-seconds", type=float, default=60.0, help="sample interval (60)")
    p.add_argument(
        "--rss-slope-max",
        type=float,
        default=20.0,
        help="bound on each unit's memory slope over the second half, MiB/hour (20)",
    )
    p.add_argument(
        "--lag-slope-max",
        type=float,
        default=5000.0,
        help="bound on the lag + pending slope over the second half, entries/hour (5000)",
    )
    p.add_argument(
        "--rate-min",
        type=float,
        default=0.95,
        help="the achieved msg/s must reach this fraction of --rate (0.95)",
    )
    p.add_argument(
        "--memory",
        choices=("rss", "cgroup"),
        default="rss",
        help="rss: VmRSS of the unit's MainPID; cgroup: the unit's memory.current (rss)",
    )
    p.add_argument("--warmup-seconds", type=float, default=30.0, help="after the rate change (30)")
    p.add_argument(
        "--drain-timeout", type=float, default=600.0, help="to catch up after the stop (600)"
    )
    p.add_argument(
        "--credentials-dir",
        default=str(ROOT / "playbooks" / "credentials"),
        help="the redis role's redis_credentials_dir on the controller (playbooks/credentials)",
    )
    p.add_argument(
        "--metrics-url",
        default="http://10.8.0.1:9108/metrics",
        help="the collector's metrics, fetched on the VPS (http://10.8.0.1:9108/metrics)",
    )
    p.add_argument("--csv", help="write the samples to this CSV file too")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.sample_seconds <= 0 or args.rate <= 0:
        p.error("--minutes, --sample-seconds and --rate must be positive")
    # SIGINT too: a shell starts background jobs with it ignored, and Python keeps that.
    signal.signal(signal.SIGINT, _terminate)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    try:
        return run(args)
    except SoakError as e:
        print(f"soak: ERROR: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
