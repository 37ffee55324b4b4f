"""``vps-brain replay``: print the store in stream order (:mod:`vps_brain.consume.replay`).

The default output is the recordings' format, ``<recv_ns> <payload>`` per line, so a replay can
be fed to anything that reads shared/data/binance files; ``--format jsonl`` prints one object per
record; ``--check-book SYMBOL`` rebuilds the order book and compares it with the stored
bookTickers instead (exit 1 on a mismatch or when nothing could be compared), by the sequence rule
of the venue that wrote it (the exchange of its partition: ``binance``, ``binance-usdm``, ...;
``--exchange`` chooses when the symbol is stored for several).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from vps_brain.commands import refuse, settings_from_args
from vps_brain.config import ConfigError
from vps_brain.consume.replay import StoredRecord, iter_store, list_parts
from vps_brain.frame import format_id


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="settings file (consumer.store_dir)")
    parser.add_argument("--store", type=Path, help="store directory (default: from settings)")
    parser.add_argument(
        "--uri",
        help="read the store, or an archive of it, at this pyarrow filesystem URI instead "
        "(file:///srv/md, s3://bucket/md?endpoint_override=host:port)",
    )
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


def _book_exchange(root: str | Path, args: argparse.Namespace) -> str | None:
    """The one exchange whose book of ``--check-book`` is checked; None (said why) if unclear."""
    symbol = args.check_book.lower()
    stored = sorted({p.exchange for p in list_parts(root, symbols=[symbol])})
    wanted = [e for e in stored if not args.exchange or e in args.exchange]
    if len(wanted) == 1:
        return wanted[0]
    if not wanted:
        print(f"vps-brain replay: no {symbol} in {root}", file=sys.stderr)
    else:
        print(
            f"vps-brain replay: {symbol} is stored for {', '.join(wanted)}: "
            "name one with --exchange",
            file=sys.stderr,
        )
    return None


def _check_book(root: str | Path, args: argparse.Namespace) -> int:
    from vps_brain.orderbook import check_against_tickers
    from vps_brain.venues import VenueError, venue_of_exchange

    exchange = _book_exchange(root, args)
    if exchange is None:
        return 1
    try:
        rule = venue_of_exchange(exchange).sequence
    except VenueError as exc:
        print(f"vps-brain replay: {exc}", file=sys.stderr)
        return 1
    records = iter_store(root, exchanges=[exchange], symbols=[args.check_book])
    result = check_against_tickers(((r.kind, r.payload) for r in records), args.check_book, rule)
    print(
        f"{exchange} {args.check_book}: {result.diffs_applied} diffs applied, {result.compared} "
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
    root: str | Path = args.uri or settings.consumer.store_dir
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
