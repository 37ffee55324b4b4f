#!/usr/bin/env bash
# Run every Molecule scenario (or the ones named) with the podman driver on the local image.
# Usage: scripts/test-molecule.sh [scenario ...]
#        scripts/test-molecule.sh --list-by-duration   (every scenario, longest first)
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "$0")/env.sh"
cd "$VPS_BRAIN_ROOT"

all_scenarios() {
  find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' | xargs -n1 basename | sort
}
if [ "${1:-}" = --list-by-duration ]; then
  # Seconds one scenario took on this 2-core machine, alone; scripts/test.sh starts the longest
  # first. A scenario not named here counts as 120 s.
  declare -A seen=([pipeline]=870 [firewall]=210 [redis]=190 [monitoring]=160
    [wireguard]=150 [cpu_isolation]=80 [kernel_tuning]=80 [irq_affinity]=70
    [kernel]=900)
  all_scenarios | while read -r s; do echo "${seen[$s]:-120} $s"; done | sort -k1,1nr -k2 | cut -d' ' -f2
  exit 0
fi
# scripts/test.sh has done these once before it starts the scenarios as jobs.
if [ -z "${VPSB_SETUP_DONE:-}" ]; then
  "$VPS_BRAIN_ROOT/scripts/preflight.sh" --no-probe
  "$VPS_BRAIN_ROOT/scripts/build-image.sh"
  "$VPS_BRAIN_ROOT/scripts/preflight.sh"
fi

if (($#)); then
  scenarios=("$@")
else
  mapfile -t scenarios < <(all_scenarios)
fi

declare -A result
status=0
for s in "${scenarios[@]}"; do
  echo "==> molecule test -s $s"
  start=$SECONDS
  if molecule test -s "$s"; then
    result[$s]="passed ($((SECONDS - start)) s)"
  else
    result[$s]="FAILED ($((SECONDS - start)) s)"
    status=1
  fi
done
echo
echo "Molecule scenarios (destroy, create, prepare, converge, idempotence, verify, destroy):"
for s in "${scenarios[@]}"; do printf '  %-16s %s\n' "$s" "${result[$s]}"; done
exit $status
