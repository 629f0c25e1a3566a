"""Find bash binaries and the file whose readline() a uretprobe should sit on.

Debian's bash links readline statically (the symbol is in bash itself); other builds link
libreadline.so dynamically, and then the probe goes on the library. Files are identified by
(st_dev, st_ino) so the same binary under several paths (or inside a container's root,
reached through /proc/PID/root) is probed once.
"""

from __future__ import annotations

import os
import struct
from functools import lru_cache
from typing import BinaryIO

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
# (file key, file whose readline() to probe, whether that is a library)
ReadlineTarget = tuple[FileKey, str, bool]


def file_key(path: str) -> FileKey | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def initial_bash_paths(extra: tuple[str, ...] = ()) -> list[str]:
    return [p for p in (*DEFAULT_BASH_PATHS, *extra) if os.path.exists(p)]


def initial_bash_targets(extra: tuple[str, ...] = ()
                         ) -> list[tuple[str, ReadlineTarget | None]]:
    """(path, readline target or None when it has none) of each distinct bash file among
    the initial paths (/bin/bash and /usr/bin/bash are one file under usrmerge: its
    symbols are read once)."""
    seen: set[FileKey | None] = set()
    found: list[tuple[str, ReadlineTarget | None]] = []
    for path in initial_bash_paths(extra):
        key = file_key(path)
        if key in seen:
            continue
        seen.add(key)
        found.append((path, readline_target(path)))
    return found


def looks_like_bash(path: str) -> bool:
    """Whether the ELF's dynamic string table names both bash's marker and readline: only
    the ELF header, the section headers and that table are read, never the whole file (a
    16 GiB sparse copy of a binary once took a minute of CPU to scan)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return _looks_like_bash(path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4096)
def _looks_like_bash(path: str, _dev: int, _ino: int, _mtime: int, _size: int) -> bool:
    try:
        with open(path, "rb") as fh:
            strings = dynamic_strings(fh)
    except OSError:
        return False
    return strings is not None and READLINE_NAME in strings and BASH_MARKER in strings


MAX_SECTIONS = 4096
MAX_DYNSTR_BYTES = 8 << 20  # bash's is ~30 KiB; the largest libraries' a few MiB
SHT_DYNSYM = 11
# e_shoff, e_shentsize, e_shnum (the header offsets of ELF32 and ELF64) and the section
# header fields read: sh_type, sh_link, sh_offset, sh_size.
_ELF_LAYOUTS = {
    1: ("I", 0x20, 0x2E, 0x30, 40, ("I", 4), ("I", 24), ("I", 16), ("I", 20)),
    2: ("Q", 0x28, 0x3A, 0x3C, 64, ("I", 4), ("I", 40), ("Q", 24), ("Q", 32)),
}


def dynamic_strings(fh: BinaryIO) -> bytes | None:
    """The string table of the ELF's dynamic symbols (.dynstr), read with bounded reads;
    None for anything else (not ELF, no section headers, implausible sizes)."""
    ident = fh.read(64)
    if len(ident) < 64 or ident[:4] != b"\x7fELF" or ident[4] not in _ELF_LAYOUTS \
            or ident[5] not in (1, 2):
        return None
    order = "<" if ident[5] == 1 else ">"
    word, at_shoff, at_shentsize, at_shnum, entsize, f_type, f_link, f_off, f_size = \
        _ELF_LAYOUTS[ident[4]]
    shoff = struct.unpack_from(order + word, ident, at_shoff)[0]
    shentsize = struct.unpack_from(order + "H", ident, at_shentsize)[0]
    shnum = struct.unpack_from(order + "H", ident, at_shnum)[0]
    if shentsize != entsize or not 0 < shnum <= MAX_SECTIONS:
        return None
    fh.seek(shoff)
    table = fh.read(shentsize * shnum)
    if len(table) < shentsize * shnum:
        return None

    def field(index: int, spec: tuple[str, int]) -> int:
        return struct.unpack_from(order + spec[0], table, index * shentsize + spec[1])[0]

    for index in range(shnum):
        if field(index, f_type) != SHT_DYNSYM:
            continue
        strtab = field(index, f_link)
        if strtab >= shnum or field(strtab, f_size) > MAX_DYNSTR_BYTES:
            return None
        fh.seek(field(strtab, f_off))
        return fh.read(field(strtab, f_size))
    return None


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


def inspect_bash(path: str, hint_pid: int) -> ReadlineTarget | None:
    """Where to probe readline() if `path` is a bash, else None (bounded reads first: the
    symbol tables are parsed only for files whose dynamic strings name bash)."""
    return readline_target(path, hint_pid) if looks_like_bash(path) else None


def readline_target(path: str, hint_pid: int | None = None) -> ReadlineTarget | None:
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
