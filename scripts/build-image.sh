#!/usr/bin/env bash
# Build the Debian 12 (bookworm) systemd image for podman with debootstrap (no registry here).
# Cached: tagged with a hash of its inputs and skipped when that tag already exists.
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "$0")/env.sh"

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="systemd,systemd-sysv,dbus,python3,python3-apt,ca-certificates,iproute2,procps,iputils-ping,netbase,kmod"
HOST_CA=/etc/ssl/certs/ca-certificates.crt

inputs_hash=$( { cat "$0"; echo "$MIRROR $PACKAGES"; sha256sum "$HOST_CA" 2>/dev/null || true; } \
  | sha256sum | cut -c1-12)
image="${VPS_BRAIN_IMAGE%:*}"
tag="$image:$inputs_hash"

if podman image exists "$tag"; then
  podman tag "$tag" "$VPS_BRAIN_IMAGE"
  echo "image $tag cached"
  exit 0
fi

rootfs=$(mktemp -d /var/tmp/vps-brain-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "building $tag with debootstrap (about a minute)"
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$rootfs" "$MIRROR" >/dev/null

cat > "$rootfs/etc/apt/sources.list" <<SRC
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SRC
# PyPI inside the containers goes through a TLS-intercepting proxy: trust the host's bundle.
if [ -f "$HOST_CA" ]; then
  install -D -m 0644 "$HOST_CA" "$rootfs/usr/local/share/ca-certificates/host-bundle.crt"
  chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
fi
# Test image only: dpkg skips its fsyncs (a container's disk is thrown away) and unpacks no
# documentation, manual pages or translations (copyright files stay); apt fetches no
# translated package descriptions. Every role's apt task installs faster; what they install is
# unchanged.
cat > "$rootfs/etc/dpkg/dpkg.cfg.d/vps-brain-test-image" <<'DPKG'
force-unsafe-io
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
DPKG
echo 'Acquire::Languages "none";' > "$rootfs/etc/apt/apt.conf.d/90vps-brain-test-image"
: > "$rootfs/etc/machine-id"
for unit in getty.target console-getty.service systemd-udevd.service systemd-udev-trigger.service \
  systemd-firstboot.service systemd-modules-load.service sys-kernel-config.mount \
  sys-kernel-debug.mount sys-kernel-tracing.mount; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
# An empty apt cache with an old mtime, so the apt module's cache_valid_time refreshes it.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
touch -d @0 "$rootfs/var/lib/apt/lists"

tar -C "$rootfs" --numeric-owner -c . | podman import \
  --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$tag" >/dev/null
podman tag "$tag" "$VPS_BRAIN_IMAGE"
echo "image $tag built"
