"""Tests for collector.capture.btf / collector.capture.offsets.

Most tests parse the running kernel's BTF (root only).  The strongest check compiles a
BPF program with BCC that reads kernel structs purely through the computed offsets and
compares what it sees at exec time with the truth from /proc.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from collector.capture.btf import (
    VMLINUX_BTF,
    ArrayType,
    Btf,
    BtfError,
    EnumType,
    IntType,
    Kind,
    StructType,
)
from collector.capture.offsets import explain_missing, offsets_as_cflags, resolve_offsets

HAVE_KERNEL_BTF = os.access(VMLINUX_BTF, os.R_OK)
needs_btf = pytest.mark.skipif(not HAVE_KERNEL_BTF, reason=f"{VMLINUX_BTF} not readable")


@pytest.fixture(scope="module")
def btf() -> Btf:
    if not HAVE_KERNEL_BTF:
        pytest.skip(f"{VMLINUX_BTF} not readable")
    return Btf.load()


# ------------------------------------------------------------------ synthetic blobs


class BlobBuilder:
    """Builds small BTF blobs by hand, in either byte order."""

    def __init__(self, endian: str = "<") -> None:
        self.endian = endian
        self.strings = bytearray(b"\0")
        self.types = bytearray()

    def s(self, text: str) -> int:
        if not text:
            return 0
        off = len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def add(self, name: str, kind: Kind, vlen: int, size_or_type: int, *extra: int,
            kind_flag: bool = False) -> None:
        info = (int(kind_flag) << 31) | (int(kind) << 24) | vlen
        words = (self.s(name), info, size_or_type, *extra)
        self.types += struct.pack(f"{self.endian}{len(words)}I", *words)

    def blob(self) -> bytes:
        hdr = struct.pack(f"{self.endian}HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types),
                          len(self.types), len(self.strings))
        return hdr + bytes(self.types) + bytes(self.strings)


def _sample_blob(endian: str) -> bytes:
    b = BlobBuilder(endian)
    b.add("int", Kind.INT, 0, 4, (1 << 24) | 32)  # 1: signed 32-bit int
    b.add("", Kind.PTR, 0, 1)  # 2: int *
    b.add("", Kind.ARRAY, 0, 0, 1, 1, 4)  # 3: int[4]
    # 4: struct inner { int x; int y:3; int z:5; } using kind_flag bitfield encoding
    b.add("inner", Kind.STRUCT, 3, 8, b.s("x"), 1, 0, b.s("y"), 1, (3 << 24) | 32,
          b.s("z"), 1, (5 << 24) | 35, kind_flag=True)
    b.add("inner_t", Kind.TYPEDEF, 0, 4)  # 5
    b.add("", Kind.CONST, 0, 5)  # 6: const inner_t
    # 7: anonymous union { int u; int *p; }
    b.add("", Kind.UNION, 2, 8, b.s("u"), 1, 0, b.s("p"), 2, 0)
    # 8: struct outer { int a; const inner_t in; union {..}; int arr[4]; }
    b.add("outer", Kind.STRUCT, 4, 40, b.s("a"), 1, 0, b.s("in"), 6, 64, 0, 7, 128,
          b.s("arr"), 3, 192)
    b.add("colour", Kind.ENUM, 2, 4, b.s("RED"), 0, b.s("NEG"), 0xFFFFFFFF, kind_flag=True)
    b.add("big", Kind.ENUM64, 1, 8, b.s("HUGE"), 1, 2)  # 10
    b.add("fwd_only", Kind.FWD, 0, 0)  # 11
    b.add("", Kind.FUNC_PROTO, 1, 1, b.s("arg"), 2)  # 12: int (*)(int *arg)
    b.add("f", Kind.FUNC, 1, 12)  # 13
    b.add("v", Kind.VAR, 0, 1, 1)  # 14
    b.add(".data", Kind.DATASEC, 1, 4, 14, 0, 4)  # 15
    b.add("double", Kind.FLOAT, 0, 8)  # 16
    b.add("tag", Kind.DECL_TAG, 0, 8, 0xFFFFFFFF)  # 17
    b.add("user", Kind.TYPE_TAG, 0, 1)  # 18
    # 19: legacy (no kind_flag) bitfield: member type is an INT with nr_bits=4
    b.add("u4", Kind.INT, 0, 1, 4)  # 19
    b.add("legacy", Kind.STRUCT, 1, 4, b.s("nib"), 19, 8)  # 20
    b.add("", Kind.VOLATILE, 0, 1)  # 21
    b.add("", Kind.RESTRICT, 0, 2)  # 22
    return b.blob()


@pytest.mark.parametrize("endian", ["<", ">"])
def test_synthetic_blob_all_kinds(endian: str) -> None:
    btf = Btf.from_bytes(_sample_blob(endian))
    assert len(btf) == 23
    assert btf.byteorder == ("little" if endian == "<" else "big")
    kinds = {btf.type_by_id(i).kind for i in range(1, len(btf))}
    assert kinds == set(Kind) - {Kind.UNKN}
    outer = btf.find_struct("outer")
    assert outer is not None and outer.size == 40
    assert btf.member_offset(outer, "in.x") == 8  # through const + typedef
    assert btf.member_offset("outer", "u") == 16  # inside anonymous union
    assert btf.member_offset("outer", "p") == 16
    assert btf.member_offset("outer", "arr[2]") == 24 + 8
    loc = btf.locate("outer", "in.z")
    assert (loc.bit_offset, loc.bitfield_size) == (64 + 35, 5)
    with pytest.raises(BtfError, match="bitfield"):
        btf.member_offset("outer", "in.z")
    assert btf.locate("legacy", "nib").bitfield_size == 4
    assert btf.sizeof("outer") == 40 and btf.sizeof(3) == 16 and btf.sizeof(2) == 8
    assert btf.enum_value("colour", "NEG") == -1
    assert btf.enum_value("big", "HUGE") == (2 << 32) | 1
    assert btf.enum_value("colour", "BLUE") is None
    assert btf.find_struct("fwd_only") is None
    assert btf.type_name(btf.member_type("outer", "in")) == "const inner_t"
    assert btf.type_by_id(17).extra == -1  # DECL_TAG component_idx
    assert btf.type_by_id(12).params[0].name == "arg"  # type: ignore[attr-defined]


def test_malformed_blobs() -> None:
    with pytest.raises(BtfError, match="magic"):
        Btf.from_bytes(b"\0" * 32)
    with pytest.raises(BtfError, match="too short"):
        Btf.from_bytes(b"\x9f\xeb")
    truncated = bytearray(_sample_blob("<"))
    struct.pack_into("<I", truncated, 12, 4)  # type_len cuts the first record short
    with pytest.raises(BtfError, match="truncated"):
        Btf.from_bytes(bytes(truncated))


def test_missing_file_message(tmp_path: Path) -> None:
    missing = tmp_path / "vmlinux"
    with pytest.raises(BtfError, match="CONFIG_DEBUG_INFO_BTF=y"):
        Btf.load(missing)


# ------------------------------------------------------------------ real kernel BTF


@needs_btf
def test_a_fresh_load_resolves_every_offset() -> None:
    # How long this takes is part of start-up, which bench/exec_storm measures (no timed
    # unit tests: a busy machine would fail them).
    btf = Btf.load()
    assert btf.find_struct("task_struct") is not None  # includes the lazy name index
    report = resolve_offsets(btf)
    assert report.ok and report.values


def test_known_layouts(btf: Btf) -> None:
    assert btf.member_offset("list_head", "next") == 0
    assert btf.member_offset("list_head", "prev") == 8
    assert btf.sizeof("list_head") == 16
    assert btf.sizeof("upid") == 16
    assert btf.member_offset("upid", "ns") == 8
    assert btf.sizeof("new_utsname") == 6 * 65
    comm = btf.strip(btf.member_type("task_struct", "comm"))
    assert isinstance(comm, ArrayType) and comm.nelems == 16
    u64 = btf.strip(btf.find_all("u64")[0])
    assert isinstance(u64, IntType) and u64.size == 8 and not u64.signed


def test_nested_members(btf: Btf) -> None:
    task = btf.find_struct("task_struct")
    assert task is not None and task.kind == Kind.STRUCT
    for name in ("pid", "tgid", "cred", "nsproxy", "comm"):
        assert btf.locate(task, name).byte_offset >= 0
    # ns.inum lives in struct ns_common embedded in each namespace struct
    ns_off = btf.member_offset("uts_namespace", "ns")
    inum = btf.member_offset("ns_common", "inum")
    assert btf.member_offset("uts_namespace", "ns.inum") == ns_off + inum
    name_off = btf.member_offset("uts_namespace", "name")
    assert btf.member_offset("uts_namespace", "name.nodename") == name_off + 65
    assert btf.member_offset("cred", "uid.val") == btf.member_offset("cred", "uid")
    kuid = btf.member_type("task_struct", "loginuid")
    assert kuid.kind == Kind.TYPEDEF and kuid.name == "kuid_t"
    assert btf.type_name(btf.member_type("task_struct", "cred")) == "const struct cred *"


def test_missing_member_errors(btf: Btf) -> None:
    with pytest.raises(BtfError, match=r"task_struct.*no_such_field"):
        btf.member_offset("task_struct", "no_such_field")
    with pytest.raises(BtfError, match="struct no_such_struct not found"):
        btf.member_offset("no_such_struct", "x")
    with pytest.raises(BtfError, match=r"is not a struct|has no member"):
        btf.member_offset("task_struct", "pid.x")


def test_members_in_anonymous_unions(btf: Btf) -> None:
    # sk_buff starts with union { struct { next; prev; union { dev; dev_scratch; }; }; ...}
    # whose layout has been stable for years: two levels of anonymous aggregates.
    assert btf.member_offset("sk_buff", "next") == 0
    assert btf.member_offset("sk_buff", "prev") == 8
    assert btf.member_offset("sk_buff", "dev") == 16
    assert btf.member_offset("sk_buff", "dev_scratch") == 16
    # cred: union { int non_rcu; struct rcu_head rcu; } - offset must include the union's
    cred = btf.find_struct("cred")
    assert cred is not None
    anon = [m for m in cred.members if not m.name]
    union = btf.strip(anon[0].type_id)
    assert isinstance(union, StructType) and union.is_union
    assert btf.member_offset(cred, "non_rcu") == anon[0].bit_offset // 8
    assert btf.member_offset(cred, "rcu") == anon[0].bit_offset // 8


def test_bitfield_member(btf: Btf) -> None:
    task = btf.find_struct("task_struct")
    assert task is not None
    bitfields = [m for m in task.members if m.bitfield_size]
    assert bitfields, "task_struct normally has sched_* / in_execve bitfields"
    for m in bitfields:
        loc = btf.locate(task, m.name)
        assert loc.bit_offset == m.bit_offset and loc.bitfield_size == m.bitfield_size
        assert 0 < m.bitfield_size < btf.sizeof(m.type_id) * 8
    assert any(m.name == "in_execve" and m.bitfield_size == 1 for m in bitfields)


def test_enum_lookup(btf: Btf) -> None:
    count = btf.enum_value("cgroup_subsys_id", "CGROUP_SUBSYS_COUNT")
    assert count is not None and count > btf.enum_value("cgroup_subsys_id", "cpu_cgrp_id")
    assert btf.enum_value("pid_type", "PIDTYPE_PID") == 0
    assert btf.enum_value("pid_type", "NOPE") is None
    assert btf.enum_value("no_such_enum", "X") is None


def test_offsets_complete(btf: Btf) -> None:
    report = resolve_offsets(btf)
    assert report.ok, explain_missing(report)
    offs = report.values
    task_size = btf.sizeof("task_struct")
    for name, value in offs.items():
        assert isinstance(value, int) and value >= 0, name
        if name.startswith("OFF_TASK_STRUCT_"):
            assert value < task_size, name
    assert offs["SIZEOF_UPID"] == 16
    assert offs["OFF_TASK_STRUCT_TGID"] == offs["OFF_TASK_STRUCT_PID"] + 4
    assert offs["SIZEOF_CRED_CAP_EFFECTIVE"] == 8
    assert offs["SIZEOF_CSS_SET_SUBSYS_ELEM"] == 8
    assert offs["COUNT_CSS_SET_SUBSYS"] == btf.enum_value(
        "cgroup_subsys_id", "CGROUP_SUBSYS_COUNT")
    assert report.used["OFF_KERNFS_NODE_PARENT"] in ("kernfs_node.__parent",
                                                      "kernfs_node.parent")
    flags = offsets_as_cflags(offs)
    assert f"-DOFF_TASK_STRUCT_PID={offs['OFF_TASK_STRUCT_PID']}" in flags
    assert all(f.startswith("-D") and "=" in f for f in flags)


def test_missing_feature_is_reported(btf: Btf, monkeypatch: pytest.MonkeyPatch) -> None:
    real_locate = Btf.locate

    def no_loginuid(self: Btf, struct_ref: object, path: str):  # type: ignore[no-untyped-def]
        if path.startswith("loginuid"):
            raise BtfError("struct task_struct has no member 'loginuid'")
        return real_locate(self, struct_ref, path)  # type: ignore[arg-type]

    monkeypatch.setattr(Btf, "locate", no_loginuid)
    report = resolve_offsets(btf)
    assert report.ok  # loginuid is optional
    assert report.values["HAVE_LOGINUID"] == 0
    assert "OFF_TASK_STRUCT_LOGINUID" not in report.values
    lines = explain_missing(report)
    assert len(lines) == 1 and "task_struct.loginuid" in lines[0]
    assert "HAVE_LOGINUID=0" in lines[0]


@pytest.mark.skipif(shutil.which("bpftool") is None, reason="bpftool not installed")
def test_matches_bpftool(btf: Btf) -> None:
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", VMLINUX_BTF, "format",
                          "raw"], check=True, capture_output=True).stdout
    types = json.loads(out)["types"]
    assert len(types) == len(btf) - 1
    for ref in types:
        _compare_with_bpftool(btf, ref)


def _compare_with_bpftool(btf: Btf, ref: dict) -> None:
    t = btf.type_by_id(ref["id"])
    assert t.kind.name == ref["kind"], ref["id"]
    assert (t.name or "(anon)") == ref["name"], ref["id"]
    if "size" in ref:
        assert t.size == ref["size"], ref["id"]
    if isinstance(t, StructType):
        got = [(m.name or "(anon)", m.type_id, m.bit_offset, m.bitfield_size)
               for m in t.members]
        want = [(m["name"], m["type_id"], m["bits_offset"], m.get("bitfield_size", 0))
                for m in ref["members"]]
        assert got == want, ref["id"]
    elif isinstance(t, EnumType):
        # bpftool 7.1 sign-extends unsigned 32-bit enum values, so compare modulo size
        mask = (1 << (8 * t.size)) - 1
        got_vals = {k: v & mask for k, v in t.values.items()}
        assert got_vals == {v["name"]: v["val"] & mask for v in ref["values"]}, ref["id"]
    elif isinstance(t, ArrayType):
        assert (t.elem_type, t.nelems) == (ref["type_id"], ref["nr_elems"]), ref["id"]
    elif isinstance(t, IntType):
        assert (t.nr_bits, t.bits_offset) == (ref["nr_bits"], ref["bits_offset"])
    elif "type_id" in ref:
        assert t.ref == ref["type_id"], ref["id"]


# ------------------------------------------------------------------ BPF ground truth

BPF_PROGRAM = r"""
struct event_t {
    u64 cgrp_id;
    u64 cgrp_parent_id;
    u32 pid, tgid, ppid, uid, euid, gid, loginuid, sessionid;
    u32 uts, ipc, mnt, net, pid_children, user, cgroupns, time, pid_active;
    u32 pid_level, pid_nr;
    char comm[16];
    char nodename[65];
    char cgrp_name[64];
    char mem_cgrp_name[64];
};

BPF_RINGBUF_OUTPUT(events, 64);

static __always_inline void *rd_ptr(void *base, long off) {
    void *p = 0;
    bpf_probe_read_kernel(&p, sizeof(p), (char *)base + off);
    return p;
}

static __always_inline u32 rd_u32(void *base, long off) {
    u32 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (char *)base + off);
    return v;
}

static __always_inline u64 rd_u64(void *base, long off) {
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (char *)base + off);
    return v;
}

static __always_inline u32 ns_inum(void *nsproxy, long member, long inum_off) {
    return rd_u32(rd_ptr(nsproxy, member), inum_off);
}

TRACEPOINT_PROBE(sched, sched_process_exec) {
    char *task = (char *)bpf_get_current_task();
    struct event_t *ev = events.ringbuf_reserve(sizeof(struct event_t));
    if (!ev)
        return 0;
    __builtin_memset(ev, 0, sizeof(*ev));
    ev->pid = rd_u32(task, OFF_TASK_STRUCT_PID);
    ev->tgid = rd_u32(task, OFF_TASK_STRUCT_TGID);
    ev->ppid = rd_u32(rd_ptr(task, OFF_TASK_STRUCT_REAL_PARENT), OFF_TASK_STRUCT_TGID);
    void *cred = rd_ptr(task, OFF_TASK_STRUCT_CRED);
    ev->uid = rd_u32(cred, OFF_CRED_UID);
    ev->euid = rd_u32(cred, OFF_CRED_EUID);
    ev->gid = rd_u32(cred, OFF_CRED_GID);
    ev->user = rd_u32(rd_ptr(cred, OFF_CRED_USER_NS), OFF_USER_NAMESPACE_INUM);
#if HAVE_LOGINUID
    ev->loginuid = rd_u32(task, OFF_TASK_STRUCT_LOGINUID);
#endif
#if HAVE_SESSIONID
    ev->sessionid = rd_u32(task, OFF_TASK_STRUCT_SESSIONID);
#endif
    bpf_probe_read_kernel(ev->comm, sizeof(ev->comm), task + OFF_TASK_STRUCT_COMM);

    void *nsp = rd_ptr(task, OFF_TASK_STRUCT_NSPROXY);
    void *uts = rd_ptr(nsp, OFF_NSPROXY_UTS_NS);
    ev->uts = rd_u32(uts, OFF_UTS_NAMESPACE_INUM);
    bpf_probe_read_kernel_str(ev->nodename, sizeof(ev->nodename),
                              (char *)uts + OFF_UTS_NAMESPACE_NODENAME);
    ev->ipc = ns_inum(nsp, OFF_NSPROXY_IPC_NS, OFF_IPC_NAMESPACE_INUM);
    ev->mnt = ns_inum(nsp, OFF_NSPROXY_MNT_NS, OFF_MNT_NAMESPACE_INUM);
    ev->net = ns_inum(nsp, OFF_NSPROXY_NET_NS, OFF_NET_INUM);
    ev->pid_children = ns_inum(nsp, OFF_NSPROXY_PID_NS_FOR_CHILDREN, OFF_PID_NAMESPACE_INUM);
#if HAVE_CGROUP_NS
    ev->cgroupns = ns_inum(nsp, OFF_NSPROXY_CGROUP_NS, OFF_CGROUP_NAMESPACE_INUM);
#endif
#if HAVE_TIME_NS
    ev->time = ns_inum(nsp, OFF_NSPROXY_TIME_NS, OFF_TIME_NAMESPACE_INUM);
#endif

    /* pid as seen from the task's own pid namespace: numbers[level] */
    void *pid = rd_ptr(task, OFF_TASK_STRUCT_THREAD_PID);
    u32 level = rd_u32(pid, OFF_PID_LEVEL);
    ev->pid_level = level;
    if (level < 32) {
        char *upid = (char *)pid + OFF_PID_NUMBERS + level * SIZEOF_UPID;
        ev->pid_nr = rd_u32(upid, OFF_UPID_NR);
        ev->pid_active = rd_u32(rd_ptr(upid, OFF_UPID_NS), OFF_PID_NAMESPACE_INUM);
    }

#if HAVE_CGROUPS
    void *cset = rd_ptr(task, OFF_TASK_STRUCT_CGROUPS);
    void *kn = rd_ptr(rd_ptr(cset, OFF_CSS_SET_DFL_CGRP), OFF_CGROUP_KN);
    ev->cgrp_id = rd_u64(kn, OFF_KERNFS_NODE_ID);
    ev->cgrp_parent_id = rd_u64(rd_ptr(kn, OFF_KERNFS_NODE_PARENT), OFF_KERNFS_NODE_ID);
    bpf_probe_read_kernel_str(ev->cgrp_name, sizeof(ev->cgrp_name),
                              rd_ptr(kn, OFF_KERNFS_NODE_NAME));
#if HAVE_CGRP_ID_MEMORY
    void *css = rd_ptr(cset, OFF_CSS_SET_SUBSYS + CGRP_ID_MEMORY * SIZEOF_CSS_SET_SUBSYS_ELEM);
    void *mkn = rd_ptr(rd_ptr(css, OFF_CGROUP_SUBSYS_STATE_CGROUP), OFF_CGROUP_KN);
    bpf_probe_read_kernel_str(ev->mem_cgrp_name, sizeof(ev->mem_cgrp_name),
                              rd_ptr(mkn, OFF_KERNFS_NODE_NAME));
#endif
#endif
    events.ringbuf_submit(ev, 0);
    return 0;
}
"""


class Event(ctypes.Structure):
    _fields_ = [
        ("cgrp_id", ctypes.c_uint64),
        ("cgrp_parent_id", ctypes.c_uint64),
        *[(n, ctypes.c_uint32) for n in (
            "pid", "tgid", "ppid", "uid", "euid", "gid", "loginuid", "sessionid",
            "uts", "ipc", "mnt", "net", "pid_children", "user", "cgroupns", "time",
            "pid_active", "pid_level", "pid_nr")],
        ("comm", ctypes.c_char * 16),
        ("nodename", ctypes.c_char * 65),
        ("cgrp_name", ctypes.c_char * 64),
        ("mem_cgrp_name", ctypes.c_char * 64),
    ]


CHILD_UID, CHILD_GID = 65534, 65533


def _cgroup2_mount() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] == "cgroup2":
            return Path(left.split()[4])
    return None


def _make_test_cgroup() -> Path | None:
    """A fresh cgroup v2 leaf so the cgroup name/id checks see a non-root cgroup."""
    mount = _cgroup2_mount()
    if mount is None:
        return None
    path = mount / f"btf-test-{os.getpid()}"
    try:
        path.mkdir()
    except OSError:
        return None
    return path


def _run_child(cgroup: Path | None) -> int:
    pid = os.fork()
    if pid == 0:  # child: move to the test cgroup, drop privileges, exec /bin/true
        try:
            if cgroup is not None:
                (cgroup / "cgroup.procs").write_text("0")
            os.setgid(CHILD_GID)
            os.setuid(CHILD_UID)
            os.execv("/bin/true", ["true"])
        finally:
            os._exit(127)
    return pid


def _ns_inode(name: str) -> int:
    return os.stat(f"/proc/self/ns/{name}").st_ino


def _mem_cgroup_leaf() -> str | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(",") and path != "/":
            return path.rsplit("/", 1)[-1]
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for BPF")
def test_bpf_reads_match_proc(btf: Btf) -> None:
    bcc = pytest.importorskip("bcc")
    report = resolve_offsets(btf)
    assert report.ok, explain_missing(report, required_only=True)
    offsets = report.values
    prog = bcc.BPF(text=BPF_PROGRAM.encode(), cflags=offsets_as_cflags(offsets))
    events: list[Event] = []

    def on_event(_ctx: object, data: int, size: int) -> None:
        events.append(Event.from_buffer_copy(ctypes.string_at(data, ctypes.sizeof(Event))))

    prog[b"events"].open_ring_buffer(on_event)
    cgroup = _make_test_cgroup()
    cgroup_inodes = (os.stat(cgroup).st_ino, os.stat(cgroup.parent).st_ino) if cgroup else None
    try:
        child = _run_child(cgroup)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        ev = _poll_for(prog, events, child)
    finally:
        prog.cleanup()
        if cgroup is not None:
            _remove_cgroup(cgroup)

    assert (ev.pid, ev.tgid, ev.ppid) == (child, child, os.getpid())
    assert (ev.uid, ev.euid, ev.gid) == (CHILD_UID, CHILD_UID, CHILD_GID)
    assert ev.comm == b"true"
    assert ev.nodename.decode() == os.uname().nodename
    assert ev.uts == _ns_inode("uts")
    assert (ev.ipc, ev.mnt, ev.net) == (_ns_inode("ipc"), _ns_inode("mnt"), _ns_inode("net"))
    assert ev.user == _ns_inode("user")
    assert ev.pid_children == _ns_inode("pid_for_children")
    assert ev.pid_active == _ns_inode("pid")
    assert ev.pid_nr == child  # the test runs in the initial pid namespace view
    if offsets["HAVE_CGROUP_NS"]:
        assert ev.cgroupns == _ns_inode("cgroup")
    if offsets["HAVE_TIME_NS"]:
        assert ev.time == _ns_inode("time")
    if offsets["HAVE_LOGINUID"]:
        assert ev.loginuid == int(Path("/proc/self/loginuid").read_text())
    if offsets["HAVE_SESSIONID"]:
        assert ev.sessionid == int(Path("/proc/self/sessionid").read_text())
    if cgroup is not None:
        assert ev.cgrp_name.decode() == cgroup.name
        assert (ev.cgrp_id, ev.cgrp_parent_id) == cgroup_inodes
    leaf = _mem_cgroup_leaf()
    if leaf is not None and offsets.get("HAVE_CGRP_ID_MEMORY"):
        assert ev.mem_cgrp_name.decode() == leaf


def _poll_for(prog: object, events: list[Event], pid: int) -> Event:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        prog.ring_buffer_poll(100)  # type: ignore[attr-defined]
        for ev in events:
            if ev.tgid == pid:
                return ev
    raise AssertionError(f"no exec event for pid {pid} (got {len(events)} others)")


def _remove_cgroup(path: Path) -> None:
    # The reaped child may take a moment to leave the cgroup.
    for _ in range(50):
        try:
            path.rmdir()
            return
        except OSError:
            time.sleep(0.05)


def test_missing_required_member_raises(btf: Btf, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find = Btf.find_struct

    def no_nsproxy(self: Btf, name: str) -> StructType | None:
        return None if name == "nsproxy" else real_find(self, name)

    monkeypatch.setattr(Btf, "find_struct", no_nsproxy)
    report = resolve_offsets(btf)
    assert not report.ok
    lines = explain_missing(report, required_only=True)
    assert lines and all("struct nsproxy" in line and "REQUIRED" in line for line in lines)
    assert any(line.startswith("OFF_NSPROXY_UTS_NS: struct nsproxy") for line in lines)
