#!/usr/bin/env bash
# Install what the VM test needs on the test host (Debian 12, root), idempotently.
# Daemons that these packages ship are NOT started by the installation: a temporary
# policy-rc.d refuses every start, and libvirt's "default" NAT network is kept from
# autostarting. The test starts libvirtd itself, inside a network namespace it owns.
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib/apt.sh"

PACKAGES=(
    vagrant vagrant-libvirt                       # Vagrant 2.3 + the libvirt provider
    libvirt-daemon-system libvirt-clients         # libvirtd, virtlogd, virsh
    qemu-system-x86 qemu-utils                    # TCG emulation, qemu-img
    dnsmasq-base iptables                         # DHCP on the isolated management net
    mmdebstrap dpkg-dev apt-utils                 # guest image + its local apt repository
    e2fsprogs fdisk util-linux kmod               # disk image assembly
    extlinux syslinux-common                      # the image's boot loader
    openssh-client rsync iproute2 procps python3-venv
)

mapfile -t missing < <(missing_packages "${PACKAGES[@]}")

if ((${#missing[@]})); then
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# installed by tests/vm/host-deps.sh for the duration of apt-get\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        created_policy=1
    fi
    trap '[[ $created_policy == 1 ]] && rm -f "$policy"' EXIT
    apt_install "${missing[@]}"
fi

# libvirt's stock "default" network (NAT, virbr0) must never start in the host's namespace.
rm -f /etc/libvirt/qemu/networks/autostart/default.xml

# Nothing of libvirt may be running in the root namespace because of us.
for daemon in libvirtd virtlogd virtqemud dnsmasq; do
    for pid in $(pgrep -x "$daemon" || true); do
        if [[ "$(readlink "/proc/$pid/ns/net")" == "$(readlink /proc/1/ns/net)" ]]; then
            echo "host-deps: WARNING: $daemon (pid $pid) runs in the root network namespace;" \
                 "the VM test does not use it" >&2
        fi
    done
done
if ip link show virbr0 >/dev/null 2>&1; then
    echo "host-deps: WARNING: virbr0 exists in the root network namespace (not ours)" >&2
fi
