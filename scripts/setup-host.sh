#!/usr/bin/env bash
# Prepare this host to run the collector: apt packages, a kernel header tree for BCC's
# compiler, tracefs. Idempotent; run as root. Struct offsets never come from the headers
# installed here (they come from the kernel's BTF), so the closest generic headers do.
set -euo pipefail
source "$(dirname "$0")/lib/apt.sh"

APT_PACKAGES=(python3-bpfcc bpfcc-tools python3-venv python3-pip auditd util-linux procps
              kmod iproute2 binutils)
kernel="$(uname -r)"
arch="$(dpkg --print-architecture)"

mapfile -t missing < <(missing_packages "${APT_PACKAGES[@]}")

headers_pkg=""
if [[ ! -e "/lib/modules/$kernel/build/include/linux/kconfig.h" \
      && ! -e "/lib/modules/$kernel/source/include/linux/kconfig.h" ]]; then
    apt-get update -qq
    if apt-cache show "linux-headers-$kernel" >/dev/null 2>&1; then
        headers_pkg="linux-headers-$kernel"
    else
        headers_pkg="linux-headers-$arch"
        echo "setup: no linux-headers-$kernel in apt; using $headers_pkg for BCC's compiler only" \
             "(struct offsets come from /sys/kernel/btf/vmlinux)" >&2
    fi
    missing+=("$headers_pkg")
fi

APT_UPDATED=$([[ -n "$headers_pkg" ]] && echo 1 || echo 0) apt_install "${missing[@]}"

# Point /lib/modules/<running kernel>/{build,source} at the closest header tree when the
# running kernel has none (Debian splits headers into an arch tree and a -common tree).
if [[ ! -e "/lib/modules/$kernel/build/include/linux/kconfig.h" \
      && ! -e "/lib/modules/$kernel/source/include/linux/kconfig.h" ]]; then
    arch_tree="$(ls -d /usr/src/linux-headers-*-"$arch" 2>/dev/null | sort -V | tail -n1)"
    [[ -n "$arch_tree" ]] || { echo "setup: no linux-headers tree under /usr/src" >&2; exit 1; }
    common_tree="${arch_tree%-"$arch"}-common"
    [[ -d "$common_tree" ]] || common_tree="$arch_tree"
    mkdir -p "/lib/modules/$kernel"
    ln -sfn "$arch_tree" "/lib/modules/$kernel/build"
    ln -sfn "$common_tree" "/lib/modules/$kernel/source"
    echo "setup: linked /lib/modules/$kernel/{build,source} -> $arch_tree, $common_tree" >&2
fi

mountpoint -q /sys/kernel/tracing 2>/dev/null || mount -t tracefs nodev /sys/kernel/tracing
mountpoint -q /sys/kernel/debug 2>/dev/null || mount -t debugfs nodev /sys/kernel/debug || true
