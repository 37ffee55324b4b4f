#!/usr/bin/env bash
# Install everything the project needs on a fresh Debian 12 machine: apt packages and a pinned venv.
# Idempotent: a second run installs nothing new.
# Usage: scripts/bootstrap.sh [apt|venv]   (both when no part is named)
set -euo pipefail
cd "$(dirname "$0")/.."

# netavark + aardvark-dns (+ iptables, which netavark drives) give the lab's and the scenarios'
# podman networks name resolution between containers; scripts/podman/containers.conf selects them.
# qemu-system-x86, qemu-utils and fdisk build and boot the kernel tier's VM (scripts/build-vm.sh,
# molecule/kernel); openssh-client reaches it. GRUB is installed inside the guest, not here.
APT_PACKAGES=(
  python3-venv python3-dev gcc git make rsync shellcheck
  podman runc debootstrap uidmap slirp4netns fuse-overlayfs netavark aardvark-dns iptables
  redis-server redis-tools
  wireguard-tools wireguard-go iproute2
  prometheus
  qemu-system-x86 qemu-utils fdisk openssh-client
)

apt_part() {
  local missing=() p sudo_cmd=""
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    echo "bootstrap: installing ${missing[*]}"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
      -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
  fi
  # The Debian redis-server unit starts a system Redis on 6379; the tests start their own servers.
  # Leave the system service alone: it is not ours to stop.
}

venv_part() {
  local stamp
  stamp=.venv/.stamp-$(cat requirements-dev.txt collector/pyproject.toml | sha256sum | cut -c1-16)
  [ -f "$stamp" ] && return 0
  [ -x .venv/bin/python ] || /usr/bin/python3 -m venv .venv
  # The local index mirrors print one harmless warning per package; keep the output readable.
  quiet() { "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
  quiet .venv/bin/pip install -q --upgrade pip
  quiet .venv/bin/pip install -q -r requirements-dev.txt -e './collector[dev,store]'
  rm -f .venv/.stamp-*
  touch "$stamp"
}

case "${1:-all}" in
  apt) apt_part; echo "bootstrap: apt packages ready" ;;
  venv) venv_part; echo "bootstrap: .venv ready" ;;
  all) apt_part; venv_part; echo "bootstrap: apt packages and .venv ready" ;;
  *) echo "usage: $0 [apt|venv]" >&2; exit 2 ;;
esac
