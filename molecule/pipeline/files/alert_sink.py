#!/usr/bin/env python3
"""A webhook sink for the alert tests: records every notification Alertmanager posts.

Each POST is appended to the output file as one JSON line, {"path", "received", "body"}: the URL
path (the scenario sends alerts to /alerts and the heartbeat to /heartbeat), the Unix time it
arrived, and the posted JSON. Any other method gets 405. Standard library only; it listens on
loopback and never answers anything but 200 to a well-formed POST.

    alert_sink.py --port 9095 --out /run/vpsb-alert-sink/received.jsonl
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9095)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except ValueError:
                self.send_error(400, "not JSON")
                return
            line = json.dumps({"path": self.path, "received": time.time(), "body": body})
            with lock, args.out.open("a") as out:
                out.write(line + "\n")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            self.send_error(405)

        def log_message(self, format: str, *values: object) -> None:
            pass  # journald gets nothing per request; the output file is the record

    ThreadingHTTPServer((args.listen, args.port), Sink).serve_forever()


if __name__ == "__main__":
    main()
