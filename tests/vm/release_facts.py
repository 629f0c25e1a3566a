"""What each Debian release gives the collector, read from the release's own packages.

    .venv/bin/python -m tests.vm.release_facts bullseye bookworm trixie [--json]

For each suite this downloads (with apt-get, into a private apt state under
.cache/vm/facts/SUITE, nothing installed) the kernel image behind linux-image-amd64,
python3-bpfcc, libbpfcc, bash and the Python interpreter, and reports:

* the kernel: package, `uname -r`, CONFIG_DEBUG_INFO_BTF, and the struct members the
  collector needs, resolved by the collector's own BTF reader (collector/offsets.py) on
  the .BTF section of the vmlinux unpacked from the image's vmlinuz;
* BCC: version, the Python binding's ring/perf buffer API, the BPF_RINGBUF_OUTPUT macro
  and its methods in the helpers BCC compiles in (libbcc.so carries them as text);
* the system Python's version, bash's version and whether readline is linked into bash;
* the package names the role installs (BCC binding, headers for that kernel).

The results are the facts of tests/vm/MATRIX.md.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import re
import subprocess
import sys
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from collector.capture.btf import Btf
from collector.capture.offsets import FIELDS, explain_missing, resolve_offsets

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "vm" / "facts"
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# glibc bounds the manylinux tags of the dependency wheels, systemd the unit's directives,
# the pip wheel inside the venv the wheel tags it accepts.
OTHER_PACKAGES = ("libc6", "systemd", "python3-venv", "python3-pip-whl", "python-pip-whl",
                  "libbpf1", "libbpf0", "linux-headers-amd64")
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
RING_API = ("open_ring_buffer", "ring_buffer_poll", "ring_buffer_consume")
PERF_API = ("open_perf_buffer", "perf_buffer_poll", "perf_buffer_consume")
RING_METHODS = ("ringbuf_output", "ringbuf_reserve", "ringbuf_submit", "ringbuf_discard",
                "ringbuf_query")


@dataclass
class ReleaseFacts:
    suite: str
    kernel_package: str = ""
    kernel_version: str = ""
    uname_r: str = ""
    config_btf: bool = False
    vmlinux_btf_bytes: int = 0
    offsets_ok: bool = False
    offsets_missing: list[str] = field(default_factory=list)
    offsets_alternatives: dict[str, str] = field(default_factory=dict)
    headers_package: str = ""
    bcc_binding_package: str = ""
    bcc_version: str = ""
    bcc_ring_api: dict[str, bool] = field(default_factory=dict)
    bcc_perf_api: dict[str, bool] = field(default_factory=dict)
    bcc_ringbuf_macro: bool = False
    bcc_ringbuf_methods: list[str] = field(default_factory=list)
    llvm: str = ""
    python_version: str = ""
    python_package: str = ""
    bash_version: str = ""
    bash_readline: str = ""
    # Versions of further packages the role or the collector's wheels depend on.
    other_versions: dict[str, str] = field(default_factory=dict)


class Apt:
    """apt-get/apt-cache against one suite, with state under a private directory."""

    def __init__(self, suite: str, root: Path) -> None:
        self.suite, self.root = suite, root
        self.conf = root / "apt.conf"

    def setup(self) -> None:
        for d in ("etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d",
                  "var/lib/apt/lists/partial", "var/cache/apt/archives/partial",
                  "var/lib/dpkg", "debs"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "var/lib/dpkg/status").touch()
        s = self.suite
        (self.root / "etc/apt/sources.list").write_text(
            f"deb [signed-by={KEYRING}] {MIRROR} {s} main\n"
            f"deb [signed-by={KEYRING}] {MIRROR} {s}-updates main\n"
            f"deb [signed-by={KEYRING}] {SECURITY} {s}-security main\n")
        self.conf.write_text(
            f'Dir "{self.root}/";\n'
            f'Dir::State::status "{self.root}/var/lib/dpkg/status";\n'
            'APT::Architecture "amd64";\nAPT::Architectures "amd64";\n'
            'APT::Sandbox::User "root";\n')
        self.run("apt-get", "update", "-qq")

    def run(self, *cmd: str, cwd: Path | None = None) -> str:
        return subprocess.run(cmd, env={"APT_CONFIG": str(self.conf), "PATH": "/usr/bin:/bin"},
                              cwd=cwd, check=True, text=True, capture_output=True).stdout

    def field(self, package: str, name: str) -> str:
        """A control field of the candidate version ("" if the package does not exist)."""
        try:
            text = self.run("apt-cache", "show", "--no-all-versions", package)
        except subprocess.CalledProcessError:
            return ""
        m = re.search(rf"^{name}: (.*)$", text, re.M)
        return m.group(1) if m else ""

    def first_dependency(self, package: str) -> str:
        return self.field(package, "Depends").split(",")[0].split()[0]

    def download(self, *packages: str) -> list[Path]:
        self.run("apt-get", "download", "-q", *packages, cwd=self.root / "debs")
        found = []
        for p in packages:
            debs = sorted((self.root / "debs").glob(f"{p.split(':')[0]}_*.deb"))
            if not debs:
                raise RuntimeError(f"{self.suite}: {p} was not downloaded")
            found.append(debs[-1])
        return found


def deb_members(deb: Path) -> dict[str, bytes]:
    """Regular files of a .deb's data archive, by path without the leading './'."""
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True,
                          capture_output=True).stdout
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            if member.isfile():
                fh = tar.extractfile(member)
                if fh is not None:
                    files[member.name.removeprefix("./")] = fh.read()
            elif member.isdir():
                files.setdefault(member.name.removeprefix("./") + "/", b"")
    return files


def vmlinux_from_vmlinuz(image: bytes) -> bytes:
    """Unpack the ELF vmlinux from a bzImage (the payload is xz or zstd on Debian)."""
    for magic, unpack in ((XZ_MAGIC, _unxz), (ZSTD_MAGIC, _unzstd)):
        start = image.find(magic)
        while start >= 0:
            data = unpack(image[start:])
            if data.startswith(b"\x7fELF"):
                return data
            start = image.find(magic, start + 1)
    raise RuntimeError("no xz or zstd payload holding an ELF image in vmlinuz")


def _unxz(data: bytes) -> bytes:
    try:
        return lzma.LZMADecompressor().decompress(data)
    except lzma.LZMAError:
        return b""


def _unzstd(data: bytes) -> bytes:
    # The kernel appends the uncompressed size after the frame: zstd complains about the
    # trailing bytes but has written the whole frame by then.
    return subprocess.run(["zstd", "-dcq"], input=data, capture_output=True).stdout


def btf_section(vmlinux: bytes) -> bytes:
    section = ELFFile(io.BytesIO(vmlinux)).get_section_by_name(".BTF")
    return section.data() if section is not None else b""


def kernel_facts(facts: ReleaseFacts, files: dict[str, bytes]) -> None:
    config = next(v for k, v in files.items() if k.startswith("boot/config-")).decode()
    facts.config_btf = "CONFIG_DEBUG_INFO_BTF=y" in config.splitlines()
    modules = [k for k in files if re.fullmatch(r"(usr/)?lib/modules/[^/]+/", k)]
    facts.uname_r = modules[0].rstrip("/").rsplit("/", 1)[-1]
    vmlinuz = next(v for k, v in files.items() if k.startswith("boot/vmlinuz-"))
    blob = btf_section(vmlinux_from_vmlinuz(vmlinuz))
    facts.vmlinux_btf_bytes = len(blob)
    if not blob:
        facts.offsets_missing = ["no .BTF section in vmlinux"]
        return
    report = resolve_offsets(Btf.from_bytes(blob))
    facts.offsets_ok = report.ok
    facts.offsets_missing = explain_missing(report)
    # Members found under a fallback spelling (first listed path did not match).
    for spec in FIELDS:
        used = report.used.get(spec.macro)
        if used and used != f"{spec.struct}.{spec.paths[0]}":
            facts.offsets_alternatives[spec.macro] = used


def bcc_facts(facts: ReleaseFacts, binding: dict[str, bytes], lib: dict[str, bytes]) -> None:
    py = {k: v.decode() for k, v in binding.items() if k.endswith(".py") and "/bcc/" in k}
    version = next((v for k, v in py.items() if k.endswith("bcc/version.py")), "")
    m = re.search(r"__version__ = '([^']+)'", version)
    facts.bcc_version = m.group(1) if m else "?"
    text = "\n".join(py.values())
    facts.bcc_ring_api = {n: f"def {n}(" in text for n in RING_API}
    facts.bcc_perf_api = {n: f"def {n}(" in text for n in PERF_API}
    so = next(v for k, v in lib.items() if re.search(r"libbcc\.so\.\d", k))
    m = re.search(rb"#define BPF_RINGBUF_OUTPUT\(.*?\n\n", so, re.S)
    facts.bcc_ringbuf_macro = m is not None
    if m:
        facts.bcc_ringbuf_methods = [n for n in RING_METHODS
                                     if f"(*{n})".encode() in m.group(0)]


def bash_facts(facts: ReleaseFacts, files: dict[str, bytes]) -> None:
    elf = ELFFile(io.BytesIO(files["bin/bash"] if "bin/bash" in files else files["usr/bin/bash"]))
    needed = [t.needed for s in elf.iter_sections() if isinstance(s, DynamicSection)
              for t in s.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
    dynsym = elf.get_section_by_name(".dynsym")
    exported = dynsym is not None and bool(dynsym.get_symbol_by_name("readline"))
    linked = "libreadline" if any("libreadline" in n for n in needed) else "static"
    facts.bash_readline = f"{linked}; readline in .dynsym: {'yes' if exported else 'no'}"


def collect(suite: str) -> ReleaseFacts:
    apt = Apt(suite, CACHE / suite)
    apt.setup()
    facts = ReleaseFacts(suite)
    facts.kernel_package = apt.first_dependency("linux-image-amd64")
    facts.kernel_version = apt.field(facts.kernel_package, "Version")
    facts.headers_package = apt.first_dependency("linux-headers-amd64")
    facts.bcc_binding_package = "python3-bpfcc"
    python = re.search(r"python3\.\d+", apt.field("python3-minimal", "Pre-Depends"))
    facts.python_package = python.group(0) if python else "?"
    facts.python_version = apt.field(f"{facts.python_package}-minimal", "Version")
    facts.bash_version = apt.field("bash", "Version")
    libllvm = re.search(r"libllvm\d+", apt.field("libbpfcc", "Depends"))
    facts.llvm = libllvm.group(0) if libllvm else "?"
    for name in OTHER_PACKAGES:
        version = apt.field(name, "Version")
        if version:
            facts.other_versions[name] = version
    image, binding, lib, bash = apt.download(facts.kernel_package, "python3-bpfcc",
                                             "libbpfcc", "bash")
    kernel_facts(facts, deb_members(image))
    bcc_facts(facts, deb_members(binding), deb_members(lib))
    bash_facts(facts, deb_members(bash))
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="+")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    results = [collect(s) for s in args.suites]
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return 0
    for r in results:
        print(f"== {r.suite}")
        for key, value in asdict(r).items():
            if key != "suite":
                print(f"  {key}: {value}")
    return 0 if all(r.offsets_ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
