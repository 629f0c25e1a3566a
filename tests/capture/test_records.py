"""Layouts, the families table and decoding, without root (the BPF side: test_contract.py)."""

from __future__ import annotations

import dataclasses

import pytest

from collector import preflight
from collector.capture.families import (
    BASH,
    CLONE_FLAGS,
    EXEC,
    FAMILIES,
    NAMESPACES,
    NEW_NS_FLAGS,
    _check,
    c_constants,
)
from collector.capture.layout import Layout, chars, nested, padding, s32, tail, u32, u64
from collector.capture.records import DECODERS, DecodeError, ExeId, decode
from collector.capture.settings import CaptureConfig
from tests.ecs.golden_cases import CASES, who
from tests.ecs.recordbytes import bash_record, exec_record, kernel_dev

# --------------------------------------------------------------------------- layouts

INNER = Layout("inner", [u32("a"), chars("tag", 3)])
OUTER = Layout("outer", [u32("kind"), u64("big"), s32("small"), padding("pad", "u32"),
                         nested("inner", INNER), chars("name", 5), tail("rest", lambda c: 8)])


def test_offsets_follow_natural_alignment() -> None:
    assert INNER.offsets == {"a": 0, "tag": 4}
    assert (INNER.size, INNER.align) == (8, 4)  # 7 bytes rounded up to the u32 alignment
    assert OUTER.offsets == {"kind": 0, "big": 8, "small": 16, "pad": 20, "inner": 24,
                             "name": 32, "rest": 37}
    assert OUTER.fixed_size == 37
    assert OUTER.full_size({}) == 48  # 37 + 8, rounded up to the u64 alignment
    assert OUTER.names == ("kind", "big", "small", "inner", "name")


def test_pack_and_unpack_by_name() -> None:
    data = OUTER.pack({"kind": 7, "big": 2**40, "small": -3, "inner": {"a": 9, "tag": b"xy"},
                       "name": b"abcde"}, tail_bytes=b"tail")
    assert len(data) == OUTER.fixed_size + 4
    view = OUTER.unpack_from(data)
    assert (view.kind, view.big, view.small, view.name) == (7, 2**40, -3, b"abcde")
    assert (view.inner.a, view.inner.tag) == (9, b"xy\0")
    assert data[OUTER.fixed_size:] == b"tail"


def test_a_tail_must_be_last() -> None:
    with pytest.raises(ValueError, match="must be the last field"):
        Layout("bad", [tail("rest", lambda c: 4), u32("after")])


# --------------------------------------------------------------------------- families


def test_every_family_has_a_decoder_a_switch_and_a_program() -> None:
    assert set(DECODERS) == {f.kind for f in FAMILIES}
    capture = CaptureConfig()
    for family in FAMILIES:
        assert isinstance(getattr(capture, family.name), bool), family.name
        assert family.layout.fields[0].name == "kind"  # decode() dispatches on it
    assert [f.label for f in FAMILIES] == ["exec", "namespace", "bash", "fork", "exit"]


def test_c_constants_come_from_the_table() -> None:
    constants = c_constants()
    for family in FAMILIES:
        assert constants[f"KIND_{family.macro}"] == family.kind
        assert constants[f"LOST_{family.macro}"] == family.lost_index
    assert constants["LOST_SLOTS"] == len(FAMILIES)
    assert constants["SYSCALL_EXECVEAT"] == 1
    assert constants["SYSCALL_CLONE3"] == 3
    assert constants["NS_PENDING"] == 4096
    assert constants["PENDING_EXECS"] == 512
    assert NEW_NS_FLAGS == 0x7E020080
    assert constants["NEW_NS_FLAGS"] == sum(f.bit for f in CLONE_FLAGS)
    assert constants["FILENAME_LEN"] == EXEC.layout.field("filename").count


def test_duplicate_kinds_or_loss_slots_are_refused() -> None:
    with pytest.raises(ValueError, match="kind is not unique"):
        _check((EXEC, dataclasses.replace(BASH, kind=EXEC.kind)))
    with pytest.raises(ValueError, match="lost_index"):
        _check((EXEC, dataclasses.replace(BASH, lost_index=5)))


def test_preflight_checks_the_declared_tracepoints() -> None:
    assert {
        "exec": tuple(tp.tracefs for tp in EXEC.tracepoints),
        "namespaces": tuple(tp.tracefs for tp in NAMESPACES.tracepoints),
        "fork": ("sched/sched_process_fork",),
        "exit": ("sched/sched_process_exit",),
    } == preflight.TRACEPOINTS
    assert "sched/sched_process_exec" in preflight.TRACEPOINTS["exec"]
    assert "syscalls/sys_exit_clone3" in preflight.TRACEPOINTS["namespaces"]


# --------------------------------------------------------------------------- decoding


def test_each_record_decodes_to_its_family() -> None:
    for name, family in (("exec_success", EXEC), ("unshare_success", NAMESPACES),
                         ("bash_line", BASH)):
        assert decode(CASES[name][0]).family is family


def test_exec_identity_of_the_file_run() -> None:
    record = exec_record(who(), filename=b"/bin/true", args_blob=b"/bin/true\0", argc=1,
                         exe=(kernel_dev(254, 1), 1311, 77))
    event = decode(record)
    assert event.exe == ExeId(dev=(254 << 8) | 1, ino=1311, generation=77)
    failed = exec_record(who(), filename=b"/x", args_blob=b"/x\0", argc=1, retval=-2)
    assert decode(failed).exe is None


@pytest.mark.parametrize("cut", [0, 3, 4, 100])
def test_short_records_are_decode_errors(cut: int) -> None:
    for record in (CASES["exec_success"][0], CASES["unshare_success"][0],
                   bash_record(who(), line=b"ls")):
        with pytest.raises(DecodeError):
            decode(record[:cut])


def test_an_unknown_kind_is_a_decode_error() -> None:
    record = bytearray(CASES["bash_line"][0])
    record[0:4] = (99).to_bytes(4, "little")
    with pytest.raises(DecodeError, match="unknown record kind 99"):
        decode(bytes(record))


def test_a_short_bash_line_record_is_refused_with_its_struct() -> None:
    record = bash_record(who(), line=b"ls")
    with pytest.raises(DecodeError, match="struct bash_event needs 408"):
        decode(record[:BASH.layout.fixed_size - 1])


def test_an_unknown_syscall_index_is_a_decode_error() -> None:
    record = exec_record(who(), filename=b"/x", args_blob=b"/x\0", argc=1, syscall=2)
    with pytest.raises(DecodeError, match="exec record names syscall index 2"):
        decode(record)
