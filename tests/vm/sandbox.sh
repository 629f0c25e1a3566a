#!/usr/bin/env bash
# A private libvirt for the VM test: its own network namespace, its own mount namespace,
# its own libvirt state. Nothing it starts touches the host's network namespace.
#
#   sandbox.sh start RUN_DIR    create namespace "$AC_NETNS" (default acvm), start virtlogd
#                               and libvirtd in it, define the storage pool and the isolated
#                               management network; prints the holder PID
#   sandbox.sh exec RUN_DIR CMD...   run CMD inside the sandbox (network + mount namespace)
#   sandbox.sh stop RUN_DIR     destroy domains, stop the daemons by PID, delete the namespace
#
# Layout inside the sandbox's mount namespace (everything bind-mounted from RUN_DIR):
#   /etc/libvirt, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt, /run/libvirt
#     private copies, so the host's libvirt configuration and state are never used;
#   /dev/kvm   a private device node with group kvm: libvirt otherwise re-probes QEMU's
#     capabilities on every call (~60 s per domain definition) because the host's node is
#     root-only. The domains use TCG (driver "qemu") all the same.
# The management network (default 192.168.121.0/24 on bridge acvbr0) has no <forward>:
# isolated, no NAT, no uplink; it exists only in the namespace.
set -euo pipefail

cmd="${1:?usage: sandbox.sh start|exec|stop RUN_DIR [CMD...]}"
run="${2:?usage: sandbox.sh start|exec|stop RUN_DIR [CMD...]}"
shift 2
NETNS="${AC_NETNS:-acvm}"
here="$(cd "$(dirname "$0")" && pwd)"
NET_NAME="${AC_VM_MGMT_NET_NAME:-acvm-mgmt}"
NET_PREFIX="${AC_VM_MGMT_NET_PREFIX:-192.168.121}"   # /24
BRIDGE="${AC_VM_MGMT_BRIDGE:-acvbr0}"

holder_pid() { cat "$run/holder.pid" 2>/dev/null; }

in_sandbox() {
    local pid
    pid="$(holder_pid)"
    [[ -n "$pid" && -d "/proc/$pid" ]] || { echo "sandbox: not running" >&2; return 1; }
    nsenter --target "$pid" --mount --net --wd="$PWD" -- "$@"
}

start() {
    mkdir -p "$run"
    run="$(cd "$run" && pwd)"
    if [[ -n "$(holder_pid)" && -d "/proc/$(holder_pid)" ]]; then
        echo "sandbox: already running (holder $(holder_pid))" >&2
        holder_pid
        return 0
    fi
    if ip netns list | grep -qw "^$NETNS"; then
        echo "sandbox: network namespace $NETNS exists already (a previous run?); remove it" \
             "with: tests/vm/sandbox.sh stop $run" >&2
        return 1
    fi
    ip netns add "$NETNS"
    echo "$NETNS" >"$run/netns"
    ip -n "$NETNS" link set lo up

    # Private libvirt directories.
    local d
    for d in etc var-lib var-cache var-log run dev; do mkdir -p "$run/libvirt-$d"; done
    if [[ ! -e "$run/libvirt-etc/libvirtd.conf" ]]; then
        cp -a /etc/libvirt/. "$run/libvirt-etc/"
        # No stock networks (the "default" NAT network) and nothing autostarted.
        rm -rf "$run/libvirt-etc/qemu/networks" "$run/libvirt-etc/qemu/autostart"
        mkdir -p "$run/libvirt-etc/qemu/networks/autostart"
        cp -a /var/lib/libvirt/. "$run/libvirt-var-lib/"
        rm -rf "$run/libvirt-var-lib/dnsmasq"/* "$run/libvirt-var-lib/images"/*
    fi
    rm -f "$run/libvirt-dev/kvm"
    mknod "$run/libvirt-dev/kvm" c 10 232
    chgrp kvm "$run/libvirt-dev/kvm"
    chmod 0660 "$run/libvirt-dev/kvm"

    # The holder process owns the mount namespace, bind-mounts the private directories,
    # starts virtlogd and libvirtd and reaps their orphans (tests/vm/holder.py); everything
    # else joins its namespaces with nsenter.
    rm -f "$run/holder.ready"
    ip netns exec "$NETNS" unshare --mount --propagation private -- \
        /usr/bin/python3 "$here/holder.py" "$run" </dev/null >"$run/holder.log" 2>&1 &
    local holder=$!
    echo "$holder" >"$run/holder.pid"
    local i
    for i in $(seq 100); do
        [[ -e "$run/holder.ready" ]] && break
        [[ -d "/proc/$holder" ]] || { cat "$run/holder.log" >&2; return 1; }
        sleep 0.1
    done
    [[ -e "$run/holder.ready" ]] || { echo "sandbox: holder did not start" >&2; return 1; }
    for i in $(seq 100); do
        in_sandbox virsh -q -c qemu:///system version >/dev/null 2>&1 && break
        sleep 0.3
    done
    in_sandbox virsh -q -c qemu:///system version >/dev/null

    in_sandbox virsh -q -c qemu:///system pool-define-as default dir \
        --target /var/lib/libvirt/images >/dev/null
    in_sandbox virsh -q -c qemu:///system pool-start default >/dev/null
    cat >"$run/net.xml" <<EOF
<network>
  <name>$NET_NAME</name>
  <bridge name='$BRIDGE' stp='on' delay='0'/>
  <ip address='$NET_PREFIX.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='$NET_PREFIX.10' end='$NET_PREFIX.200'/>
    </dhcp>
  </ip>
</network>
EOF
    in_sandbox virsh -q -c qemu:///system net-define "$run/net.xml" >/dev/null
    in_sandbox virsh -q -c qemu:///system net-start "$NET_NAME" >/dev/null
    # The bridge has no carrier until a VM attaches; the address is usable all the same.
    echo "$holder"
}

stop() {
    [[ -d "$run" ]] || return 0
    local pid netns
    pid="$(holder_pid || true)"
    netns="$(cat "$run/netns" 2>/dev/null || echo "$NETNS")"
    if [[ -n "$pid" && -d "/proc/$pid" ]]; then
        # Domains first (QEMU processes), then the daemons, each by its PID file.
        local dom
        for dom in $(in_sandbox virsh -q -c qemu:///system list --all --name 2>/dev/null || true); do
            in_sandbox virsh -q -c qemu:///system destroy "$dom" >/dev/null 2>&1 || true
        done
        local f
        for f in libvirtd virtlogd; do
            local dpid
            dpid="$(in_sandbox cat "/run/libvirt/$f.pid" 2>/dev/null || true)"
            [[ -n "$dpid" ]] && kill "$dpid" 2>/dev/null || true
        done
        # Whatever is still alive in the namespace (dnsmasq, QEMU, ES server, ssh ...),
        # found by its network namespace, never by name.
        local target p
        target="$(readlink "/proc/$pid/ns/net")"
        for i in 1 2 3 4 5 6 7 8 9 10; do
            local left=()
            for p in /proc/[0-9]*; do
                p="${p#/proc/}"
                [[ "$p" == "$pid" || "$p" == "$$" ]] && continue
                [[ "$(readlink "/proc/$p/ns/net" 2>/dev/null)" == "$target" ]] && left+=("$p")
            done
            ((${#left[@]})) || break
            if ((i < 6)); then kill -TERM "${left[@]}" 2>/dev/null || true
            else kill -KILL "${left[@]}" 2>/dev/null || true; fi
            sleep 0.5
        done
        kill "$pid" 2>/dev/null || true
    fi
    rm -f "$run/holder.pid"
    if ip netns list | grep -qw "^$netns"; then
        ip netns delete "$netns"
    fi
}

case "$cmd" in
    start) start ;;
    exec) in_sandbox "$@" ;;
    stop) stop ;;
    *) echo "sandbox: unknown command $cmd" >&2; exit 2 ;;
esac
