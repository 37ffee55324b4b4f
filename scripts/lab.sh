#!/usr/bin/env bash
# The local lab: a VPS container (systemd, Debian 12) provisioned with playbooks/site.yml.
# Usage: scripts/lab.sh up | down
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/bootstrap.sh" >/dev/null
# shellcheck source=scripts/env.sh
source "$here/env.sh"
cd "$VPS_BRAIN_ROOT"

NETWORK=vpsb-lab
HOSTS=(vpsb-lab-vps)

down() {
  for h in "${HOSTS[@]}"; do podman rm -f -t 5 "$h" >/dev/null 2>&1 || true; done
  podman network rm -f "$NETWORK" >/dev/null 2>&1 || true
  echo "lab: removed"
}

up() {
  "$here/build-image.sh"
  podman network exists "$NETWORK" || podman network create "$NETWORK" >/dev/null
  for h in "${HOSTS[@]}"; do
    if ! podman container exists "$h"; then
      podman run -d --name "$h" --hostname "$h" --network "$NETWORK" \
        --systemd=always --ulimit nofile=20000:20000 --ulimit nproc=20000:20000 \
        "$VPS_BRAIN_IMAGE" /sbin/init >/dev/null
    fi
    state=""
    for _ in $(seq 1 60); do
      state=$(podman exec "$h" systemctl is-system-running --wait 2>/dev/null || true)
      case "$state" in running|degraded) break ;; *) sleep 1 ;; esac
    done
    echo "lab: $h is up (systemd $state)"
  done
  ansible-playbook -i inventories/lab/hosts.yml playbooks/site.yml
  echo "lab: provisioned. Enter a host with: podman exec -it ${HOSTS[0]} bash;  remove with: scripts/lab.sh down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
