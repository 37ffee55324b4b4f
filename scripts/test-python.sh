#!/usr/bin/env bash
# The Python package's tests: real redis-server processes on loopback, the simulator as exchange.
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "$0")/env.sh"
cd "$VPS_BRAIN_ROOT/collector"
pytest -q -p no:testinfra "$@"
