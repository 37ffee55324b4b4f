#!/usr/bin/env bash
# Install the collection the way Galaxy users do and prove it works from there, in a temp dir:
#   1. the example inventory, and a syntax check of site.yml with it, print no [WARNING];
#   2. the playbooks name roles and modules by FQCN (short names resolve in this repository, not
#      once installed);
#   3. `ansible-galaxy collection build` from the repository root, then `ansible-galaxy collection
#      install --offline` of the tarball into an empty collections path;
#   4. the installed tree holds every role, module and module_utils file, and neither that tarball
#      nor one built from a copy of the tree with each kind of junk planted in it carries junk
#      (.venv, .git, caches, Molecule state, credentials, __pycache__, build dirs, tarballs);
#   5. from a directory outside the repository, with an empty ansible.cfg and only the temp path
#      plus the venv's bundled collections on the collections path: ansible-doc lists the roles
#      and modules, a module importing module_utils runs on localhost (read-only), and
#      `ansible-playbook marketdata.vps_brain.<playbook> --list-tasks` resolves every playbook
#      from the installed tree, with no [WARNING].
#
# Usage: scripts/test-collection.sh
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "$0")/env.sh"
repo=$VPS_BRAIN_ROOT
fqcn=marketdata.vps_brain
start=$SECONDS

step() { printf '\n==> %s\n' "$*"; }
fail() { printf '\ntest-collection: FAILED: %s\n' "$*" >&2; exit 1; }
# Print the [WARNING] / [DEPRECATION WARNING] lines of $2 (output of $1) and fail if there are any.
no_warnings() {
  local found
  found=$(grep -E '\[(DEPRECATION )?WARNING\]' <<<"$2" || true)
  [[ -z $found ]] || fail "$1 printed warnings:"$'\n'"$found"
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vps-brain-collection.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/dist" "$tmp/junk-dist" "$tmp/collections" "$tmp/run" "$tmp/tree"
installed=$tmp/collections/ansible_collections/marketdata/vps_brain
# The venv's bundled collections (community.general, ansible.posix, containers.podman ...).
bundled=$(python -c 'import ansible_collections, os; print(os.path.dirname(list(ansible_collections.__path__)[0]))')
[[ ! -e $bundled/ansible_collections/marketdata ]] || fail "$bundled already holds a marketdata collection"

# Run a command the way a Galaxy user would: outside the repository, with an empty ansible.cfg
# and only the temp collections path plus the bundled collections (no sys.path scan, so nothing
# falls back on the repository's collections/ symlink).
printf '[defaults]\n' >"$tmp/run/ansible.cfg"
as_user() {
  (cd "$tmp/run" && env -u ANSIBLE_ROLES_PATH -u ANSIBLE_LIBRARY -u ANSIBLE_MODULE_UTILS -u ANSIBLE_INVENTORY \
    -u ANSIBLE_PLAYBOOK_DIR ANSIBLE_CONFIG="$tmp/run/ansible.cfg" \
    ANSIBLE_COLLECTIONS_PATH="$tmp/collections:$bundled" ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false \
    ANSIBLE_HOME="$tmp/ansible-home" "$@")
}

step "Example inventory and site.yml syntax check print no warnings"
cd "$repo"
out=$(ansible-inventory -i inventories/example/hosts.yml --list 2>&1) \
  || fail "ansible-inventory -i inventories/example/hosts.yml --list:"$'\n'"$out"
no_warnings "ansible-inventory -i inventories/example/hosts.yml --list" "$out"
out=$(ansible-playbook -i inventories/example/hosts.yml playbooks/site.yml --syntax-check 2>&1) \
  || fail "ansible-playbook --syntax-check playbooks/site.yml:"$'\n'"$out"
no_warnings "ansible-playbook -i inventories/example/hosts.yml playbooks/site.yml --syntax-check" "$out"
echo "ok: ansible-inventory --list and site.yml --syntax-check with inventories/example: no [WARNING]"

step "Playbooks refer to roles and modules by FQCN"
python - "$repo" "$bundled" <<'PY' || fail "playbooks must name roles and modules by FQCN (marketdata.vps_brain.<name>)"
"""Walk every play and task file under playbooks/; a role or module named without its collection
resolves from this repository but not from an installed collection. Dynamic include_role names
are not resolved by --list-tasks, hence this check of every name against the collections."""
import pathlib
import sys

import yaml
from ansible.playbook.block import Block
from ansible.playbook.handler import Handler
from ansible.playbook.task import Task

root = pathlib.Path(sys.argv[1])
bundled = pathlib.Path(sys.argv[2]) / "ansible_collections"
roles = {p.name for p in (root / "roles").iterdir() if (p / "tasks").is_dir()}
modules = {p.stem for p in (root / "plugins" / "modules").glob("*.py") if p.stem != "__init__"}
keywords = set(Task.fattributes) | set(Handler.fattributes) | set(Block.fattributes) | {"local_action"}
role_actions = {"include_role", "import_role"}
errors = []


def check_name(where, kind, name):
    if not isinstance(name, str) or "{{" in name:
        return
    if name.count(".") < 2:
        errors.append(f"{where}: {kind} {name!r} is not a FQCN")
    elif name.startswith("marketdata.vps_brain.") and name.split(".", 2)[2] not in (
        roles if kind == "role" else modules
    ):
        errors.append(f"{where}: {kind} {name!r}: no such {kind} in this collection")
    elif not name.startswith(("marketdata.vps_brain.", "ansible.builtin.", "ansible.legacy.")) and not (
        bundled.joinpath(*name.split(".")[:2]).is_dir()
    ):
        errors.append(f"{where}: {kind} {name!r}: its collection is not installed with ansible")


def check_tasks(where, tasks):
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        label = f"{where}: task {task.get('name', '(unnamed)')!r}"
        for section in ("block", "rescue", "always"):
            check_tasks(where, task.get(section))
        actions = [k for k in task if k not in keywords and not k.startswith("with_")]
        spec = task.get("local_action") or task.get("action")
        if spec:
            actions.append(spec.get("module") if isinstance(spec, dict) else str(spec).split()[0])
        for action in actions:
            check_name(label, "module", action)
            if action.rsplit(".", 1)[-1] in role_actions and isinstance(task.get(action), dict):
                check_name(label, "role", task[action].get("name"))


for path in sorted((root / "playbooks").rglob("*.yml")):
    where = str(path.relative_to(root))
    data = yaml.safe_load(path.read_text()) or []
    if any(isinstance(item, dict) and ("hosts" in item or "import_playbook" in item) for item in data):
        for play in data:
            for entry in play.get("roles") or []:
                check_name(f"{where}: play {play.get('name')!r}", "role",
                           entry if isinstance(entry, str) else entry.get("role", entry.get("name")))
            for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                check_tasks(where, play.get(section))
    else:
        check_tasks(where, data)
for error in errors:
    print(error, file=sys.stderr)
if errors:
    sys.exit(1)
print("ok: playbooks/**/*.yml name every role and module by FQCN")
PY

step "Build the collection from the repository root and install the tarball into an empty path"
out=$(ansible-galaxy collection build --output-path "$tmp/dist" "$repo" 2>&1) \
  || fail "ansible-galaxy collection build:"$'\n'"$out"
no_warnings "ansible-galaxy collection build" "$out"
tarballs=("$tmp"/dist/marketdata-vps_brain-*.tar.gz)
tarball=${tarballs[0]}
[[ -f $tarball ]] || fail "no tarball in $tmp/dist:"$'\n'"$out"
echo "ok: $(basename "$tarball") ($(du -k "$tarball" | cut -f1) KiB, $(tar -tzf "$tarball" | wc -l) entries)"
# --offline: Galaxy is unreachable; the dependency (community.general) is among the bundled ones.
out=$(as_user ansible-galaxy collection install --offline -p "$tmp/collections" "$tarball" 2>&1) \
  || fail "ansible-galaxy collection install:"$'\n'"$out"
no_warnings "ansible-galaxy collection install" "$out"
[[ -f $installed/MANIFEST.json ]] || fail "nothing installed at $installed:"$'\n'"$out"
echo "ok: installed at ${installed#"$tmp"/}"

step "The installed tree holds the roles, modules and module_utils; the tarballs carry no junk"
missing=()
for role in "$repo"/roles/*/; do
  role=$(basename "$role")
  for f in tasks/main.yml meta/argument_specs.yml; do
    [[ -f $repo/roles/$role/$f ]] && [[ ! -f $installed/roles/$role/$f ]] && missing+=("roles/$role/$f")
  done
done
while IFS= read -r f; do
  [[ -f $installed/$f ]] || missing+=("$f")
done < <(cd "$repo" && find plugins meta playbooks -type f \( -name '*.py' -o -name '*.yml' \) \
  ! -path '*/__pycache__/*' ! -path 'playbooks/credentials/*' | sort)
((${#missing[@]} == 0)) || fail "missing from the installed collection: ${missing[*]}"
echo "ok: $(find "$installed/roles" -mindepth 1 -maxdepth 1 -type d | wc -l) roles," \
  "$(find "$installed/plugins/modules" -name '*.py' | wc -l) modules," \
  "$(find "$installed/plugins/module_utils" -name '*.py' | wc -l) module_utils files, meta/runtime.yml, playbooks"

junk_re='(^|/)(\.venv|\.git|\.cache|\.ansible|\.molecule|\.pytest_cache|\.ruff_cache|\.mypy_cache|\.tox|__pycache__|credentials|collections|build|dist)(/|$)|\.egg-info(/|$)|\.pyc$|\.tar\.gz$|\.whl$|^tests/output(/|$)'
check_junk() {
  local listing
  listing=$(tar -tzf "$2" | sed 's#^\./##')
  junk=$(grep -E "$junk_re" <<<"$listing" || true)
  [[ -z $junk ]] || fail "$1 carries junk (add it to build_ignore in galaxy.yml):"$'\n'"$junk"
}
check_junk "the tarball built from the repository" "$tarball"
# A copy of the tree with every kind of junk a working tree gathers (lab, tests, builds) planted.
tar -C "$repo" -cf - --exclude=./.venv --exclude=./.git --exclude=./.cache --exclude=./collections \
  --exclude=./.ansible . | tar -C "$tmp/tree" -xf -
planted=(
  .venv/bin/python .git/HEAD .cache/wheels/a.whl .ansible/tmp/molecule.x.kernel_tuning/state.yml
  molecule/kernel_tuning/.molecule/state.yml playbooks/credentials/tokyo-vps/redis-collector credentials/x
  collector/build/lib/vps_brain/__init__.py collector/dist/vps_brain-0.1.0-py3-none-any.whl
  collector/src/vps_brain.egg-info/PKG-INFO roles/kernel_tuning/files/__pycache__/sysctl_probe.cpython-311.pyc
  plugins/modules/cpu_affinity.pyc collector/.pytest_cache/README.md molecule/kernel_tuning/tests/.pytest_cache/v
  .ruff_cache/x collector/.mypy_cache/x .tox/x tests/output/junit/a.xml marketdata-vps_brain-0.0.1.tar.gz
  collector/vps_brain-0.1.0.tar.gz
)
for f in "${planted[@]}"; do
  mkdir -p "$tmp/tree/$(dirname "$f")"
  : >"$tmp/tree/$f"
done
mkdir -p "$tmp/tree/collections/ansible_collections/marketdata"
ln -s ../../.. "$tmp/tree/collections/ansible_collections/marketdata/vps_brain"
out=$(ansible-galaxy collection build --output-path "$tmp/junk-dist" "$tmp/tree" 2>&1) \
  || fail "ansible-galaxy collection build of the planted tree:"$'\n'"$out"
junk_tarballs=("$tmp"/junk-dist/marketdata-vps_brain-*.tar.gz)
check_junk "the tarball built from a tree with junk planted" "${junk_tarballs[0]}"
echo "ok: no junk in either tarball (the copy had ${#planted[@]} junk files and the collections/ symlink planted)"

step "From outside the repository: ansible-doc, a module with module_utils, every playbook by FQCN"
out=$(as_user ansible-doc -t role -l "$fqcn" 2>&1) || fail "ansible-doc -t role -l $fqcn:"$'\n'"$out"
no_warnings "ansible-doc -t role -l" "$out"
for role in "$repo"/roles/*/meta/argument_specs.yml; do
  role=$(basename "$(dirname "$(dirname "$role")")")
  grep -qx "$fqcn\.$role:" <<<"$out" || fail "ansible-doc does not list the role $fqcn.$role:"$'\n'"$out"
done
out=$(as_user ansible-doc -t module -l "$fqcn" 2>&1) || fail "ansible-doc -t module -l $fqcn:"$'\n'"$out"
no_warnings "ansible-doc -t module -l" "$out"
for module in "$repo"/plugins/modules/*.py; do
  module=$(basename "$module" .py)
  grep -q "^$fqcn\.$module " <<<"$out" || fail "ansible-doc does not list the module $fqcn.$module:"$'\n'"$out"
done
echo "ok: ansible-doc lists every role and module of $fqcn from the installed tree"
# cpu_isolation_info only reads /proc and /sys; it imports plugins/module_utils/cpulist.py.
out=$(as_user ansible all -i localhost, -c local -e 'ansible_python_interpreter={{ ansible_playbook_python }}' \
  -m "$fqcn.cpu_isolation_info" 2>&1) \
  || fail "$fqcn.cpu_isolation_info (module_utils) does not run from the installed collection:"$'\n'"$out"
no_warnings "ansible -m $fqcn.cpu_isolation_info" "$out"
echo "ok: $fqcn.cpu_isolation_info runs on localhost, importing module_utils from the installed tree"

inventory=$installed/inventories/example/hosts.yml
[[ -f $inventory ]] || fail "the example inventory is not in the installed collection"
count=0
for playbook in "$repo"/playbooks/*.yml; do
  name=$(basename "$playbook" .yml)
  out=$(as_user ansible-playbook -i "$inventory" "$fqcn.$name" --list-tasks 2>&1) \
    || fail "ansible-playbook $fqcn.$name does not resolve from the installed collection:"$'\n'"$out"
  no_warnings "ansible-playbook $fqcn.$name --list-tasks" "$out"
  grep -q "^playbook: $installed/playbooks/$name.yml$" <<<"$out" \
    || fail "ansible-playbook $fqcn.$name did not run the installed playbook:"$'\n'"$out"
  echo "ok: $fqcn.$name resolves from the installed collection ($(grep -c '^  play #' <<<"$out") plays)"
  count=$((count + 1))
done

printf '\ntest-collection: OK: built, installed, no junk, %d playbooks resolve installed (%d s)\n' \
  "$count" "$((SECONDS - start))"
