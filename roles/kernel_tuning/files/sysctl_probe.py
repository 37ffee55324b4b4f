"""Report, for each kernel parameter named on the command line, its value and whether it is writable.

Prints one JSON object: {name: null} for a parameter the kernel (or this namespace) lacks,
else {name: {"value": "<whitespace-normalised value>", "writable": bool}}. Reads only.
"""

import json
import os
import sys

report = {}
for name in sys.argv[1:]:
    path = "/proc/sys/" + name.replace(".", "/")
    if not os.path.isfile(path):
        report[name] = None
        continue
    try:
        with open(path) as handle:
            value = " ".join(handle.read().split())
    except OSError:
        value = None
    report[name] = {"value": value, "writable": os.access(path, os.W_OK)}
print(json.dumps(report))
