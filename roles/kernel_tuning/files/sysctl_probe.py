"""Report, for each NAME=VALUE on the command line, the kernel parameter's state against VALUE.

Prints one JSON object: {name: null} for a parameter the kernel (or this namespace) lacks, else
{name: {"value": "<whitespace-normalised value>", "writable": bool, "differs": bool}}, where
"differs" compares the running value with VALUE, both whitespace-normalised (sysctl prints
"4096 87380 16777216" with tabs). Reads only.
"""

import json
import os
import sys

report = {}
for arg in sys.argv[1:]:
    name, _, wanted = arg.partition("=")
    path = "/proc/sys/" + name.replace(".", "/")
    if not os.path.isfile(path):
        report[name] = None
        continue
    try:
        with open(path) as handle:
            value = " ".join(handle.read().split())
    except OSError:
        value = None
    report[name] = {
        "value": value,
        "writable": os.access(path, os.W_OK),
        "differs": value != " ".join(wanted.split()),
    }
print(json.dumps(report))
