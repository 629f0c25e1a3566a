"""Minimal pure-Python reader for the kernel's BTF type information.

The collector's BPF programs are compiled against whatever kernel headers happen to be
installed, which often do not match the running kernel.  Struct member offsets are
therefore taken from the running kernel's own BTF (``/sys/kernel/btf/vmlinux``).

Only what the collector needs is implemented: decoding every BTF kind, looking up named
types, and resolving (possibly nested, possibly anonymous) member paths to byte offsets.

Parsing is split in two so start-up stays cheap: ``Btf.load`` only walks the type
section once to record where each type starts; types are decoded on first access.
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Union

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"

BTF_MAGIC = 0xEB9F
_HEADER = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type/str off+len
_HEADER_SIZE = _HEADER.size  # 24
_POINTER_SIZE = 8  # every architecture the collector supports is 64-bit


class BtfError(Exception):
    """Raised when BTF is unavailable, malformed, or lacks a requested type/member."""


class Kind(IntEnum):
    """BTF_KIND_* values from include/uapi/linux/btf.h."""

    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


# Number of u32 words following the 3-word common header, as (fixed, per-vlen-item).
_TRAILER_WORDS: dict[int, tuple[int, int]] = {
    Kind.INT: (1, 0),
    Kind.ARRAY: (3, 0),
    Kind.STRUCT: (0, 3),
    Kind.UNION: (0, 3),
    Kind.ENUM: (0, 2),
    Kind.FUNC_PROTO: (0, 2),
    Kind.VAR: (1, 0),
    Kind.DATASEC: (0, 3),
    Kind.DECL_TAG: (1, 0),
    Kind.ENUM64: (0, 3),
}

# Kinds that only wrap another type and are transparent for layout purposes.
_MODIFIERS = frozenset(
    {Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG}
)
_NAMED_KINDS = frozenset(
    {Kind.INT, Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.FWD, Kind.TYPEDEF,
     Kind.FLOAT, Kind.FUNC, Kind.VAR, Kind.DATASEC}
)

INT_SIGNED = 1 << 0
INT_CHAR = 1 << 1
INT_BOOL = 1 << 2


@dataclass(frozen=True)
class BtfType:
    """A decoded type.  ``ref`` is the referenced type id for PTR/TYPEDEF/modifiers/
    FUNC/VAR/DECL_TAG; ``size`` is the byte size where the kind carries one."""

    id: int
    kind: Kind
    name: str
    size: int = 0
    ref: int = 0
    kind_flag: bool = False
    extra: int = 0  # VAR linkage, FUNC linkage (vlen), DECL_TAG component index


@dataclass(frozen=True)
class IntType(BtfType):
    encoding: int = 0
    bits_offset: int = 0
    nr_bits: int = 0

    @property
    def signed(self) -> bool:
        return bool(self.encoding & INT_SIGNED)


@dataclass(frozen=True)
class ArrayType(BtfType):
    elem_type: int = 0
    index_type: int = 0
    nelems: int = 0


@dataclass(frozen=True)
class Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int = 0  # 0 means "not a bitfield"

    @property
    def byte_offset(self) -> int:
        return self.bit_offset // 8


@dataclass(frozen=True)
class StructType(BtfType):
    """A struct or union (``is_union``)."""

    members: tuple[Member, ...] = ()

    @property
    def is_union(self) -> bool:
        return self.kind == Kind.UNION


@dataclass(frozen=True)
class EnumType(BtfType):
    values: dict[str, int] = field(default_factory=dict)

    @property
    def signed(self) -> bool:
        return self.kind_flag


@dataclass(frozen=True)
class Param:
    name: str
    type_id: int


@dataclass(frozen=True)
class FuncProtoType(BtfType):
    params: tuple[Param, ...] = ()


@dataclass(frozen=True)
class VarSecInfo:
    type_id: int
    offset: int
    size: int


@dataclass(frozen=True)
class DatasecType(BtfType):
    vars: tuple[VarSecInfo, ...] = ()


@dataclass(frozen=True)
class MemberLocation:
    """Where a member path ends up relative to the start of the outer struct."""

    bit_offset: int
    bitfield_size: int
    type_id: int

    @property
    def byte_offset(self) -> int:
        return self.bit_offset // 8


VOID = BtfType(id=0, kind=Kind.UNKN, name="void")

TypeRef = Union[int, str, BtfType]


class Btf:
    """Parsed BTF blob.  Construct with :meth:`load` or :meth:`from_bytes`."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._parse_header()
        self._index_types()
        self._cache: dict[int, BtfType] = {}
        self._by_name_off: dict[int, list[int]] | None = None
        self._by_name: dict[str, list[BtfType]] = {}  # find_all memo: lookups repeat a lot

    # ---------------------------------------------------------------- construction

    @classmethod
    def load(cls, path: str | Path = VMLINUX_BTF) -> Btf:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise BtfError(
                f"no BTF at {path}: the kernel needs CONFIG_DEBUG_INFO_BTF=y"
            ) from None
        except PermissionError:
            raise BtfError(f"cannot read BTF at {path}: permission denied (run as root)") from None
        return cls.from_bytes(data)

    @classmethod
    def from_bytes(cls, data: bytes) -> Btf:
        return cls(data)

    def _parse_header(self) -> None:
        data = self._data
        if len(data) < _HEADER_SIZE:
            raise BtfError(f"BTF blob too short ({len(data)} bytes)")
        (magic,) = struct.unpack_from("<H", data)
        if magic == BTF_MAGIC:
            self.byteorder = "little"
            hdr = _HEADER
        elif magic == 0x9FEB:
            self.byteorder = "big"
            hdr = struct.Struct(">" + _HEADER.format[1:])
        else:
            raise BtfError(f"bad BTF magic {magic:#06x}")
        _, version, flags, hdr_len, type_off, type_len, str_off, str_len = hdr.unpack_from(data)
        if version != 1:
            raise BtfError(f"unsupported BTF version {version}")
        if hdr_len < _HEADER_SIZE:
            raise BtfError(f"BTF header length {hdr_len} is shorter than {_HEADER_SIZE}")
        self.version, self.flags = version, flags
        # Section offsets are relative to the end of the (possibly longer) header.
        self._type_start = hdr_len + type_off
        self._type_end = self._type_start + type_len
        str_start = hdr_len + str_off
        if self._type_end > len(data) or str_start + str_len > len(data) or type_len % 4:
            raise BtfError("BTF sections exceed blob size or are misaligned")
        self._strings = data[str_start : str_start + str_len]

    def _index_types(self) -> None:
        # Reading the type section as an array of u32 is far cheaper than unpacking
        # each record with struct; one pass records where every type starts.
        words = array("I", self._data[self._type_start : self._type_end])
        if words.itemsize != 4:
            raise BtfError("platform lacks a 4-byte array('I')")
        if self.byteorder != sys.byteorder:
            words.byteswap()
        starts = array("I", [0])  # type id 0 is void and has no record
        trailer = _TRAILER_WORDS
        i, n = 0, len(words)
        while i < n:
            if i + 3 > n:
                break
            starts.append(i)
            info = words[i + 1]
            fixed_per = trailer.get((info >> 24) & 0x1F)
            i += 3
            if fixed_per is not None:
                i += fixed_per[0] + fixed_per[1] * (info & 0xFFFF)
        if i != n:
            raise BtfError("truncated BTF type section")
        self._words = words
        self._starts = starts

    # ---------------------------------------------------------------- raw access

    def __len__(self) -> int:
        """Number of type ids, including void (id 0)."""
        return len(self._starts)

    def string_at(self, offset: int) -> str:
        end = self._strings.find(b"\0", offset)
        if offset >= len(self._strings) or end < 0:
            raise BtfError(f"string offset {offset} outside string section")
        return self._strings[offset:end].decode("utf-8", "replace")

    def type_by_id(self, type_id: int) -> BtfType:
        if type_id == 0:
            return VOID
        cached = self._cache.get(type_id)
        if cached is None:
            if not 0 < type_id < len(self._starts):
                raise BtfError(f"type id {type_id} out of range")
            cached = self._decode(type_id)
            self._cache[type_id] = cached
        return cached

    def _decode(self, type_id: int) -> BtfType:
        w, i = self._words, self._starts[type_id]
        name_off, info, size_or_type = w[i], w[i + 1], w[i + 2]
        kind = Kind((info >> 24) & 0x1F)
        vlen, kflag = info & 0xFFFF, bool(info >> 31)
        common = {"id": type_id, "kind": kind, "name": self.string_at(name_off),
                  "kind_flag": kflag}
        t = i + 3  # start of the kind-specific trailer
        if kind == Kind.INT:
            enc = w[t]
            return IntType(**common, size=size_or_type, encoding=(enc >> 24) & 0x0F,
                           bits_offset=(enc >> 16) & 0xFF, nr_bits=enc & 0xFF)
        if kind == Kind.ARRAY:
            return ArrayType(**common, elem_type=w[t], index_type=w[t + 1], nelems=w[t + 2])
        if kind in (Kind.STRUCT, Kind.UNION):
            return StructType(**common, size=size_or_type,
                              members=self._decode_members(t, vlen, kflag))
        if kind in (Kind.ENUM, Kind.ENUM64):
            return EnumType(**common, size=size_or_type,
                            values=self._decode_enum(t, vlen, kind, kflag))
        if kind == Kind.FUNC_PROTO:
            params = tuple(Param(self.string_at(w[t + 2 * k]), w[t + 2 * k + 1])
                           for k in range(vlen))
            return FuncProtoType(**common, ref=size_or_type, params=params)
        if kind == Kind.DATASEC:
            secs = tuple(VarSecInfo(w[t + 3 * k], w[t + 3 * k + 1], w[t + 3 * k + 2])
                         for k in range(vlen))
            return DatasecType(**common, size=size_or_type, vars=secs)
        if kind == Kind.FLOAT:
            return BtfType(**common, size=size_or_type)
        if kind in (Kind.VAR, Kind.DECL_TAG):
            extra = w[t] if kind == Kind.VAR else _s32(w[t])
            return BtfType(**common, ref=size_or_type, extra=extra)
        # PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, TYPE_TAG
        return BtfType(**common, ref=size_or_type, extra=vlen if kind == Kind.FUNC else 0)

    def _decode_members(self, t: int, vlen: int, kflag: bool) -> tuple[Member, ...]:
        w, out = self._words, []
        for k in range(vlen):
            name_off, type_id, off = w[t + 3 * k : t + 3 * k + 3]
            if kflag:  # kind_flag: offset packs bitfield_size<<24 | bit_offset
                out.append(Member(self.string_at(name_off), type_id, off & 0xFFFFFF, off >> 24))
            else:
                out.append(Member(self.string_at(name_off), type_id, off,
                                  self._legacy_bitfield_size(type_id)))
        return tuple(out)

    def _legacy_bitfield_size(self, type_id: int) -> int:
        # Without kind_flag a bitfield is encoded as an INT whose nr_bits < its size.
        t = self.strip(type_id)
        if isinstance(t, IntType) and t.nr_bits != t.size * 8:
            return t.nr_bits
        return 0

    def _decode_enum(self, t: int, vlen: int, kind: Kind, signed: bool) -> dict[str, int]:
        w, values = self._words, {}
        if kind == Kind.ENUM:
            for k in range(vlen):
                val = w[t + 2 * k + 1]
                values[self.string_at(w[t + 2 * k])] = _s32(val) if signed else val
        else:
            for k in range(vlen):
                name_off, lo, hi = w[t + 3 * k : t + 3 * k + 3]
                val = (hi << 32) | lo
                if signed and val >> 63:
                    val -= 1 << 64
                values[self.string_at(name_off)] = val
        return values

    # ---------------------------------------------------------------- lookup by name

    def _name_index(self) -> dict[int, list[int]]:
        # Keyed by string offset so building it needs no string decoding at all.
        if self._by_name_off is None:
            index: dict[int, list[int]] = {}
            w, named = self._words, _NAMED_KINDS
            for type_id in range(1, len(self._starts)):
                i = self._starts[type_id]
                if w[i] and (w[i + 1] >> 24) & 0x1F in named:
                    index.setdefault(w[i], []).append(type_id)
            self._by_name_off = index
        return self._by_name_off

    def _string_offsets(self, name: str) -> list[int]:
        needle, strings, found = b"\0" + name.encode() + b"\0", self._strings, []
        pos = strings.find(needle)
        while pos >= 0:
            found.append(pos + 1)
            pos = strings.find(needle, pos + 1)
        return found

    def find_all(self, name: str, kinds: frozenset[Kind] | set[Kind] | None = None
                 ) -> list[BtfType]:
        """Every named type called ``name`` (optionally restricted to ``kinds``)."""
        found = self._by_name.get(name)
        if found is None:
            index = self._name_index()
            found = [self.type_by_id(type_id) for off in self._string_offsets(name)
                     for type_id in index.get(off, ())]
            self._by_name[name] = found
        return [t for t in found if kinds is None or t.kind in kinds]

    def find_struct(self, name: str) -> StructType | None:
        """The struct or union called ``name`` (complete definitions, not FWDs)."""
        for t in self.find_all(name, {Kind.STRUCT, Kind.UNION}):
            if isinstance(t, StructType):
                return t
        return None

    def enum_value(self, enum_name: str, enumerator: str) -> int | None:
        """Value of ``enumerator`` in enum ``enum_name``; None if either is absent."""
        for t in self.find_all(enum_name, {Kind.ENUM, Kind.ENUM64}):
            if isinstance(t, EnumType) and enumerator in t.values:
                return t.values[enumerator]
        return None

    # ---------------------------------------------------------------- type helpers

    def _as_type(self, ref: TypeRef) -> BtfType:
        if isinstance(ref, BtfType):
            return ref
        if isinstance(ref, int):
            return self.type_by_id(ref)
        found = self.find_struct(ref) or next(iter(self.find_all(ref)), None)
        if found is None:
            raise BtfError(f"no type named {ref!r} in BTF")
        return found

    def strip(self, ref: TypeRef) -> BtfType:
        """Follow typedefs and const/volatile/restrict/type_tag to the underlying type."""
        t = self._as_type(ref)
        for _ in range(64):  # bound the walk so a corrupt blob cannot loop forever
            if t.kind not in _MODIFIERS:
                return t
            t = self.type_by_id(t.ref)
        raise BtfError(f"modifier chain too long at type id {t.id}")

    def sizeof(self, ref: TypeRef) -> int:
        """Size in bytes, as the C ``sizeof`` would report it."""
        t = self.strip(ref)
        if t.kind == Kind.PTR:
            return _POINTER_SIZE
        if isinstance(t, ArrayType):
            return t.nelems * self.sizeof(t.elem_type)
        if t.kind in (Kind.INT, Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.FLOAT,
                      Kind.DATASEC):
            return t.size
        raise BtfError(f"type {describe_kind(t)} (id {t.id}) has no size")

    def type_name(self, ref: TypeRef) -> str:
        """A C-like spelling of the type, for messages and generated comments."""
        t = self._as_type(ref)
        if t.kind in (Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.FWD):
            tag = {Kind.UNION: "union", Kind.STRUCT: "struct"}.get(t.kind, "enum")
            return f"{tag} {t.name or '<anon>'}"
        if t.kind == Kind.PTR:
            return self.type_name(t.ref) + " *"
        if isinstance(t, ArrayType):
            return f"{self.type_name(t.elem_type)}[{t.nelems}]"
        if t.kind in (Kind.CONST, Kind.VOLATILE, Kind.RESTRICT, Kind.TYPE_TAG) and not t.name:
            return f"{t.kind.name.lower()} {self.type_name(t.ref)}"
        return t.name or f"<{t.kind.name.lower()}>"

    # ---------------------------------------------------------------- member paths

    def _struct(self, ref: TypeRef | StructType) -> StructType:
        if isinstance(ref, str):
            found = self.find_struct(ref)
            if found is None:
                raise BtfError(f"struct {ref} not found in kernel BTF")
            return found
        t = self.strip(ref)
        if not isinstance(t, StructType):
            raise BtfError(f"{self.type_name(t)} is not a struct or union")
        return t

    def locate(self, struct_ref: TypeRef, path: str) -> MemberLocation:
        """Resolve ``path`` ("a.b[2].c") inside a struct, through anonymous members.

        Pointers are not followed: an offset through a pointer is meaningless.
        """
        top = self._struct(struct_ref)
        current: BtfType = top
        bit_offset, loc = 0, None
        for part in _split_path(path):
            name, index = part
            container = self.strip(current)
            if not isinstance(container, StructType):
                raise BtfError(f"{top.name}.{path}: {self.type_name(container)} "
                               f"has no member {name!r}")
            found = self._find_member(container, name)
            if found is None:
                raise BtfError(f"struct {top.name} has no member {path!r} "
                               f"({name!r} missing in {self.type_name(container)})")
            rel_bits, member = found
            bit_offset += rel_bits
            current = self.type_by_id(member.type_id)
            if index is not None:
                current, elem_bits = self._index_array(current, index, top.name, path)
                bit_offset += elem_bits
                member = Member(member.name, current.id, member.bit_offset)
            loc = MemberLocation(bit_offset, member.bitfield_size, current.id)
        if loc is None:
            raise BtfError("empty member path")
        return loc

    def _index_array(self, t: BtfType, index: int, top: str, path: str) -> tuple[BtfType, int]:
        arr = self.strip(t)
        if not isinstance(arr, ArrayType):
            raise BtfError(f"{top}.{path}: indexed member is not an array")
        # Flexible array members have nelems == 0, so only bound-check sized arrays.
        if arr.nelems and not 0 <= index < arr.nelems:
            raise BtfError(f"{top}.{path}: index {index} out of range 0..{arr.nelems - 1}")
        elem = self.type_by_id(arr.elem_type)
        return elem, index * self.sizeof(elem) * 8

    def _find_member(self, st: StructType, name: str) -> tuple[int, Member] | None:
        """(bit offset relative to ``st``, member) searching anonymous members too."""
        for m in st.members:
            if m.name == name:
                return m.bit_offset, m
        for m in st.members:
            if m.name:
                continue
            inner = self.strip(m.type_id)
            if isinstance(inner, StructType):
                found = self._find_member(inner, name)
                if found is not None:
                    return m.bit_offset + found[0], found[1]
        return None

    def member_offset(self, struct_ref: TypeRef, path: str) -> int:
        """Byte offset of ``path`` inside the struct; bitfields that do not start on a
        byte boundary raise (use :meth:`locate` for bit-level detail)."""
        loc = self.locate(struct_ref, path)
        if loc.bit_offset % 8:
            raise BtfError(f"{path!r} is a bitfield at bit {loc.bit_offset}; "
                           "it has no byte offset")
        return loc.byte_offset

    def member_type(self, struct_ref: TypeRef, path: str) -> BtfType:
        """Declared type of the member (typedefs kept; use :meth:`strip` to unwrap)."""
        return self.type_by_id(self.locate(struct_ref, path).type_id)


def describe_kind(t: BtfType) -> str:
    return f"{t.kind.name} {t.name or '<anon>'}"


def _s32(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value


def _split_path(path: str) -> list[tuple[str, int | None]]:
    """"a.b[2].c" -> [("a", None), ("b", 2), ("c", None)]."""
    parts: list[tuple[str, int | None]] = []
    for raw in path.split("."):
        name, index = raw, None
        if raw.endswith("]") and "[" in raw:
            name, _, idx = raw[:-1].partition("[")
            try:
                index = int(idx, 0)
            except ValueError:
                raise BtfError(f"bad array index in member path {path!r}") from None
        if not name:
            raise BtfError(f"empty component in member path {path!r}")
        parts.append((name, index))
    return parts
