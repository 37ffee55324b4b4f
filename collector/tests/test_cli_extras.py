"""The VPS installs vps-brain without the store's extra (pyarrow): every VPS command still runs,
and a Brain command says which extra it needs instead of a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Run the CLI as if pyarrow were not installed: a None in sys.modules makes its import fail.
WITHOUT_PYARROW = (
    "import sys; sys.modules['pyarrow'] = None; "
    "from vps_brain.cli import main; sys.exit(main(sys.argv[1:]))"
)


def vps_brain_without_pyarrow(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_PYARROW, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_vps_commands_run_without_pyarrow() -> None:
    for command in ("collect", "trim", "simulate", "status"):
        p = vps_brain_without_pyarrow(command, "--help")
        assert p.returncode == 0, (command, p.stderr)
        assert "usage: vps-brain" in p.stdout, (command, p.stdout)
    top = vps_brain_without_pyarrow("--help")
    assert top.returncode == 0 and "replay" in top.stdout, top.stderr


def test_a_store_command_without_pyarrow_names_the_extra_it_needs(tmp_path: Path) -> None:
    config = tmp_path / "brain.yaml"
    config.write_text(f"consumer:\n  store_dir: {tmp_path / 'store'}\n")
    for argv in (["replay", str(tmp_path)], ["consume", "--config", str(config)]):
        p = vps_brain_without_pyarrow(*argv)
        assert p.returncode == 2, (argv, p.stdout, p.stderr)
        assert "needs pyarrow" in p.stderr and "vps-brain[store]" in p.stderr, (argv, p.stderr)
        assert "Traceback" not in p.stderr, p.stderr
