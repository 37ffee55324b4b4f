"""The `vps-brain` command line: one entry point, one sub-command per service.

Each sub-command lives in its own module of :mod:`vps_brain.commands` that exposes
``add_arguments(parser)`` and ``run(args) -> int`` (table :data:`COMMANDS`). Every module is
imported to build the parser, so they import their service only inside ``run``; a module whose
optional dependency is missing (:data:`EXTRAS`) is still listed and, when run, refused with the
extra that installs it, so a missing extra of one service cannot break another.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from vps_brain import __version__

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": (
        "vps_brain.commands.simulate",
        "Local fake Binance Spot: websocket streams + REST, faults",
    ),
    "collect": ("vps_brain.commands.collect", "VPS: Binance streams -> Redis Streams, loss-free"),
    "trim": ("vps_brain.commands.trim", "VPS: trim streams below what every group acknowledged"),
    "consume": (
        "vps_brain.commands.consume",
        "Brain: VPS streams -> exactly-once store, live feed",
    ),
    "replay": ("vps_brain.commands.replay", "Brain: read the store back in stream order"),
    "status": ("vps_brain.commands.status", "Dashboard: rates, lag, spool, memory, tunnel latency"),
}


# Optional dependencies, by the extra that installs them: the VPS runs without the store's.
EXTRAS: dict[str, str] = {"pyarrow": "store"}


def _missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The extra that would install the module an import missed, if it is an optional one."""
    top = (exc.name or "").split(".")[0]
    return EXTRAS.get(top)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vps-brain", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"vps-brain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(cmd)
        except ModuleNotFoundError as exc:
            if _missing_extra(exc) is None:
                raise
            # Listed, and refused with the reason when run (see main).
            cmd.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        result: int = importlib.import_module(args._module).run(args)
    except ModuleNotFoundError as exc:
        extra = _missing_extra(exc)
        if extra is None:
            raise
        print(
            f"vps-brain {args.command}: needs {exc.name}, which is not installed here; "
            f"install the package with its {extra!r} extra (pip install 'vps-brain[{extra}]')",
            file=sys.stderr,
        )
        return 2
    return result


if __name__ == "__main__":
    raise SystemExit(main())
