#!/usr/bin/env bash
# Test the collection's custom modules (plugins/modules, plugins/module_utils):
#   1. unit tests (tests/unit, pytest through `ansible-test units`) on fabricated /proc and /sys trees;
#   2. `ansible-test sanity` on plugins/, tests/ and this script (with --all: the whole collection).
# ansible-test needs the collection under .../ansible_collections/marketdata/vps_brain, so it runs on a
# copy in .cache/ansible-test/. No containers: --local, Python 3.11.
#
# Usage: scripts/test-modules.sh [--all] [--units-only|--sanity-only]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh

PYTHON_VERSION=3.11
sanity_targets=(plugins/ tests/ scripts/test-modules.sh scripts/test-collection.sh)
run_units=1
run_sanity=1
for arg in "$@"; do
  case "$arg" in
    --all) sanity_targets=() ;;
    --units-only) run_sanity=0 ;;
    --sanity-only) run_units=0 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "test-modules: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }
fail() { printf '\ntest-modules: FAILED: %s\n' "$*" >&2; exit 1; }

[ -x .venv/bin/ansible-test ] || fail ".venv/bin/ansible-test missing: run scripts/bootstrap.sh first"

repo=$PWD
work=$repo/.cache/ansible-test/ansible_collections/marketdata/vps_brain

step "Copy the collection to ${work#"$repo"/}"
rm -rf "$work"
mkdir -p "$work"
tar -C "$repo" -cf - \
  --exclude=./.venv --exclude=./.cache --exclude=./collections --exclude=./.git \
  --exclude=./collector --exclude=./bench \
  --exclude=__pycache__ --exclude=.pytest_cache --exclude=.ruff_cache --exclude=.mypy_cache \
  --exclude=./tests/output \
  . | tar -C "$work" -xf -
# ansible-test lists a collection's files with git when it finds a repository above it: the outer
# repository ignores .cache/, so give the copy its own (untracked files count).
git -C "$work" init -q

# ansible-test bootstraps pip into its sanity venvs with a get-pip script from
# ci-files.testing.ansible.com. Where that host is unreachable, put a stand-in in its cache that does
# the same from the Python's own ensurepip and the configured package index.
python - <<'PY'
import os, pathlib, re, urllib.request
import ansible_test
source = pathlib.Path(ansible_test.__file__).parent / '_internal' / 'python_requirements.py'
version = re.search(r"pip='([0-9.]+)'", source.read_text()).group(1)
cache = pathlib.Path(os.path.expanduser('~/.ansible/test/cache/get_pip_%s.py' % version.replace('.', '_')))
if not cache.exists():
    cache.parent.mkdir(parents=True, exist_ok=True)
    url = 'https://ci-files.testing.ansible.com/ansible-test/get-pip-%s.py' % version
    try:
        data = urllib.request.urlopen(url, timeout=10).read()
        print('test-modules: cached the pip %s bootstrap script from %s' % (version, url))
    except OSError as exc:
        print('test-modules: %s unreachable (%s): using an ensurepip stand-in' % (url, exc))
        data = b'''"""Stand-in for get-pip.py written by scripts/test-modules.sh: ensurepip, then pip install."""
import subprocess
import sys

args = [arg for arg in sys.argv[1:] if arg not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--quiet'] + args)
if '--no-setuptools' in sys.argv:
    subprocess.call([sys.executable, '-m', 'pip', 'uninstall', '--quiet', '--yes', 'setuptools'])
'''
    tmp = cache.with_suffix('.tmp')
    tmp.write_bytes(data)
    tmp.replace(cache)
PY

cd "$work"
# The venv carries pytest plugins for other suites (asyncio, testinfra); keep them out of these runs.
export PYTEST_ADDOPTS="${PYTEST_ADDOPTS:+$PYTEST_ADDOPTS }-p no:asyncio -p no:testinfra"

if ((run_units)); then
  step "Unit tests: ansible-test units --python $PYTHON_VERSION --local"
  ansible-test units --python "$PYTHON_VERSION" --local --color no 2>&1 \
    | grep -v "^WARNING: Location 'file://" || fail "unit tests"
fi

if ((run_sanity)); then
  step "Sanity: ansible-test sanity --python $PYTHON_VERSION --local ${sanity_targets[*]:-(whole collection)}"
  # The first run builds one venv per sanity test under ~/.ansible/test/venv (a minute or two);
  # later runs reuse them. shellcheck and pslint are skipped with a warning when not installed.
  ansible-test sanity --python "$PYTHON_VERSION" --local --color no "${sanity_targets[@]}" 2>&1 \
    | grep -v -e "^WARNING: Location 'file://" -e '^Looking in ' -e '^Collecting ' -e '^  Downloading ' \
      -e '^Processing /' -e '━' || fail "ansible-test sanity"
fi

done_parts=()
((run_units)) && done_parts+=("unit tests")
((run_sanity)) && done_parts+=("sanity ${sanity_targets[*]:-(whole collection)}")
printf '\ntest-modules: OK: %s\n' "$(printf '%s; ' "${done_parts[@]}" | sed 's/; $//')"
