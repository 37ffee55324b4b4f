"""Report the CPU frequency governor of every CPU under the sysfs CPU directory named on the command line.

Prints one JSON list, in CPU order, with one object per CPU that has a cpufreq governor:
{"cpu": "cpu0", "path": "<dir>/cpu0/cpufreq/scaling_governor", "governor": "powersave",
 "available": ["performance", "powersave"] or null when the driver lists none, "writable": bool}.
CPUs without cpufreq/scaling_governor (no cpufreq driver: most VMs and containers) are left out,
so an empty list means there is nothing to set. Reads only.
"""

import json
import os
import re
import sys

base = sys.argv[1]
cpus = []
names = os.listdir(base) if os.path.isdir(base) else []
for name in sorted((n for n in names if re.fullmatch(r"cpu[0-9]+", n)), key=lambda n: int(n[3:])):
    cpufreq = os.path.join(base, name, "cpufreq")
    path = os.path.join(cpufreq, "scaling_governor")
    try:
        with open(path) as handle:
            governor = handle.read().strip()
    except OSError:
        continue
    try:
        with open(os.path.join(cpufreq, "scaling_available_governors")) as handle:
            available = handle.read().split() or None
    except OSError:
        available = None
    # access(2) fails with EROFS on a read-only mount (a container's /sys), even for root.
    writable = os.access(path, os.W_OK)
    cpus.append({"cpu": name, "path": path, "governor": governor, "available": available, "writable": writable})
print(json.dumps(cpus))
