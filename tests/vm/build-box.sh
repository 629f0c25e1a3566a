#!/usr/bin/env bash
# Build a Debian Vagrant box (libvirt provider) that the VM test boots.
#
#   tests/vm/build-box.sh OUT_DIR [SUITE]  -> OUT_DIR/debian<N>-<key>.box (cached by key)
#
# SUITE is bullseye (Debian 11), bookworm (12, the default) or trixie (13). The image is
# plain Debian from Debian's mirror (mmdebstrap, with the suite's -updates and -security
# archives as a real host has them): the distribution kernel (linux-image-amd64: 5.10,
# 6.1 or 6.12, all with BTF), systemd, sshd, sudo, python3 and a `vagrant` user that
# accepts Vagrant's well-known insecure key. It does NOT contain BCC: the guests have no network beyond the
# test's namespace, so the image carries a local apt repository (file:/srv/apt-local) with
# the packages the Ansible role installs (python3-bpfcc, python3-venv and the
# linux-headers package matching the image's kernel, with their dependencies), configured
# as the guest's only apt source. The role's apt tasks then install from it exactly as
# they would from a mirror.
#
# Key: sha256 of this script; the box is rebuilt only when this file changes (or the box
# is deleted). Prints the path of the box on stdout; build details (time, kernel, package
# count) go to stderr and to <box>.log.
set -euo pipefail

out_dir="${1:?usage: build-box.sh OUT_DIR [SUITE]}"
suite="${2:-bookworm}"
case "$suite" in
    bullseye) release=11 ;;
    bookworm) release=12 ;;
    trixie) release=13 ;;
    *) echo "build-box: unknown suite $suite (bullseye, bookworm or trixie)" >&2; exit 2 ;;
esac
MIRROR="${AC_VM_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${AC_VM_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
here="$(cd "$(dirname "$0")" && pwd)"
key="$(sha256sum "$here/build-box.sh" | cut -c1-12)"
name="debian$release"
box="$out_dir/$name-$key.box"
if [[ -s "$box" ]]; then
    echo "$box"
    exit 0
fi

# Packages of the image itself.
IMAGE_PACKAGES=(
    systemd-sysv udev dbus linux-image-amd64 initramfs-tools zstd
    openssh-server sudo python3 python3-apt
    iproute2 procps kmod e2fsprogs ca-certificates less
)
# Packages the role installs; they go into the image's local apt repository only.
REPO_PACKAGES=(python3-bpfcc python3-venv)   # + linux-headers-<image kernel>

vagrant_pub="$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub \
                   2>/dev/null | head -n1)"
[[ -s "$vagrant_pub" ]] || { echo "build-box: Vagrant's insecure public key not found" >&2; exit 1; }

mkdir -p "$out_dir"
work="$(mktemp -d "$out_dir/.build.XXXXXX")"
loopdev=""
cleanup() {
    set +e
    mountpoint -q "$work/mnt" && umount -R "$work/mnt"
    [[ -n "$loopdev" ]] && losetup -d "$loopdev"
    rm -rf "$work"
}
trap cleanup EXIT

start=$SECONDS
rootfs="$work/rootfs"
include="$(IFS=,; echo "${IMAGE_PACKAGES[*]}")"

# Everything the guest needs beyond packages is done in customize hooks, inside the chroot
# mmdebstrap prepared (it mounts /proc, /sys, /dev for them).
cat >"$work/customize.sh" <<EOF
#!/bin/sh
set -eu
root="\$1"
kver="\$(ls "\$root/lib/modules" | sort -V | tail -n1)"

# --- local apt repository with what the role installs (downloaded, not installed) ---
chroot "\$root" apt-get install --download-only -y -q --no-install-recommends \\
    ${REPO_PACKAGES[*]} "linux-headers-\$kver" >/dev/null
mkdir -p "\$root/srv/apt-local"
mv "\$root"/var/cache/apt/archives/*.deb "\$root/srv/apt-local/"
( cd "\$root/srv/apt-local" && apt-ftparchive packages . >Packages \
    && apt-ftparchive release . >Release )
rm -f "\$root/etc/apt/sources.list"
rm -f "\$root"/etc/apt/sources.list.d/*
cat >"\$root/etc/apt/sources.list.d/local.sources" <<'SRC'
# The test image has no network beyond the test's namespace: this repository holds the
# packages the audit_collector role installs, taken from Debian's mirror at build time.
Types: deb
URIs: file:/srv/apt-local
Suites: ./
Trusted: yes
SRC

# --- identity: unique per VM at first boot ---
: >"\$root/etc/machine-id"
rm -f "\$root/var/lib/dbus/machine-id"
echo $name >"\$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t$name\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
    >"\$root/etc/hosts"
rm -f "\$root"/etc/ssh/ssh_host_*
cat >"\$root/etc/systemd/system/ssh-host-keys.service" <<'UNIT'
[Unit]
Description=Generate SSH host keys on first boot
Before=ssh.service
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
chroot "\$root" systemctl enable ssh-host-keys.service ssh.service >/dev/null 2>&1

# --- network: DHCP on every ethernet interface ---
cat >"\$root/etc/systemd/network/50-dhcp.network" <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=yes
NET
chroot "\$root" systemctl enable systemd-networkd.service >/dev/null 2>&1

# --- the vagrant user ---
chroot "\$root" useradd --create-home --shell /bin/bash vagrant
install -d -m 0700 -o 1000 -g 1000 "\$root/home/vagrant/.ssh"
install -m 0600 -o 1000 -g 1000 "$vagrant_pub" "\$root/home/vagrant/.ssh/authorized_keys"
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"\$root/etc/sudoers.d/vagrant"
chmod 0440 "\$root/etc/sudoers.d/vagrant"
echo 'UseDNS no' >"\$root/etc/ssh/sshd_config.d/vagrant.conf"
EOF
chmod +x "$work/customize.sh"

mmdebstrap --quiet --variant=minbase --include="$include" \
    --customize-hook="$work/customize.sh \"\$1\"" \
    "$suite" "$rootfs" \
    "deb $MIRROR $suite main" "deb $MIRROR $suite-updates main" \
    "deb $SECURITY_MIRROR $suite-security main" >"$work/mmdebstrap.log" 2>&1 \
    || { cat "$work/mmdebstrap.log" >&2; exit 1; }
kver="$(ls "$rootfs/lib/modules" | sort -V | tail -n1)"
rootfs_s=$((SECONDS - start))
repo_count="$(ls "$rootfs/srv/apt-local" | grep -c '\.deb$')"
echo "build-box: $suite rootfs with kernel $kver in $rootfs_s s" \
     "($repo_count packages in the local repository)" >&2

# --- disk: MBR, one bootable ext4 partition from 1 MiB, extlinux ---
raw="$work/disk.raw"
size_mib=8192
truncate -s "${size_mib}M" "$raw"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk --quiet "$raw"
loopdev="$(losetup --find --show --offset $((2048 * 512)) \
                   --sizelimit $(((size_mib - 1) * 1024 * 1024)) "$raw")"
# syslinux reads ext4 without the 64bit feature.
mkfs.ext4 -q -L debroot -O ^64bit,^metadata_csum "$loopdev"
uuid="$(blkid -s UUID -o value "$loopdev")"
mkdir -p "$work/mnt"
mount "$loopdev" "$work/mnt"
tar -C "$rootfs" -cf - . | tar -C "$work/mnt" -xpf -
echo "UUID=$uuid / ext4 errors=remount-ro 0 1" >"$work/mnt/etc/fstab"
mkdir -p "$work/mnt/boot/extlinux"
extlinux --install "$work/mnt/boot/extlinux" >/dev/null 2>&1
cat >"$work/mnt/boot/extlinux/extlinux.conf" <<EOF
DEFAULT debian
TIMEOUT 1
LABEL debian
    LINUX /boot/vmlinuz-$kver
    INITRD /boot/initrd.img-$kver
    APPEND root=UUID=$uuid ro console=tty0 console=ttyS0,115200
EOF
umount "$work/mnt"
losetup -d "$loopdev"
loopdev=""
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$raw" bs=440 count=1 conv=notrunc status=none

# --- the box: metadata.json, Vagrantfile, box.img (qcow2) ---
mkdir -p "$work/box"
qemu-img convert -O qcow2 "$raw" "$work/box/box.img"
rm -f "$raw"
cat >"$work/box/metadata.json" <<EOF
{"provider": "libvirt", "format": "qcow2", "virtual_size": $((size_mib / 1024))}
EOF
cat >"$work/box/Vagrantfile" <<'EOF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.disk_bus = "virtio"
  end
end
EOF
tar -C "$work/box" -cf "$box.tmp" metadata.json Vagrantfile box.img
mv "$box.tmp" "$box"
summary="build-box: $box built in $((SECONDS - start)) s (rootfs $rootfs_s s, suite $suite,"
summary+=" kernel $kver, $repo_count packages in the local repository)"
echo "$summary" >"$box.log"
echo "$summary" >&2
echo "$box"
