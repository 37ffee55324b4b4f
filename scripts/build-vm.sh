#!/usr/bin/env bash
# Build the kernel tier's Debian 12 VM disk (molecule/kernel, docs/kernel-tier.md) from the
# project's debootstrap image: a partitioned raw disk that boots the way a VPS boots, BIOS → GRUB
# (grub-pc in the MBR gap) → the Debian kernel, so that update-grub and a reboot inside the guest
# are the real ones. Cached like the container image: the disk is named by a hash of its inputs
# (this script, the image's id, the packages, the mirror) and the build is skipped when it exists.
#
# Layout: MBR, partition 1 (ext4, /, from 1 MiB), partition 2 (64 MiB swap, in /etc/fstab, so that
# kernel_tuning's swap-off is proven on a swap the guest really activates at boot).
# In the guest: the kernel and initramfs, grub-pc, openssh-server (root by key only), udev,
# systemd-networkd (DHCP on the virtio NIC), and the roles' packages pre-installed (redis-server,
# irqbalance, ufw) with the apt lists of the build, so the converge downloads nothing it can avoid. The
# per-run SSH key comes in through QEMU's fw_cfg (opt/vpsb/authorized_keys), read at boot by
# vpsb-authorized-keys.service; the disk holds no key of the controller.
#
# Usage: scripts/build-vm.sh            prints the path of the cached disk on its last line
#        scripts/build-vm.sh --path     only prints that path (builds nothing)
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "$0")/env.sh"

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# What the guest needs beyond the image, and what the roles under test install (cached here).
GUEST_PACKAGES=(linux-image-amd64 initramfs-tools grub-pc udev openssh-server
  redis-server irqbalance ufw)
DISK_MB=3072
SWAP_MB=64
cache="$VPS_BRAIN_ROOT/.cache/vm"
mkdir -p "$cache"

image_id=$(podman image inspect --format '{{.Id}}' "$VPS_BRAIN_IMAGE" 2>/dev/null) || {
  echo "build-vm: the image $VPS_BRAIN_IMAGE is missing (scripts/build-image.sh)" >&2
  exit 1
}
inputs_hash=$( { cat "$0"; echo "$image_id $MIRROR ${GUEST_PACKAGES[*]} $DISK_MB $SWAP_MB"; } \
  | sha256sum | cut -c1-12)
disk="$cache/vpsb-kernel-$inputs_hash.raw"
if [ "${1:-}" = --path ]; then
  echo "$disk"
  exit 0
fi

# One build at a time (two scenarios or a test run and a hand run may ask at once).
exec 9>"$cache/.lock"
flock 9
if [ -f "$disk" ]; then
  echo "build-vm: disk cached"
  echo "$disk"
  exit 0
fi

t0=$SECONDS
work=$(mktemp -d /var/tmp/vpsb-kernel-vm.XXXXXX)
root="$work/root"
mnt="$work/mnt"
ctr=""
loops=()
cleanup() {
  set +e
  for m in "$mnt/dev" "$mnt/proc" "$mnt/sys" "$mnt" "$root/dev/pts" "$root/dev" "$root/proc" "$root/sys"; do
    mountpoint -q "$m" && umount -l "$m"
  done
  for l in "${loops[@]}"; do losetup -d "$l"; done
  [ -n "$ctr" ] && podman rm -f "$ctr" >/dev/null 2>&1
  # VPSB_VM_KEEP=1 keeps the work directory of a failed build to look into.
  if [ -n "${VPSB_VM_KEEP:-}" ]; then echo "build-vm: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
mkdir -p "$root" "$mnt"

echo "build-vm: building $disk (a few minutes)"
ctr=$(podman create "$VPS_BRAIN_IMAGE" /bin/true)
podman export "$ctr" | tar -x -C "$root" --numeric-owner
podman rm -f "$ctr" >/dev/null
ctr=""

# The image is made for containers: give the VM back what a booted kernel needs (udev, getty on
# the serial console, module loading, the kernel's pseudo file systems).
for unit in getty.target console-getty.service systemd-udevd.service systemd-udev-trigger.service \
  systemd-firstboot.service systemd-modules-load.service sys-kernel-config.mount \
  sys-kernel-debug.mount sys-kernel-tracing.mount; do
  rm -f "$root/etc/systemd/system/$unit"
done

mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
cat > "$root/usr/sbin/policy-rc.d" <<'EOF'
#!/bin/sh
# Build time only: start no service in the chroot.
exit 101
EOF
chmod 0755 "$root/usr/sbin/policy-rc.d"
echo "grub-pc grub-pc/install_devices multiselect /dev/vda" | chroot "$root" debconf-set-selections
# A small initramfs (the modules a virtio disk with ext4 needs, not MODULES=most's 36 MB): under
# TCG, GRUB's BIOS disk reads of the initramfs were the slowest part of every boot.
install -d "$root/etc/initramfs-tools/conf.d"
echo "MODULES=list" > "$root/etc/initramfs-tools/conf.d/vpsb-kernel-vm.conf"
printf '%s\n' virtio_pci virtio_blk ext4 >> "$root/etc/initramfs-tools/modules"
echo "build-vm: installing ${GUEST_PACKAGES[*]}"
chroot "$root" apt-get update -qq
DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Use-Pty=0 "${GUEST_PACKAGES[@]}" >"$work/apt.log" 2>&1 || {
  tail -n 40 "$work/apt.log" >&2
  exit 1
}
rm -f "$root/usr/sbin/policy-rc.d"
for m in "$root/dev/pts" "$root/dev" "$root/proc" "$root/sys"; do umount "$m"; done
echo "build-vm: packages installed after $((SECONDS - t0)) s"

root_uuid=$(cat /proc/sys/kernel/random/uuid)
swap_uuid=$(cat /proc/sys/kernel/random/uuid)
cat > "$root/etc/fstab" <<EOF
UUID=$root_uuid / ext4 errors=remount-ro 0 1
UUID=$swap_uuid none swap sw 0 0
EOF
echo vpsb-kernel > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 vpsb-kernel\n' > "$root/etc/hosts"
# QEMU user networking: DHCP on the virtio NIC, its DNS forwarder at 10.0.2.3.
cat > "$root/etc/systemd/network/10-vpsb-kernel.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
EOF
echo "nameserver 10.0.2.3" > "$root/etc/resolv.conf"
ln -sf /lib/systemd/system/systemd-networkd.service \
  "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
# The GRUB defaults of a VPS with a serial console; the roles add their own drop-ins beside this.
cat > "$root/etc/default/grub.d/10-vpsb-kernel-vm.cfg" <<'EOF'
# The kernel tier's VM (scripts/build-vm.sh): serial console, no menu delay.
GRUB_TIMEOUT=0
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_CMDLINE_LINUX="console=ttyS0,115200"
EOF
# SSH: root by key only; the key of the run comes through fw_cfg at every boot.
install -d -m 0700 "$root/root/.ssh"
cat > "$root/etc/systemd/system/vpsb-authorized-keys.service" <<'EOF'
[Unit]
Description=Install root's SSH key from QEMU fw_cfg (opt/vpsb/authorized_keys)
Before=ssh.service
DefaultDependencies=no
After=local-fs.target

[Service]
Type=oneshot
ExecStartPre=-/sbin/modprobe qemu_fw_cfg
ExecStart=/bin/sh -c 'f=/sys/firmware/qemu_fw_cfg/by_name/opt/vpsb/authorized_keys/raw; test -r $$f && install -m 0600 $$f /root/.ssh/authorized_keys'
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/vpsb-authorized-keys.service \
  "$root/etc/systemd/system/multi-user.target.wants/vpsb-authorized-keys.service"
printf 'PasswordAuthentication no\nUseDNS no\n' > "$root/etc/ssh/sshd_config.d/vpsb-kernel.conf"
: > "$root/etc/machine-id"

# The disk: partition 1 from 1 MiB (the gap before it holds GRUB's core image), swap at the end.
raw="$work/disk.raw"
truncate -s "${DISK_MB}M" "$raw"
part_mb=$((DISK_MB - 1 - SWAP_MB))
sfdisk -q "$raw" <<EOF
label: dos
start=2048, size=$((part_mb * 2048)), type=83, bootable
start=$(((1 + part_mb) * 2048)), type=82
EOF
mke2fs -q -t ext4 -U "$root_uuid" -L vpsb-root -E offset=$((1024 * 1024)) -d "$root" "$raw" "${part_mb}M"
swap_img="$work/swap.img"
truncate -s "${SWAP_MB}M" "$swap_img"
mkswap -q -U "$swap_uuid" "$swap_img"
dd if="$swap_img" of="$raw" bs=1M seek=$((1 + part_mb)) conv=notrunc status=none

# GRUB into the MBR and its gap, from the guest's own grub-pc: the whole disk and partition 1 on
# loop devices (losetup -P makes no partition nodes here, so the partition gets its own loop).
disk_loop=$(losetup -f --show "$raw")
loops+=("$disk_loop")
part_loop=$(losetup -f --show -o $((1024 * 1024)) --sizelimit $((part_mb * 1024 * 1024)) "$raw")
loops+=("$part_loop")
mount "$part_loop" "$mnt"
mount --bind /dev "$mnt/dev"
mount -t proc proc "$mnt/proc"
mount -t sysfs sysfs "$mnt/sys"
chroot "$mnt" grub-install --target=i386-pc --modules="part_msdos ext2 search_fs_uuid" \
  --boot-directory=/boot "$disk_loop" 2>&1 | grep -v '^Installing for' || true
[ -f "$mnt/boot/grub/i386-pc/core.img" ] || { echo "build-vm: grub-install failed" >&2; exit 1; }
umount "$mnt/dev"
# The first grub.cfg, from the guest's own update-grub. Its 10_linux writes no entry for a root on
# a loop device, so the chroot gets a /dev of its own in which the partition is /dev/vda1, as the
# guest will see it (the loop's name a link to it). GRUB cannot map that node to a BIOS drive here
# and writes no search line into the entries; core.img's search.fs_uuid sets the root instead. The
# roles' update-grub in the guest regenerates the whole file from the guest's own view.
mount -t tmpfs -o mode=0755 tmpfs "$mnt/dev"
for n in null zero random urandom; do cp -a "/dev/$n" "$mnt/dev/"; done
read -r major minor < <(stat -c '%t %T' "$part_loop")
mknod -m 0660 "$mnt/dev/vda1" b $((16#$major)) $((16#$minor))
ln -s vda1 "$mnt/dev/${part_loop#/dev/}"
chroot "$mnt" update-grub >"$work/update-grub.log" 2>&1 || { cat "$work/update-grub.log" >&2; exit 1; }
sed -i -E "/^\s*linux\s/ s|root=[^ ]+|root=UUID=$root_uuid|" "$mnt/boot/grub/grub.cfg"
grep -Eq "^\s*linux\s.* root=UUID=$root_uuid " "$mnt/boot/grub/grub.cfg" || {
  echo "build-vm: grub.cfg has no kernel entry naming the root by UUID:" >&2
  cat "$work/update-grub.log" >&2
  exit 1
}
for m in "$mnt/dev" "$mnt/proc" "$mnt/sys" "$mnt"; do umount "$m"; done
for l in "${loops[@]}"; do losetup -d "$l"; done
loops=()

mv "$raw" "$disk.tmp"
mv "$disk.tmp" "$disk"
# Older disks of this cache are superseded.
find "$cache" -maxdepth 1 -name 'vpsb-kernel-*.raw' ! -name "${disk##*/}" -delete
echo "build-vm: disk built in $((SECONDS - t0)) s"
echo "$disk"
