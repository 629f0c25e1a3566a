"""Find bash binaries and the file whose readline() a uretprobe should sit on.

Debian's bash links readline statically (the symbol is in bash itself); other builds link
libreadline.so dynamically, and then the probe goes on the library. Files are identified by
(st_dev, st_ino) so the same binary under several paths (or inside a container's root,
reached through /proc/PID/root) is probed once.
"""

from __future__ import annotations

import mmap
import os
from functools import lru_cache

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

DEFAULT_BASH_PATHS = ("/bin/bash", "/usr/bin/bash", "/usr/local/bin/bash")
# bash exports this for loadable builtins; readline users such as python or gdb do not.
BASH_MARKER = b"shell_version_string\x00"
# No leading NUL: linkers merge string tails, so "readline" may end "rl_readline".
READLINE_NAME = b"readline\x00"
LIBRARY_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64",
                "lib", "usr/lib", "usr/local/lib", "lib/aarch64-linux-gnu",
                "usr/lib/aarch64-linux-gnu")

FileKey = tuple[int, int]


def file_key(path: str) -> FileKey | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def initial_bash_paths(extra: tuple[str, ...] = ()) -> list[str]:
    return [p for p in (*DEFAULT_BASH_PATHS, *extra) if os.path.exists(p)]


# A bash (statically linked readline included) is a few MiB. Scanning a huge executable
# would page all of it into the collector and stall the capture loop meanwhile.
MAX_BASH_BYTES = 64 << 20


def looks_like_bash(path: str) -> bool:
    """A cheap byte scan first: only files naming both symbols get an ELF parse."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_size > MAX_BASH_BYTES:
        return False
    return _looks_like_bash(path, st.st_dev, st.st_ino, st.st_mtime_ns)


@lru_cache(maxsize=4096)
def _looks_like_bash(path: str, _dev: int, _ino: int, _mtime: int) -> bool:
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"\x7fELF":
                return False
            with mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ) as data:
                return data.find(READLINE_NAME) >= 0 and data.find(BASH_MARKER) >= 0
    except (OSError, ValueError):
        return False


def _symbols(elf: ELFFile) -> tuple[set[str], set[str]]:
    """(defined, undefined) function names of the ELF's symbol tables."""
    defined: set[str] = set()
    undefined: set[str] = set()
    for section in elf.iter_sections():
        if not isinstance(section, SymbolTableSection):
            continue
        for sym in section.iter_symbols():
            if sym.name != "readline":
                continue
            if sym["st_shndx"] == "SHN_UNDEF":
                undefined.add(sym.name)
            else:
                defined.add(sym.name)
    return defined, undefined


def _needed_libraries(elf: ELFFile) -> list[str]:
    for section in elf.iter_sections():
        if isinstance(section, DynamicSection):
            return [t.needed for t in section.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
    return []


def _find_library(name: str, root: str) -> str | None:
    for directory in LIBRARY_DIRS:
        candidate = os.path.join(root, directory, name)
        if os.path.exists(candidate):
            return candidate
    return None


def readline_target(path: str, hint_pid: int | None = None) -> tuple[FileKey, str, bool] | None:
    """(key, file to probe, is_library) for a bash at `path`, or None if it is not one.

    `hint_pid` names a process that runs this bash, so a library is looked up under its
    root (a container's own libreadline).
    """
    try:
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            defined, undefined = _symbols(elf)
            needed = _needed_libraries(elf)
    except (OSError, ELFError):
        return None
    if "readline" in defined:
        key = file_key(path)
        return (key, path, False) if key else None
    if "readline" not in undefined:
        return None
    root = f"/proc/{hint_pid}/root" if hint_pid else "/"
    for lib in needed:
        if "readline" in lib:
            library = _find_library(lib, root)
            key = file_key(library) if library else None
            if library and key:
                return key, library, True
    return None
