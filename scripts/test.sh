#!/usr/bin/env bash
# The one test command: install what is missing, then lint, Python tests, module unit tests and
# ansible-test sanity, and every Molecule scenario. Exits non-zero if any step fails.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/bootstrap.sh"

declare -a names=() results=()
status=0
run() {
  local name=$1; shift
  local start=$SECONDS
  echo; echo "################ $name ################"
  if "$@"; then results+=("passed ($((SECONDS - start)) s)"); else results+=("FAILED ($((SECONDS - start)) s)"); status=1; fi
  names+=("$name")
}
run lint "$here/lint.sh"
run python-tests "$here/test-python.sh"
run module-tests+sanity "$here/test-modules.sh"
run molecule "$here/test-molecule.sh"

echo; echo "Summary:"
for i in "${!names[@]}"; do printf '  %-22s %s\n' "${names[$i]}" "${results[$i]}"; done
exit $status
