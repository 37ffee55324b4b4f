"""The simulator stands alone: nothing in vps_brain.sim imports the collector or the consumer."""

from __future__ import annotations

import ast
from pathlib import Path

import vps_brain.sim

FORBIDDEN = ("vps_brain.collect", "vps_brain.consume")


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports read as inside vps_brain.sim."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = ["vps_brain", "sim"][: 2 - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def test_sim_imports_nothing_of_the_collector_or_the_consumer() -> None:
    files = sorted(Path(vps_brain.sim.__file__).parent.rglob("*.py"))
    assert files, "no simulator sources found"
    offending = {
        f"{path.name}: {name}"
        for path in files
        for name in imported_modules(path)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
    }
    assert not offending, sorted(offending)


def test_the_import_walk_sees_imports_inside_functions(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from vps_brain.collect.service import Collector\n")
    assert "vps_brain.collect.service" in imported_modules(src)
