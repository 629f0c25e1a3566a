"""C struct layouts declared in Python: the record structs the BPF programs write.

A layout is a list of fields (name, C type, count). Offsets, sizes and the `struct` format
of the decoders are derived from it with C's natural alignment, the way the compiler lays
out the C structs in bpf/*.c; a test compares every field with BCC's view of the compiled
C structs, so the two sides cannot drift apart unnoticed.

A record may end in a variable-length tail (argv, the bash line) whose array length
depends on build constants (-D flags); records arrive trimmed, so decoders read the fixed
part with one unpack and slice the tail from the bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

# C type -> (struct format character, size): little-endian, natural alignment = size.
SCALARS = {"u8": ("B", 1), "char": ("s", 1), "u32": ("I", 4), "s32": ("i", 4),
           "u64": ("Q", 8), "s64": ("q", 8)}

TailLength = Callable[[Mapping[str, int]], int]


@dataclass(frozen=True)
class Field:
    """One struct member: a scalar, a fixed array (`count`), a nested struct (`ctype` is a
    Layout) or the record's tail (`tail` computes its array length from build constants)."""

    name: str
    ctype: str | Layout
    count: int = 1
    padding: bool = False  # explicit padding: in the C struct, skipped when decoding
    tail: TailLength | None = None

    @property
    def nested(self) -> Layout | None:
        return self.ctype if isinstance(self.ctype, Layout) else None

    @property
    def align(self) -> int:
        return self.ctype.align if isinstance(self.ctype, Layout) else SCALARS[self.ctype][1]

    @property
    def element_size(self) -> int:
        return self.ctype.size if isinstance(self.ctype, Layout) else SCALARS[self.ctype][1]

    @property
    def size(self) -> int:
        if self.tail is not None:
            raise ValueError(f"{self.name}: a tail's size depends on build constants")
        return self.element_size * self.count


def u32(name: str) -> Field:
    return Field(name, "u32")


def s32(name: str) -> Field:
    return Field(name, "s32")


def u64(name: str) -> Field:
    return Field(name, "u64")


def chars(name: str, count: int) -> Field:
    return Field(name, "char", count)


def nested(name: str, layout: Layout) -> Field:
    return Field(name, layout)


def padding(name: str, ctype: str, count: int = 1) -> Field:
    return Field(name, ctype, count, padding=True)


def tail(name: str, length: TailLength) -> Field:
    """A trailing char array of `length(build constants)` bytes, sent trimmed."""
    return Field(name, "char", tail=length)


def _aligned(offset: int, align: int) -> int:
    return (offset + align - 1) // align * align


class Layout:
    """A C struct: field offsets, size, alignment and a decoder of its fixed part."""

    def __init__(self, name: str, fields: list[Field]) -> None:
        self.name = name
        self.fields = tuple(fields)
        self.offsets: dict[str, int] = {}
        offset = 0
        for i, f in enumerate(self.fields):
            if f.tail is not None and i != len(self.fields) - 1:
                raise ValueError(f"struct {name}: tail {f.name} must be the last field")
            offset = _aligned(offset, f.align)
            self.offsets[f.name] = offset
            if f.tail is None:
                offset += f.size
        self.align = max(f.align for f in self.fields)
        self.fixed_size = offset  # up to the tail (the whole struct when there is none)
        self.has_tail = self.fields[-1].tail is not None
        self.size = offset if self.has_tail else _aligned(offset, self.align)
        self.format = "<" + self._format()
        self.struct = struct.Struct(self.format)
        self.view = _view_type(self)

    @property
    def names(self) -> tuple[str, ...]:
        """Decoded member names, in order (padding left out)."""
        return tuple(f.name for f in self.fields if not f.padding and f.tail is None)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"struct {self.name} has no field {name}")

    def full_size(self, constants: Mapping[str, int]) -> int:
        """sizeof(struct) once the tail's length is known."""
        if not self.has_tail:
            return self.size
        last = self.fields[-1]
        assert last.tail is not None
        return _aligned(self.fixed_size + last.tail(constants) * last.element_size, self.align)

    def unpack_from(self, data: bytes, offset: int = 0) -> Any:
        """The fixed part as a tuple with a property per field (nested structs as views)."""
        return self.view(self.struct.unpack_from(data, offset))

    def pack(self, values: Mapping[str, Any], tail_bytes: bytes = b"") -> bytes:
        """The bytes of one record (the inverse of unpack_from; tests build records with it).
        Missing members are zero; `tail_bytes` is appended as the trimmed tail."""
        return self.struct.pack(*self._flat(values)) + tail_bytes

    def _flat(self, values: Mapping[str, Any]) -> Iterator[Any]:
        for f in self.fields:
            if f.padding or f.tail is not None:
                continue
            value = values.get(f.name)
            if f.nested is not None:
                yield from f.nested._flat(value or {})
            elif f.ctype == "char":
                yield value or b""
            elif f.count > 1:
                yield from value or [0] * f.count
            else:
                yield value or 0

    def _format(self) -> str:
        parts: list[str] = []
        offset = 0
        for f in self.fields:
            if f.tail is not None:
                break
            start = self.offsets[f.name]
            if start > offset:
                parts.append(f"{start - offset}x")
            if f.padding:
                parts.append(f"{f.size}x")
            elif f.nested is not None:
                parts.append(f.nested._format())
            elif f.ctype == "char":
                parts.append(f"{f.count}s")
            else:
                parts.append(SCALARS[f.ctype][0] * f.count)
            offset = start + f.size
        if not self.has_tail and self.size > offset:
            parts.append(f"{self.size - offset}x")
        return "".join(parts)

    def _width(self) -> int:
        """How many values one unpack of this struct yields."""
        width = 0
        for f in self.fields:
            if f.padding or f.tail is not None:
                continue
            if f.nested is not None:
                width += f.nested._width()
            elif f.ctype == "char":
                width += 1
            else:
                width += f.count
        return width

    def __repr__(self) -> str:
        return f"Layout(struct {self.name}, {self.size} bytes)"


def _view_type(layout: Layout) -> type:
    """A tuple subclass naming the unpacked values: scalars by index, nested structs as
    views of their slice (built only when read)."""
    members: dict[str, Any] = {"__slots__": ()}
    index = 0
    for f in layout.fields:
        if f.padding or f.tail is not None:
            continue
        if f.nested is not None:
            width = f.nested._width()
            members[f.name] = _nested_property(f.nested, slice(index, index + width))
            index += width
        elif f.ctype != "char" and f.count > 1:
            members[f.name] = property(itemgetter(slice(index, index + f.count)))
            index += f.count
        else:
            members[f.name] = property(itemgetter(index))
            index += 1
    return type(f"{layout.name}_view", (tuple,), members)


def _nested_property(inner: Layout, span: slice) -> property:
    def get(self: tuple[Any, ...]) -> Any:
        return inner.view(self[span])

    return property(get)
