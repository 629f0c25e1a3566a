"""The sandbox's first process: owns its mount namespace and reaps what the daemons leave.

Run by tests/vm/sandbox.sh as `ip netns exec NS unshare --mount --propagation private
python3 holder.py RUN_DIR`. It bind-mounts the private libvirt directories, becomes a
child subreaper (orphans of libvirtd, virtlogd, dnsmasq and QEMU are re-parented to it,
not to the host's init, and are reaped here), starts virtlogd and libvirtd, writes
RUN_DIR/holder.ready and reaps children until SIGTERM.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def main() -> int:
    run = sys.argv[1]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    os.makedirs("/run/libvirt", exist_ok=True)
    for src, dst in (("libvirt-etc", "/etc/libvirt"), ("libvirt-var-lib", "/var/lib/libvirt"),
                     ("libvirt-var-cache", "/var/cache/libvirt"),
                     ("libvirt-var-log", "/var/log/libvirt"), ("libvirt-run", "/run/libvirt"),
                     ("libvirt-dev/kvm", "/dev/kvm")):
        subprocess.run(["mount", "--bind", os.path.join(run, src), dst], check=True)
    subprocess.run(["virtlogd", "--daemon", "--pid-file", "/run/libvirt/virtlogd.pid"],
                   check=True)
    subprocess.run(["libvirtd", "--daemon", "--pid-file", "/run/libvirt/libvirtd.pid"],
                   check=True)

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with open(os.path.join(run, "holder.ready"), "w") as f:
        f.write(f"{os.getpid()}\n")
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
