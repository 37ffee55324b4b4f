"""Print the first TCP port in [FIRST, LAST] that nothing listens on at 127.0.0.1."""

import socket
import sys

first, last = int(sys.argv[1]), int(sys.argv[2])
for port in range(first, last + 1):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    print(port)
    sys.exit(0)
sys.exit(f"no free port in {first}-{last}")
