"""Index mappings: explicit mappings, dynamic mapping and per-document type validation.

The structure mirrors Elasticsearch's object/field mapper tree: every object level is an
:class:`ObjectMapper` whose ``props`` maps a single path segment to a child mapper.  Dotted
keys in documents (``{"host.name": "x"}``) and in explicit mappings are expanded into
objects, exactly like Elasticsearch does (``subobjects: true``).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, Optional

from .errors import ESError, illegal_argument

KEYWORD_TYPES = frozenset({"keyword", "constant_keyword", "wildcard", "version"})
TEXT_TYPES = frozenset({"text", "match_only_text", "search_as_you_type"})
INT_TYPES = frozenset({"long", "integer", "short", "byte", "unsigned_long"})
FLOAT_TYPES = frozenset({"double", "float", "half_float", "scaled_float"})
DATE_TYPES = frozenset({"date", "date_nanos"})
OBJECT_TYPES = frozenset({"object", "nested"})

_INT_RANGES = {
    "long": (-(2**63), 2**63 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "short": (-(2**15), 2**15 - 1),
    "byte": (-128, 127),
    "unsigned_long": (0, 2**64 - 1),
}

_DATE_RE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
    r"(Z|[+-]\d{2}(?::?\d{2})?)?)?)?)?"
)
_DETECT_DATE_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:T\d{2}(?::\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?"
)
_INT_STR_RE = re.compile(r"[+-]?\d+")
_NUM_STR_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _days_from_civil(y: int, m: int, d: int) -> int:
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@lru_cache(maxsize=65536)
def parse_iso_millis(value: str) -> int | None:
    """Parse ``strict_date_optional_time`` into epoch milliseconds (None when invalid)."""
    m = _DATE_RE.fullmatch(value)
    if m is None:
        return None
    year = int(m.group(1))
    month = int(m.group(2) or 1)
    day = int(m.group(3) or 1)
    hour = int(m.group(4) or 0)
    minute = int(m.group(5) or 0)
    sec = int(m.group(6) or 0)
    frac = m.group(7)
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and sec <= 59):
        return None
    if day > 28:
        mdays = [31, 29 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 28,
                 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
        if day > mdays:
            return None
    millis = (_days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + sec) * 1000
    if frac:
        millis += int((frac + "00")[:3])
    tz = m.group(8)
    if tz and tz != "Z":
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        off = int(digits[:2]) * 60 + (int(digits[2:4]) if len(digits) >= 4 else 0)
        if off > 18 * 60:
            return None
        millis -= sign * off * 60000
    return millis


@lru_cache(maxsize=4096)
def _day_seconds(date: str) -> int | None:
    millis = parse_iso_millis(date)
    return None if millis is None else millis // 1000


def fast_iso_nanos(value: str) -> int | None:
    """``YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`` (what shippers send) without a regex."""
    if len(value) < 20 or value[-1] != "Z" or value[10] != "T" or value[13] != ":" \
            or value[16] != ":":
        return None
    if value[19] == "." and 21 < len(value) <= 30 and value[20:-1].isdigit():
        frac = value[20:-1]
    elif len(value) == 20:
        frac = ""
    else:
        return None
    hh, mm, ss = value[11:13], value[14:16], value[17:19]
    if not (hh.isdigit() and mm.isdigit() and ss.isdigit()):
        return None
    h, m, sec = int(hh), int(mm), int(ss)
    day = _day_seconds(value[:10])
    if day is None or h > 23 or m > 59 or sec > 59:
        return None
    return (day + h * 3600 + m * 60 + sec) * 1_000_000_000 + int((frac + "000000000")[:9])


def to_millis(value: Any) -> int | None:
    """Convert a date value (ISO string, epoch millis number or numeric string) to millis."""
    t = type(value)
    if t is int:
        return value
    if t is float:
        return int(value)
    if t is str:
        if _INT_STR_RE.fullmatch(value) and len(value) != 4:
            return int(value)
        return parse_iso_millis(value)
    return None


def format_millis(millis: int) -> str:
    """Epoch millis to ``yyyy-MM-ddTHH:mm:ss.SSSZ``."""
    import datetime

    dt = datetime.datetime.fromtimestamp(millis / 1000, tz=datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"


def java_str(value: Any) -> str:
    """Render a parsed JSON value the way Java's ``Object.toString`` would (error previews)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={java_str(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(java_str(v) for v in value) + "]"
    return str(value)


# --------------------------------------------------------------------------------------
# value checkers: return None when the value is acceptable, else (caused_by type, reason)
# --------------------------------------------------------------------------------------

_Check = Optional[tuple[str, str]]


def _check_keyword(value: Any) -> _Check:
    return None


def _check_int(value: Any, type_: str = "long") -> _Check:
    t = type(value)
    if t is int:
        lo, hi = _INT_RANGES.get(type_, _INT_RANGES["long"])
        if lo <= value <= hi:
            return None
        return ("illegal_argument_exception", f"Value [{value}] is out of range for a {type_}")
    if t is float:
        if value != value or value in (float("inf"), float("-inf")):
            return ("illegal_argument_exception", f"[{type_}] supports only finite values")
        return None
    if t is bool:
        tok = "VALUE_TRUE" if value else "VALUE_FALSE"
        return (
            "x_content_parse_exception",
            f"Current token ({tok}) not numeric, can not use numeric value accessors",
        )
    if t is str:
        s = value.strip()
        if _INT_STR_RE.fullmatch(s) or _NUM_STR_RE.fullmatch(s):
            return None
        return ("number_format_exception", f'For input string: "{value}"')
    return ("illegal_argument_exception", f"unsupported value for [{type_}]")


def _check_float(value: Any) -> _Check:
    t = type(value)
    if t is float or t is int:
        return None
    if t is bool:
        tok = "VALUE_TRUE" if value else "VALUE_FALSE"
        return (
            "x_content_parse_exception",
            f"Current token ({tok}) not numeric, can not use numeric value accessors",
        )
    if t is str:
        if _NUM_STR_RE.fullmatch(value.strip()):
            return None
        return ("number_format_exception", f'For input string: "{value}"')
    return ("illegal_argument_exception", "unsupported value")


def _check_bool(value: Any) -> _Check:
    if value is True or value is False or value in ("true", "false", ""):
        return None
    return (
        "illegal_argument_exception",
        f"Failed to parse value [{java_str(value)}] as only [true] or [false] are allowed.",
    )


def _check_date(value: Any) -> _Check:
    t = type(value)
    if t is int or t is float:
        return None
    if t is str and fast_iso_nanos(value) is not None:
        return None
    if t is str:
        if _INT_STR_RE.fullmatch(value) or parse_iso_millis(value) is not None:
            return None
        return (
            "illegal_argument_exception",
            f"failed to parse date field [{value}] with format "
            "[strict_date_optional_time||epoch_millis]",
        )
    return (
        "illegal_argument_exception",
        f"failed to parse date field [{java_str(value)}] with format "
        "[strict_date_optional_time||epoch_millis]",
    )


def _check_ip(value: Any) -> _Check:
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
            return None
        except ValueError:
            pass
    return ("illegal_argument_exception", f"'{java_str(value)}' is not an IP string literal.")


def _check_none(value: Any) -> _Check:
    return None


def kind_of(type_: str) -> str:
    if type_ in KEYWORD_TYPES:
        return "keyword"
    if type_ in TEXT_TYPES:
        return "text"
    if type_ in INT_TYPES:
        return "long"
    if type_ in FLOAT_TYPES:
        return "double"
    if type_ in DATE_TYPES:
        return "date"
    if type_ == "boolean":
        return "boolean"
    if type_ == "ip":
        return "ip"
    return "opaque"


_CHECKERS = {
    "keyword": _check_keyword,
    "text": _check_keyword,
    "double": _check_float,
    "boolean": _check_bool,
    "date": _check_date,
    "ip": _check_ip,
    "opaque": _check_none,
}


_FAST_TYPES: dict[str, frozenset[type]] = {
    "keyword": frozenset({str, int, float, bool}),
    "text": frozenset({str, int, float, bool}),
    "long": frozenset({int}),
    "double": frozenset({int, float}),
    "date": frozenset({int}),
    "boolean": frozenset({bool}),
    "opaque": frozenset({str, int, float, bool, dict, list}),
    "constant_keyword": frozenset(),
}


class FieldMapper:
    """A leaf field (any non-object type)."""

    __slots__ = ("check", "fast", "fields", "ignore_above", "kind", "params", "type")

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.type: str = params.get("type", "object")
        self.kind = kind_of(self.type)
        ia = params.get("ignore_above")
        self.ignore_above: int | None = int(ia) if ia is not None else None
        self.fields: dict[str, FieldMapper] = {
            name: FieldMapper(sub) for name, sub in (params.get("fields") or {}).items()
        }
        if self.kind == "long":
            type_ = self.type
            self.check = lambda v: _check_int(v, type_)
        else:
            self.check = _CHECKERS[self.kind]
        # value types accepted without any further check (fast path of index_document)
        self.fast: frozenset[type] = _FAST_TYPES.get(self.type, _FAST_TYPES.get(self.kind,
                                                                                frozenset()))
        if self.kind == "long" and self.type != "long":
            self.fast = frozenset()  # integer/short/byte/unsigned_long need range checks

    def to_dict(self) -> dict[str, Any]:
        return self.params


class ObjectMapper:
    """An object level of the mapping."""

    __slots__ = ("dynamic", "enabled", "extra", "props", "type")

    def __init__(self, type_: str = "object", dynamic: str | None = None) -> None:
        self.type = type_
        self.props: dict[str, FieldMapper | ObjectMapper] = {}
        self.dynamic = dynamic
        self.enabled = True
        self.extra: dict[str, Any] = {}

    def to_dict(self, root: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if not root and self.type != "object":
            out["type"] = self.type
        if self.dynamic is not None:
            out["dynamic"] = self.dynamic
        if not self.enabled:
            out["enabled"] = False
        out.update(self.extra)
        if self.props:
            out["properties"] = {k: v.to_dict() for k, v in sorted(self.props.items())}
        return out


def _norm_dynamic(value: Any) -> str | None:
    if value is None:
        return None
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value).lower()


class _Ctx:
    __slots__ = ("added", "doc_id", "raw")

    def __init__(self, doc_id: str, raw: bytes | None) -> None:
        self.added: list[tuple[ObjectMapper, str]] = []
        self.doc_id = doc_id
        self.raw = raw


def _dynamic_type_name(value: Any, date_detection: bool) -> str:
    t = type(value)
    if t is bool:
        return "boolean"
    if t is int:
        return "long"
    if t is float:
        return "double"
    if t is dict:
        return "object"
    if t is str:
        if date_detection and _DETECT_DATE_RE.fullmatch(value) and parse_iso_millis(value):
            return "date"
        return "string"
    return "string"


class Mapping:
    """The mapping of one index."""

    ROOT_KEYS = ("dynamic", "date_detection", "numeric_detection", "dynamic_templates",
                 "properties", "_source", "_meta", "_routing", "dynamic_date_formats",
                 "_data_stream_timestamp", "subobjects", "runtime", "enabled")

    def __init__(self, body: dict[str, Any] | None = None,
                 error_type: str = "document_parsing_exception") -> None:
        self.root = ObjectMapper()
        self.date_detection = True
        self.numeric_detection = False
        self.dynamic_templates: list[dict[str, Any]] = []
        self.error_type = error_type
        self.ignore_malformed = False
        if body:
            self.merge(body)

    # ---------------------------------------------------------------- explicit mappings
    def merge(self, body: dict[str, Any]) -> None:
        """Merge an explicit mappings body (as in templates, PUT index, PUT _mapping)."""
        if "_doc" in body and isinstance(body["_doc"], dict) and len(body) == 1:
            body = body["_doc"]
        for key, value in body.items():
            if key == "properties":
                self._merge_props(self.root, value or {}, "")
            elif key == "dynamic":
                self.root.dynamic = _norm_dynamic(value)
            elif key == "date_detection":
                self.date_detection = bool(value)
                self.root.extra["date_detection"] = bool(value)
            elif key == "numeric_detection":
                self.numeric_detection = bool(value)
                self.root.extra["numeric_detection"] = bool(value)
            elif key == "dynamic_templates":
                self.dynamic_templates = list(value or [])
                self.root.extra["dynamic_templates"] = self.dynamic_templates
            elif key in self.ROOT_KEYS:
                self.root.extra[key] = value
            else:
                raise ESError(
                    400,
                    {
                        "type": "mapper_parsing_exception",
                        "reason": "Root mapping definition has unsupported parameters:  "
                        f"[{key} : {java_str(value)}]",
                    },
                )

    def _merge_props(self, node: ObjectMapper, props: dict[str, Any], prefix: str) -> None:
        for name, spec in props.items():
            if not isinstance(spec, dict):
                raise ESError(400, {"type": "mapper_parsing_exception",
                                    "reason": "Expected map for property [fields] on field "
                                    f"[{name}] "
                                    f"but got a class java.lang.String"})
            parts = name.split(".")
            cur = node
            pfx = prefix
            for part in parts[:-1]:
                child = cur.props.get(part)
                if child is None:
                    child = ObjectMapper()
                    cur.props[part] = child
                elif not isinstance(child, ObjectMapper):
                    raise illegal_argument(
                        f"can't merge a non object mapping [{pfx}{part}] with an object mapping"
                    )
                cur = child
                pfx = pfx + part + "."
            self._merge_one(cur, parts[-1], spec, pfx)

    def _merge_one(self, node: ObjectMapper, name: str, spec: dict[str, Any], prefix: str) -> None:
        full = prefix + name
        type_ = spec.get("type")
        existing = node.props.get(name)
        if (type_ is None and "properties" in spec) or type_ in OBJECT_TYPES:
            if existing is None:
                obj = ObjectMapper(type_ or "object", _norm_dynamic(spec.get("dynamic")))
                node.props[name] = obj
            elif isinstance(existing, ObjectMapper):
                obj = existing
                if "dynamic" in spec:
                    obj.dynamic = _norm_dynamic(spec.get("dynamic"))
            else:
                raise illegal_argument(
                    f"can't merge a non object mapping [{full}] with an object mapping"
                )
            if spec.get("enabled") is False:
                obj.enabled = False
            self._merge_props(obj, spec.get("properties") or {}, full + ".")
            return
        if type_ is None:
            type_ = "object"
            node.props.setdefault(name, ObjectMapper())
            return
        if isinstance(existing, ObjectMapper):
            raise illegal_argument(
                f"can't merge a non object mapping [{full}] with an object mapping")
        if existing is not None and existing.type != type_:
            raise illegal_argument(
                f"mapper [{full}] cannot be changed from type [{existing.type}] to [{type_}]"
            )
        node.props[name] = FieldMapper(dict(spec))

    def to_dict(self) -> dict[str, Any]:
        return self.root.to_dict(root=True)

    # ---------------------------------------------------------------- lookups
    def resolve(self, path: str) -> FieldMapper | ObjectMapper | None:
        """Resolve a dotted path (including multi-fields like ``host.name.keyword``)."""
        node: FieldMapper | ObjectMapper | None = self.root
        parts = path.split(".")
        i = 0
        while i < len(parts):
            if isinstance(node, ObjectMapper):
                node = node.props.get(parts[i])
            elif isinstance(node, FieldMapper):
                node = node.fields.get(parts[i])
            else:
                return None
            if node is None:
                return None
            i += 1
        return node

    def source_path(self, path: str) -> str:
        """Source path of a field (multi-fields read their parent's value)."""
        parts = path.split(".")
        node: FieldMapper | ObjectMapper | None = self.root
        for i, part in enumerate(parts):
            if isinstance(node, FieldMapper):
                return ".".join(parts[:i])
            if node is None:
                return path
            node = node.props.get(part)
        return path

    def leaf_fields(self) -> Iterator[tuple[str, FieldMapper]]:
        def walk(node: ObjectMapper, prefix: str) -> Iterator[tuple[str, FieldMapper]]:
            for k, v in node.props.items():
                if isinstance(v, ObjectMapper):
                    yield from walk(v, prefix + k + ".")
                else:
                    yield prefix + k, v

        return walk(self.root, "")

    # ---------------------------------------------------------------- documents
    def index_document(self, source: dict[str, Any], doc_id: str, raw: bytes | None) -> None:
        """Validate a document, applying dynamic mapping updates; raise ESError(400) on failure.

        On failure all mapping updates made for this document are rolled back.
        """
        ctx = _Ctx(doc_id, raw)
        try:
            self._walk(source, self.root, "", ctx, self.root.dynamic or "true")
        except ESError:
            for node, key in reversed(ctx.added):
                node.props.pop(key, None)
            raise

    def _walk(self, obj: dict[str, Any], node: ObjectMapper, prefix: str, ctx: _Ctx,
              dyn: str) -> None:
        props = node.props
        for key, value in obj.items():
            child = props.get(key)
            if child is not None:
                tv = type(value)
                if child.__class__ is FieldMapper:
                    if tv in child.fast:  # type: ignore[union-attr]
                        continue
                    if tv is list and all(type(v) in child.fast for v in value):  # type: ignore[union-attr]
                        continue
                    self._field_value(child, value, prefix + key, ctx, key)  # type: ignore[arg-type]
                    continue
                if tv is dict and child.enabled:  # type: ignore[union-attr]
                    self._walk(value, child, prefix + key + ".", ctx,  # type: ignore[arg-type]
                               child.dynamic or dyn)  # type: ignore[union-attr]
                    continue
            if "." in key or not key:
                if not key or key.startswith(".") or key.endswith(".") or ".." in key:
                    raise self._err(ctx, key, "field name cannot be an empty string")
                parts = key.split(".")
                cur = node
                cur_dyn = dyn
                pfx = prefix
                skip = False
                for part in parts[:-1]:
                    child = cur.props.get(part)
                    if child is None:
                        if value is None:
                            skip = True
                            break
                        if cur_dyn == "strict":
                            raise self._strict(ctx, key, part, pfx)
                        if cur_dyn == "false":
                            skip = True
                            break
                        child = ObjectMapper()
                        cur.props[part] = child
                        ctx.added.append((cur, part))
                    elif not isinstance(child, ObjectMapper):
                        raise self._err(
                            ctx, key,
                            f"Could not dynamically add mapping for field [{prefix}{key}]. "
                            f"Existing mapping for [{pfx}{part}] must be of type object but "
                            f"found [{child.type}].",
                        )
                    if child.dynamic is not None:
                        cur_dyn = child.dynamic
                    cur = child
                    pfx = pfx + part + "."
                if not skip and cur.enabled:
                    self._value(parts[-1], value, cur, pfx, ctx, cur_dyn, key)
            else:
                self._value(key, value, node, prefix, ctx, dyn, key)

    def _value(self, key: str, value: Any, node: ObjectMapper, prefix: str, ctx: _Ctx,
               dyn: str, raw_key: str) -> None:
        child = node.props.get(key)
        if child is None:
            if value is None:
                return
            first = value
            if type(value) is list:
                first = _first_non_null(value)
                if first is None:
                    return
            if dyn == "strict":
                raise self._strict(ctx, raw_key, key, prefix)
            if dyn == "false":
                return
            child = self._dynamic_mapper(prefix + key, key, first)
            node.props[key] = child
            ctx.added.append((node, key))
        if type(child) is ObjectMapper:
            if not child.enabled:
                return
            self._object_value(key, value, child, prefix, ctx, dyn, raw_key)
        else:
            self._field_value(child, value, prefix + key, ctx, raw_key)

    def _object_value(self, key: str, value: Any, child: ObjectMapper, prefix: str, ctx: _Ctx,
                      dyn: str, raw_key: str) -> None:
        t = type(value)
        sub_dyn = child.dynamic or dyn
        if t is dict:
            self._walk(value, child, prefix + key + ".", ctx, sub_dyn)
        elif value is None:
            return
        elif t is list:
            for item in value:
                self._object_value(key, item, child, prefix, ctx, dyn, raw_key)
        else:
            raise self._err(
                ctx, raw_key,
                f"object mapping for [{prefix}{key}] tried to parse field [{key}] as object, "
                "but found a concrete value",
            )

    def _field_value(self, field: FieldMapper, value: Any, full: str, ctx: _Ctx,
                     raw_key: str) -> None:
        t = type(value)
        if t is list:
            for item in value:
                self._field_value(field, item, full, ctx, raw_key)
            return
        if value is None:
            return
        if t is dict:
            if field.kind == "opaque":
                return
            pos = self._pos(ctx, raw_key)
            raise self._field_error(field, value, full, ctx, pos, (
                "illegal_state_exception", f"Can't get text on a START_OBJECT at {pos}"))
        bad = field.check(value)
        if bad is not None:
            if field.kind in _MALFORMABLE and field.params.get(
                "ignore_malformed", self.ignore_malformed
            ):
                return
            raise self._field_error(field, value, full, ctx, self._pos(ctx, raw_key), bad)

    def _field_error(self, field: FieldMapper, value: Any, full: str, ctx: _Ctx, pos: str,
                     cause: tuple[str, str]) -> ESError:
        """The document_parsing_exception (mapper_parsing_exception before 8.x) of a value
        that does not fit its field."""
        return ESError(400, {
            "type": self.error_type,
            "reason": f"[{pos}] failed to parse field [{full}] of type [{field.type}] in "
            f"document with id '{ctx.doc_id}'. Preview of field's value: "
            f"'{java_str(value)}'",
            "caused_by": {"type": cause[0], "reason": cause[1]},
        })

    def _dynamic_mapper(self, full: str, name: str, value: Any) -> FieldMapper | ObjectMapper:
        detected = _dynamic_type_name(value, self.date_detection)
        if detected == "string" and self.numeric_detection and isinstance(value, str):
            if _INT_STR_RE.fullmatch(value):
                detected = "long"
            elif _NUM_STR_RE.fullmatch(value):
                detected = "double"
        for entry in self.dynamic_templates:
            for spec in entry.values():
                if _template_matches(spec, full, name, detected):
                    mapping = dict(spec.get("mapping") or {})
                    dyn_type = _default_type(detected)["type"]
                    for k, v in list(mapping.items()):
                        if isinstance(v, str) and "{dynamic_type}" in v:
                            mapping[k] = v.replace("{dynamic_type}", dyn_type)
                    if "type" not in mapping:
                        mapping = {**_default_type(detected), **mapping}
                    if mapping.get("type") in OBJECT_TYPES or (
                        detected == "object" and mapping.get("type") is None
                    ):
                        return ObjectMapper(mapping.get("type", "object"))
                    return FieldMapper(mapping)
        if detected == "object":
            return ObjectMapper()
        return FieldMapper(_default_type(detected))

    # ---------------------------------------------------------------- errors
    def _pos(self, ctx: _Ctx, key: str) -> str:
        raw = ctx.raw
        if not raw:
            return "1:1"
        needle = b'"' + key.encode() + b'"'
        idx = raw.find(needle)
        if idx < 0:
            return "1:1"
        idx += len(needle)
        n = len(raw)
        while idx < n and raw[idx] in b" \t\r:":
            idx += 1
        return f"1:{idx + 1}"

    def _err(self, ctx: _Ctx, key: str, reason: str) -> ESError:
        return ESError(400, {"type": self.error_type,
                             "reason": f"[{self._pos(ctx, key)}] {reason}"})

    def _strict(self, ctx: _Ctx, raw_key: str, name: str, prefix: str) -> ESError:
        within = prefix[:-1] if prefix else "_doc"
        if "." in within:
            within = within.rsplit(".", 1)[1]
        return ESError(
            400,
            {
                "type": "strict_dynamic_mapping_exception",
                "reason": f"[{self._pos(ctx, raw_key)}] mapping set to strict, dynamic "
                f"introduction of [{name}] within [{within}] is not allowed",
            },
        )


_MALFORMABLE = frozenset({"long", "double", "date", "ip", "boolean"})


def _first_non_null(values: list[Any]) -> Any:
    for v in values:
        if type(v) is list:
            v = _first_non_null(v)
        if v is not None:
            return v
    return None


def _default_type(detected: str) -> dict[str, Any]:
    if detected == "string":
        return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
    if detected == "double":
        return {"type": "float"}
    if detected == "object":
        return {"type": "object"}
    return {"type": detected}


def _template_matches(spec: dict[str, Any], full: str, name: str, detected: str) -> bool:
    mmt = spec.get("match_mapping_type")
    if mmt is not None:
        types = mmt if isinstance(mmt, list) else [mmt]
        if "*" not in types and detected not in types:
            return False
    elif detected == "object" and "mapping" in spec and "type" not in spec["mapping"]:
        pass

    def any_match(pats: Any, value: str) -> bool:
        pats = pats if isinstance(pats, list) else [pats]
        if spec.get("match_pattern") == "regex":
            return any(re.fullmatch(p, value) for p in pats)
        return any(fnmatch.fnmatchcase(value, p) for p in pats)

    if "match" in spec and not any_match(spec["match"], name):
        return False
    if "unmatch" in spec and any_match(spec["unmatch"], name):
        return False
    if "path_match" in spec and not any_match(spec["path_match"], full):
        return False
    return not ("path_unmatch" in spec and any_match(spec["path_unmatch"], full))
