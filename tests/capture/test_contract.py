"""The record contract: the families table against what BCC compiled from bpf/*.c.

Every record struct is compared field by field (names, order, offsets, sizes, element
types, nested structs) with BCC's ctypes view of the C struct, so a change on one side only
fails here. The programs must also attach to exactly the tracepoints the table declares.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from collector.capture.families import FAMILIES, IDENTITY, Family
from collector.capture.layout import Field, Layout
from collector.capture.probes import ProbeError, Probes, check_attached
from collector.config import config_from_mapping

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="BPF needs root")

# C scalar -> (size, signed) as ctypes sees it; char arrays are c_char arrays.
SCALARS = {"u32": (4, False), "s32": (4, True), "u64": (8, False), "u8": (1, False)}


@pytest.fixture(scope="module")
def probes() -> Iterator[Probes]:
    cfg = config_from_mapping({"metrics": {"enabled": False}})
    loaded = Probes(cfg.capture)
    loaded.load()
    try:
        yield loaded
    finally:
        loaded.close()


def record_struct(probes: Probes, family: Family) -> Any:
    """BCC's ctypes class for the family's record struct (a per-CPU map's single value)."""
    table = probes.bpf[family.record_map.encode()]
    return getattr(table, "sLeaf", table.Leaf)


def _element(field: Field, c_type: Any, where: str) -> list[str]:
    length = getattr(c_type, "_length_", 1)
    element = getattr(c_type, "_type_", c_type) if length > 1 or field.count > 1 else c_type
    if field.ctype == "char":
        return [] if element is ctypes.c_char else [f"{where}: C type {element}, not char"]
    size, signed = SCALARS[field.ctype]
    c_signed = element(-1).value < 0
    if (ctypes.sizeof(element), c_signed) != (size, signed):
        return [f"{where}: C type {element.__name__}, declared {field.ctype}"]
    return []


def mismatches(layout: Layout, c_struct: Any, constants: Mapping[str, int],
               path: str = "") -> list[str]:
    """Every difference between a declared layout and a compiled C struct."""
    where = f"{path}struct {layout.name}"
    problems: list[str] = []
    if c_struct.__name__ != layout.name:
        problems.append(f"{where}: C struct is {c_struct.__name__}")
    # BCC adds __pad_* members for padding the compiler inserts; sizeof covers those.
    c_fields = {f[0]: f[1] for f in c_struct._fields_ if not f[0].startswith("__pad")}
    if list(c_fields) != [f.name for f in layout.fields]:
        problems.append(f"{where}: C fields {list(c_fields)}, declared "
                        f"{[f.name for f in layout.fields]}")
    for f in layout.fields:
        if f.name not in c_fields:
            continue
        member = getattr(c_struct, f.name)
        size = f.tail(constants) * f.element_size if f.tail else f.size
        if (member.offset, member.size) != (layout.offsets[f.name], size):
            problems.append(f"{where}.{f.name}: C offset/size {member.offset}/{member.size}, "
                            f"declared {layout.offsets[f.name]}/{size}")
        c_type = c_fields[f.name]
        if f.nested is not None:
            if not (isinstance(c_type, type) and issubclass(c_type, ctypes.Structure)):
                problems.append(f"{where}.{f.name}: not a struct in C")
            else:
                problems += mismatches(f.nested, c_type, constants, f"{where}.{f.name} -> ")
        else:
            problems += _element(f, c_type, f"{where}.{f.name}")
    if ctypes.sizeof(c_struct) != layout.full_size(constants):
        problems.append(f"{where}: sizeof {ctypes.sizeof(c_struct)} in C, declared "
                        f"{layout.full_size(constants)}")
    return problems


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_record_struct_matches_the_compiled_c(probes: Probes, family: Family) -> None:
    assert probes.spec is not None
    c_struct = record_struct(probes, family)
    assert mismatches(family.layout, c_struct, probes.spec.constants) == []


def test_a_layout_changed_on_one_side_is_caught(probes: Probes) -> None:
    assert probes.spec is not None
    family = FAMILIES[0]
    c_struct = record_struct(probes, family)
    swapped = list(family.layout.fields)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    problems = mismatches(Layout(family.layout.name, swapped), c_struct, probes.spec.constants)
    assert any("C fields" in p for p in problems)
    assert any("exec_event.retval: C offset/size 8/4, declared 4/4" in p for p in problems)
    unsigned = [dataclasses.replace(f, ctype="u32") if f.name == "retval" else f
                for f in family.layout.fields]
    problems = mismatches(Layout(family.layout.name, unsigned), c_struct, probes.spec.constants)
    assert problems == ["struct exec_event.retval: C type c_int, declared u32"]
    # A nested struct one byte longer moves everything after it.
    wider = [dataclasses.replace(f, count=f.count + 1) if f.name == "comm" else f
             for f in IDENTITY.fields]
    grown = [dataclasses.replace(f, ctype=Layout("identity", wider)) if f.name == "id" else f
             for f in family.layout.fields]
    problems = mismatches(Layout(family.layout.name, grown), c_struct, probes.spec.constants)
    assert any(".id -> struct identity.comm" in p for p in problems)
    assert any("filename: C offset/size" in p for p in problems)


def test_programs_attach_to_the_declared_tracepoints(probes: Probes) -> None:
    assert probes.spec is not None
    attached = set(probes.bpf.tracepoint_fds) | set(probes.bpf.raw_tracepoint_fds)
    declared = {tp.bcc_name for f in probes.spec.families for tp in f.tracepoints}
    assert attached == declared
    assert b"syscalls:sys_enter_execve" in attached
    assert b"sched_process_fork" in attached
    with pytest.raises(ProbeError, match="declared but not attached"):
        check_attached(probes.spec.families, attached - {b"sched_process_fork"})
