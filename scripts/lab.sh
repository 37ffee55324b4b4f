#!/usr/bin/env bash
# The local lab: a VPS and a Brain container (systemd, Debian 12) joined by WireGuard, the
# exchange simulator on the VPS, provisioned with playbooks/site.yml and switched over with
# playbooks/cutover.yml; then shows data arriving.
# Usage: scripts/lab.sh up | down | status
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/bootstrap.sh" >/dev/null
# shellcheck source=scripts/env.sh
source "$here/env.sh"
cd "$VPS_BRAIN_ROOT"

NETWORK=vpsb-lab
HOSTS=(vpsb-lab-vps vpsb-lab-brain)

down() {
  for h in "${HOSTS[@]}"; do podman rm -f -t 5 "$h" >/dev/null 2>&1 || true; done
  podman network rm -f "$NETWORK" >/dev/null 2>&1 || true
  echo "lab: removed"
}

up() {
  "$here/preflight.sh" --no-probe
  "$here/build-image.sh"
  "$here/preflight.sh"
  podman network exists "$NETWORK" || podman network create "$NETWORK" >/dev/null
  # A network left by an older set-up may lack the DNS the Brain needs to find the VPS by name.
  if [ "$(podman network inspect "$NETWORK" --format '{{.DNSEnabled}}')" != true ]; then
    echo "lab: the podman network $NETWORK resolves no container names; run $0 down, then up" >&2
    exit 1
  fi
  for h in "${HOSTS[@]}"; do
    if ! podman container exists "$h"; then
      podman run -d --name "$h" --hostname "$h" --network "$NETWORK" \
        --systemd=always --ulimit nofile=20000:20000 --ulimit nproc=20000:20000 \
        --device /dev/net/tun --cap-add NET_ADMIN \
        "$VPS_BRAIN_IMAGE" /sbin/init >/dev/null
    fi
    state=""
    for _ in $(seq 1 60); do
      state=$(podman exec "$h" systemctl is-system-running --wait 2>/dev/null || true)
      case "$state" in running|degraded) break ;; *) sleep 1 ;; esac
    done
    echo "lab: $h is up (systemd $state)"
  done
  ansible-playbook -i inventories/lab/hosts.yml playbooks/site.yml playbooks/lab_market.yml \
    playbooks/cutover.yml
  status
  echo "lab: up. Enter a host with: podman exec -it ${HOSTS[0]} bash;  remove with: scripts/lab.sh down"
}

# Data arriving on the Brain: the dashboard (through the tunnel) and the stored message count.
# The store and the collector's metrics address are read from the deployed settings files (what the
# roles wrote), never repeated here.
setting() { # host, config file, Python expression over the loaded settings `s`
  podman exec "$1" /opt/vps-brain/venv/bin/python -c "from vps_brain.config import load_settings
s = load_settings('$2'); print($3)"
}
status() {
  local count=0 store metrics
  store=$(setting vpsb-lab-brain /etc/vps-brain/consumer.yml 's.consumer.store_dir')
  metrics=$(setting vpsb-lab-vps /etc/vps-brain/collector.yml \
    "f'http://{s.collector.metrics_host}:{s.collector.metrics_port}/metrics'")
  for _ in $(seq 1 30); do
    count=$(podman exec vpsb-lab-brain find "$store" -name '*.parquet' 2>/dev/null | wc -l)
    [ "$count" -gt 0 ] && break
    sleep 2
  done
  podman exec vpsb-lab-brain /opt/vps-brain/venv/bin/vps-brain status --once \
    --config /etc/vps-brain/consumer.yml --collector-metrics "$metrics" || true
  # Per stream (the store's exchange=/symbol= partitions: spot and futures venues alike).
  podman exec vpsb-lab-brain /opt/vps-brain/venv/bin/python -c '
import collections, pathlib, sys, pyarrow.parquet as pq
files = sorted(pathlib.Path(sys.argv[1]).rglob("*.parquet"))
rows = collections.Counter()
for f in files:
    part = dict(p.split("=", 1) for p in f.parent.parts if "=" in p)
    rows["md:%s:%s" % (part.get("exchange"), part.get("symbol"))] += pq.ParquetFile(f).metadata.num_rows
print(f"lab: the Brain stores {sum(rows.values())} messages in {len(files)} Parquet files")
for stream, n in sorted(rows.items()):
    print(f"  {stream:32s} {n:>10,}")' "$store"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
