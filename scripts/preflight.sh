#!/usr/bin/env bash
# Check, before any playbook or scenario starts, that this machine can run the lab and the
# scenarios: the tools bootstrap installs, podman on the project's netavark + aardvark-dns network
# backend, /dev/net/tun for wireguard-go, and, with the image built, that two containers on a
# project network resolve each other's names (what wg-quick on the Brain needs). Every missing
# piece is named; nothing is changed on the way but a probe network and two probe containers,
# which are removed again.
# Usage: scripts/preflight.sh [--no-probe]
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "$0")/env.sh"

missing=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("command $1 (Debian package $2)"); }
need_cmd podman podman
need_cmd runc runc
need_cmd iptables iptables
need_cmd debootstrap debootstrap
need_cmd wg wireguard-tools
need_cmd wireguard-go wireguard-go
need_cmd redis-server redis-server
need_cmd shellcheck shellcheck
need_cmd promtool prometheus
# The kernel tier (molecule/kernel, scripts/build-vm.sh): QEMU, its disk tool, partitioning, SSH.
need_cmd qemu-system-x86_64 qemu-system-x86
need_cmd qemu-img qemu-utils
need_cmd sfdisk fdisk
need_cmd ssh openssh-client
need_cmd losetup mount
# podman runs these helpers from /usr/lib/podman; without aardvark-dns a netavark network starts
# containers that cannot resolve one another.
for helper in netavark aardvark-dns; do
  [ -x "/usr/lib/podman/$helper" ] || missing+=("/usr/lib/podman/$helper (Debian package $helper)")
done
# scripts/build-vm.sh writes GRUB onto the disk through loop devices.
[ -c /dev/loop-control ] || missing+=("/dev/loop-control (scripts/build-vm.sh maps the VM disk on loop devices)")
[ -c /dev/net/tun ] || missing+=("/dev/net/tun (the WireGuard tunnel runs wireguard-go in the containers)")
[ -x "$VPS_BRAIN_ROOT/.venv/bin/molecule" ] || missing+=("$VPS_BRAIN_ROOT/.venv with molecule (scripts/bootstrap.sh)")

if ((${#missing[@]} == 0)); then
  backend=$(podman info --format '{{.Host.NetworkBackend}}' 2>/dev/null || echo "unknown")
  [ "$backend" = netavark ] || missing+=("podman network backend netavark (podman info says '$backend' with CONTAINERS_CONF=$CONTAINERS_CONF)")
fi

fail() {
  echo "preflight: this machine cannot run the lab or the scenarios; missing:" >&2
  printf '  - %s\n' "$@" >&2
  echo "preflight: scripts/bootstrap.sh installs the packages; see README.md" >&2
  exit 1
}
((${#missing[@]} == 0)) || fail "${missing[@]}"

if [ "${1:-}" != --no-probe ]; then
  podman image exists "$VPS_BRAIN_IMAGE" || fail "the image $VPS_BRAIN_IMAGE (scripts/build-image.sh)"
  net=vpsb-preflight
  cleanup() {
    podman rm -f -t 0 vpsb-preflight-a vpsb-preflight-b >/dev/null 2>&1 || true
    podman network rm -f "$net" >/dev/null 2>&1 || true
  }
  trap cleanup EXIT
  cleanup
  podman network create "$net" >/dev/null
  for c in vpsb-preflight-a vpsb-preflight-b; do
    podman run -d --name "$c" --hostname "$c" --network "$net" "$VPS_BRAIN_IMAGE" sleep 60 >/dev/null
  done
  if ! answer=$(podman exec vpsb-preflight-a getent hosts vpsb-preflight-b 2>&1); then
    dns=$(podman network inspect "$net" --format '{{.DNSEnabled}}' 2>/dev/null || echo "?")
    fail "name resolution between containers: vpsb-preflight-a cannot resolve vpsb-preflight-b (network DNSEnabled=$dns; needs netavark + aardvark-dns)"
  fi
  echo "preflight: tools, netavark + aardvark-dns, /dev/net/tun; containers resolve each other ($(echo "$answer" | awk '{print $2 " -> " $1}'))"
else
  echo "preflight: tools, netavark + aardvark-dns, /dev/net/tun"
fi
