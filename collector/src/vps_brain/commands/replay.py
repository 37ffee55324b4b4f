"""``vps-brain replay``: print the store in stream order (:mod:`vps_brain.consume.replay`).

The default output is the recordings' format, ``<recv_ns> <payload>`` per line, so a replay can
be fed to anything that reads shared/data/binance files; ``--format jsonl`` prints one object per
record; ``--check-book SYMBOL`` rebuilds the order book and compares it with the stored
bookTickers instead (exit 1 on a mismatch or when nothing could be compared).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from vps_brain.commands import refuse, settings_from_args
from vps_brain.config import ConfigError
from vps_brain.consume.replay import StoredRecord, iter_store
from vps_brain.frame import format_id


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="settings file (consumer.store_dir)")
    parser.add_argument("--store", type=Path, help="store directory (default: from settings)")
    parser.add_argument("--exchange", action="append", help="only this exchange (repeatable)")
    parser.add_argument("--symbol", action="append", help="only this symbol (repeatable)")
    parser.add_argument("--channel", action="append", help="only this channel (repeatable)")
    parser.add_argument(
        "--format",
        choices=["line", "jsonl"],
        default="line",
        help="line: '<recv_ns> <payload>' like the recordings; jsonl: one object per record",
    )
    parser.add_argument(
        "--check-book",
        metavar="SYMBOL",
        help="rebuild SYMBOL's order book and compare it with the stored bookTickers",
    )


def _jsonl(r: StoredRecord) -> bytes:
    doc = {
        "recv_ns": r.recv_ns,
        "stream": r.stream,
        "id": format_id(r.entry_id),
        "rec": r.rec,
        "kind": r.kind,
        "channel": r.channel,
        "payload": r.payload.decode("utf-8", "replace"),
    }
    return orjson.dumps(doc) + b"\n"


def _check_book(root: Path, args: argparse.Namespace) -> int:
    from vps_brain.orderbook import check_against_tickers

    records = iter_store(root, exchanges=args.exchange, symbols=[args.check_book])
    result = check_against_tickers(((r.kind, r.payload) for r in records), args.check_book)
    print(
        f"{args.check_book}: {result.diffs_applied} diffs applied, {result.compared} "
        f"bookTickers compared, {result.mismatches} mismatches, {result.gaps} gaps"
    )
    for line in result.examples:
        print("  " + line)
    return 0 if result.ok and result.compared > 0 else 1


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args, {"consumer.store_dir": args.store})
    except ConfigError as exc:
        return refuse("replay", exc)
    root = settings.consumer.store_dir
    if args.check_book:
        return _check_book(root, args)
    out = sys.stdout.buffer
    try:
        for r in iter_store(
            root, exchanges=args.exchange, symbols=args.symbol, channels=args.channel
        ):
            if args.format == "line":
                out.write(b"%d %s\n" % (r.recv_ns, r.payload))
            else:
                out.write(_jsonl(r))
        out.flush()
    except BrokenPipeError:
        return 0
    return 0
