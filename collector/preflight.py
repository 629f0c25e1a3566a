"""`audit-collector check`: one line per thing the collector needs, and what to do about it."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from collector.capture import bashfind
from collector.capture.families import FAMILIES
from collector.config import Config, outputs_of, parse_listen
from collector.delivery.elasticsearch.settings import dead_letter_path


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    # A failed fatal check means the collector cannot run; a non-fatal one is a warning.
    fatal: bool = True

    def line(self) -> str:
        mark = "ok  " if self.ok else ("FAIL" if self.fatal else "warn")
        return f"[{mark}] {self.name}: {self.detail}"


BTF_PATH = "/sys/kernel/btf/vmlinux"
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
# Per family (its config switch), the tracefs directories of the tracepoints it attaches to.
TRACEPOINTS = {f.name: tuple(tp.tracefs for tp in f.tracepoints)
               for f in FAMILIES if f.tracepoints}
# CAP_SYS_ADMIN (21), CAP_PERFMON (38), CAP_BPF (39)
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


def _effective_caps() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


PERF_EVENT_PARANOID = Path("/proc/sys/kernel/perf_event_paranoid")


def _perf_event_paranoid() -> int | None:
    try:
        return int(PERF_EVENT_PARANOID.read_text().strip())
    except (OSError, ValueError):
        return None


def check_privileges(caps: int | None = None, paranoid: int | None = None) -> CheckResult:
    """caps/paranoid: the effective capability mask and perf_event_paranoid (read when None)."""
    caps = _effective_caps() if caps is None else caps
    has = lambda bit: bool(caps >> bit & 1)  # noqa: E731
    if has(CAP_SYS_ADMIN):
        return CheckResult("privileges", True, f"euid {os.geteuid()}, CAP_SYS_ADMIN present")
    if not (has(CAP_BPF) and has(CAP_PERFMON)):
        return CheckResult("privileges", False,
                           "needs root, or CAP_BPF + CAP_PERFMON (+ CAP_SYS_ADMIN under "
                           "kernel.perf_event_paranoid > 2); run as root")
    paranoid = _perf_event_paranoid() if paranoid is None else paranoid
    if paranoid is not None and paranoid > 2:
        # Debian and Ubuntu patch level 3 in: perf_event_open (tracepoints, uprobes) then
        # needs CAP_SYS_ADMIN, whatever CAP_PERFMON says.
        return CheckResult("privileges", False,
                           f"CAP_BPF + CAP_PERFMON present, but kernel.perf_event_paranoid="
                           f"{paranoid} also requires CAP_SYS_ADMIN: add it to the unit's "
                           "CapabilityBoundingSet/AmbientCapabilities, or set "
                           "kernel.perf_event_paranoid=2")
    return CheckResult("privileges", True,
                       f"euid {os.geteuid()}, CAP_BPF + CAP_PERFMON present "
                       f"(perf_event_paranoid={paranoid})")


def check_btf_present() -> CheckResult:
    """The cheap half of check_btf, for `run` (the probes resolve the offsets anyway)."""
    if Path(BTF_PATH).exists():
        return CheckResult("kernel BTF", True, f"{BTF_PATH} present")
    return CheckResult("kernel BTF", False, f"{BTF_PATH} missing: the kernel needs "
                       "CONFIG_DEBUG_INFO_BTF=y (struct offsets are read from it)")


def check_btf() -> CheckResult:
    from collector.capture.btf import Btf, BtfError
    from collector.capture.offsets import explain_missing, resolve_offsets

    if not Path(BTF_PATH).exists():
        return CheckResult("kernel BTF", False,
                           f"{BTF_PATH} missing: the kernel needs CONFIG_DEBUG_INFO_BTF=y "
                           "(struct offsets are read from it, never from headers)")
    try:
        report = resolve_offsets(Btf.load(BTF_PATH))
    except (BtfError, OSError) as exc:
        return CheckResult("kernel BTF", False, f"cannot read {BTF_PATH}: {exc}")
    if not report.ok:
        return CheckResult("kernel BTF", False, "; ".join(explain_missing(report, True)))
    optional = explain_missing(report)
    detail = f"{len(report.values)} offsets resolved from {BTF_PATH}"
    if optional:
        detail += f" (optional features off: {'; '.join(optional)})"
    return CheckResult("kernel BTF", True, detail)


def check_headers() -> CheckResult:
    release = os.uname().release
    base = Path("/lib/modules") / release
    for tree in (base / "build", base / "source"):
        if (tree / "include/linux/kconfig.h").exists():
            real = tree.resolve()
            note = "" if release in real.name else (
                " (not this kernel's: used only to compile; offsets come from BTF)")
            return CheckResult("header tree", True, f"{tree} -> {real}{note}")
    return CheckResult("header tree", False,
                       f"no kernel header tree under {base}/build: BCC needs one to compile; "
                       "run scripts/setup-host.sh (installs the closest linux-headers package)")


def _tracefs() -> Path | None:
    for root in TRACEFS:
        try:
            if Path(root, "events").is_dir():
                return Path(root)
        except PermissionError:  # not root: the privileges check says what is missing
            continue
    return None


def check_tracefs(cfg: Config) -> list[CheckResult]:
    root = _tracefs()
    if root is None:
        return [CheckResult("tracefs", False,
                            "not mounted: mount -t tracefs nodev /sys/kernel/tracing")]
    results = [CheckResult("tracefs", True, f"mounted at {root}")]
    for family, tracepoints in TRACEPOINTS.items():
        if not getattr(cfg.capture, family):
            continue
        missing = [tp for tp in tracepoints if not (root / "events" / tp).is_dir()]
        results.append(CheckResult(
            f"tracepoints ({family})", not missing,
            "all present" if not missing else f"missing: {', '.join(missing)}"))
    return results


def check_bcc() -> CheckResult:
    try:
        import bcc
    except ImportError:
        return CheckResult("BCC", False,
                           "python module bcc missing: apt-get install python3-bpfcc and use "
                           "a venv made with /usr/bin/python3 -m venv --system-site-packages")
    return CheckResult("BCC", True, f"bcc module from {Path(bcc.__file__).parent}")


def check_bash(cfg: Config) -> list[CheckResult]:
    if not cfg.capture.bash:
        return []
    results = []
    for path, found in bashfind.initial_bash_targets(cfg.capture.bash_paths):
        if found is None:
            results.append(CheckResult(f"bash {path}", False, "no readline symbol found",
                                       fatal=False))
        else:
            _key, target, library = found
            where = f"in {target} (libreadline)" if library else "statically linked"
            results.append(CheckResult(f"bash {path}", True, f"readline {where}"))
    if not results:
        results.append(CheckResult("bash", False, "no bash binary found", fatal=False))
    return results


def _writable_dir_problem(path: Path) -> str | None:
    """Why `path` cannot be used (or created) as a directory; None when it can."""
    probe = path.resolve()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory"
    if not os.access(probe, os.W_OK):
        return f"{probe} is not writable"
    return None


def check_metrics_listen(cfg: Config) -> list[CheckResult]:
    """Bind the metrics address once, as `run` will (in use, not configured, IPv6...)."""
    if not cfg.metrics.enabled:
        return []
    host, port = parse_listen(cfg.metrics.listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        return [CheckResult("metrics.listen", False,
                            f"{cfg.metrics.listen}: {exc.strerror or exc}")]
    return [CheckResult("metrics.listen", True, f"{cfg.metrics.listen} free")]


def check_dirs(cfg: Config) -> list[CheckResult]:
    dirs = {"state_dir": Path(cfg.state_dir)}
    if any(o.kind == "elasticsearch" for o in outputs_of(cfg)):
        dirs["spool.dir"] = Path(cfg.spool.dir)
        # Rejected documents are acknowledged only once written here: an unwritable place
        # holds them in the spool.
        dirs["elasticsearch.dead_letter_file"] = dead_letter_path(cfg).parent
    results = []
    for key, path in dirs.items():
        problem = _writable_dir_problem(path)
        results.append(CheckResult(key, problem is None, problem or f"{path} usable"))
    return results


def check_outputs(cfg: Config) -> list[CheckResult]:
    results = []
    for output in outputs_of(cfg):
        if output.kind == "file":
            problem = _writable_dir_problem(Path(output.target).parent)
            results.append(CheckResult(f"output file:{output.target}", problem is None,
                                       problem or "writable"))
        elif output.kind == "stdout":
            results.append(CheckResult("output stdout", True, "ok"))
    if any(o.kind == "elasticsearch" for o in outputs_of(cfg)):
        results.extend(check_cluster(cfg))
    return results


CLUSTER_TIMEOUT_S = 5.0
TEMPLATE_STATES = {
    "current": (True, "{name} installed and current"),
    "outdated": (False, "{name} differs from this collector's (run audit-collector setup)"),
    "missing": (False, "{name} is not installed (run audit-collector setup)"),
}


def check_cluster(cfg: Config) -> list[CheckResult]:
    """Reachability (with version) and whether the template is installed and current."""
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    from collector.delivery.elasticsearch import index
    from collector.delivery.elasticsearch.client import build_client
    from collector.delivery.elasticsearch.settings import ClusterConfigError

    try:
        client = build_client(cfg, request_timeout_s=CLUSTER_TIMEOUT_S)
    except ClusterConfigError as exc:
        return [CheckResult("elasticsearch", False, str(exc))]
    try:
        version = index.cluster_version(client)
        ok, detail = TEMPLATE_STATES[index.template_state(client, cfg)]
        stream_ok, stream_detail = index.check_stream(client, cfg)
        return [CheckResult("elasticsearch reachable", True, f"version {version}"),
                CheckResult("index template", ok, detail.format(name=index.template_name(cfg))),
                CheckResult(f"data stream {cfg.elasticsearch.data_stream}", stream_ok,
                            stream_detail)]
    except (ApiError, TransportError) as exc:
        return [CheckResult("elasticsearch", False, index.error_text(exc, cfg))]
    finally:
        client.close()


def check_load(cfg: Config) -> CheckResult:
    """Really compile, load and attach the probes, then detach: the definitive answer."""
    import time

    from collector.capture.probes import ProbeError, Probes

    probes = Probes(cfg.capture)
    started = time.monotonic()
    try:
        probes.load()
    except (ProbeError, OSError) as exc:
        return CheckResult("probes", False, str(exc))
    finally:
        probes.close()
    return CheckResult("probes", True,
                       f"compiled, loaded and attached ({', '.join(probes.families)}; "
                       f"{len(probes.bash_probes)} bash binaries) in "
                       f"{time.monotonic() - started:.2f} s")


def blocking_problem(cfg: Config) -> CheckResult | None:
    """What stops `run` before it compiles anything, cheapest first; None when nothing does.
    Without this, a missing privilege or tracefs shows as hundreds of compiler lines."""
    checks = [lambda: [check_privileges()], lambda: [check_bcc()],
              lambda: [check_btf_present()], lambda: check_tracefs(cfg),
              lambda: check_dirs(cfg)]
    for check in checks:
        for result in check():
            if not result.ok and result.fatal:
                return result
    return None


def run_checks(cfg: Config, load: bool = False) -> list[CheckResult]:
    results = [CheckResult("config", True, "valid"), check_privileges(), check_bcc(),
               check_btf(), check_headers()]
    results += check_tracefs(cfg)
    results += check_bash(cfg)
    results += check_dirs(cfg)
    results += check_metrics_listen(cfg)
    results += check_outputs(cfg)
    if load and all(r.ok or not r.fatal for r in results):
        results.append(check_load(cfg))
    return results
