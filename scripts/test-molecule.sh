#!/usr/bin/env bash
# Run every Molecule scenario (or the ones named) with the podman driver on the local image.
# Usage: scripts/test-molecule.sh [scenario ...]
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "$0")/env.sh"
cd "$VPS_BRAIN_ROOT"
"$VPS_BRAIN_ROOT/scripts/preflight.sh" --no-probe
"$VPS_BRAIN_ROOT/scripts/build-image.sh"
"$VPS_BRAIN_ROOT/scripts/preflight.sh"

if (($#)); then
  scenarios=("$@")
else
  mapfile -t scenarios < <(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' \
    | xargs -n1 basename | sort)
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
