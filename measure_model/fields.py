"""Field checkers: the value types of the task table, each with its JSON schema.

A checker is a small frozen object with two methods:

- ``check(name, value)`` returns the normalised value or raises
  :class:`FieldError` whose message names the field (``top_k 0 is out of
  range 1..1000``); ``bool`` is never a number, NaN and infinities are
  refused, huge integers are compared exactly (never converted first);
- ``json_schema()`` returns the OpenAPI 3.0 schema fragment of the same
  rule (``ryu_app/rest/openapi.json`` is generated from it), so the documented
  limits are the enforced ones.

Rules across the fields of one object are objects too (:class:`Rule`):
``check(name, obj)`` raises the error and ``schema()`` says the same rule in
JSON schema, both from the rule's own data (:class:`Exclusive`,
:class:`NeedsValue`, :class:`OneFamily`), so the schema of a cross-field
rule is never written by hand beside its check.

Only this module parses a number, an integer, a choice or a pattern for the
task model; ``measure_model.task`` builds its table from these objects.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

JsonSchema = dict[str, Any]



NAME_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,62}"   # task names
HOST_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"  # host names (or IPv4 data addresses)
MAC_PATTERN = r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}"  # lower-case, colon-separated
ID_PATTERN = r"[1-9][0-9]{0,17}"  # task and action ids: the store's integer keys

class FieldError(ValueError):
    """A value failed its check; the message names the field."""


class ConflictError(FieldError):
    """Fields that are each valid but conflict with each other (``src`` = ``dst``).

    A JSON schema cannot state these rules, so an API answers them 409, not
    400: the documented schema is exactly what a 400 refuses.
    """


class Checker(Protocol):
    """What a row of the task table checks its value with."""

    def check(self, name: str, value: Any) -> Any: ...

    def json_schema(self) -> JsonSchema: ...


class Rule(Protocol):
    """A check across the fields of one object, and the same rule as JSON schema."""

    def check(self, name: str, obj: dict[str, Any]) -> None:
        """Raise FieldError naming the fields (``name``: the object's path, may be empty)."""
        ...

    def schema(self) -> JsonSchema | None:
        """The rule as a JSON schema that the object must also match (None: a JSON
        schema cannot say it, and the check raises ConflictError, answered 409)."""
        ...


def _path(name: str, field_name: str) -> str:
    return f"{name}.{field_name}" if name else field_name


@dataclass(frozen=True)
class Exclusive:
    """At most one of ``names`` is given (not None)."""

    names: tuple[str, ...]

    def check(self, name: str, obj: dict[str, Any]) -> None:
        given = [n for n in self.names if obj.get(n) is not None]
        if len(given) > 1:
            listed = " and ".join(_path(name, n) for n in self.names)
            raise FieldError(f"{listed} are exclusive: give one of them")

    def schema(self) -> JsonSchema:
        return {"not": {"required": list(self.names)}}


@dataclass(frozen=True)
class Distinct:
    """Fields ``a`` and ``b``, when given, differ (each a ``what``); a ConflictError,
    since a JSON schema cannot compare two fields."""

    a: str
    b: str
    what: str

    def check(self, name: str, obj: dict[str, Any]) -> None:
        if obj.get(self.a) is not None and obj.get(self.a) == obj.get(self.b):
            raise ConflictError(f"{_path(name, self.a)} and {_path(name, self.b)} are the "
                                f"same {self.what} '{obj[self.a]}'")

    def schema(self) -> None:
        return None


@dataclass(frozen=True)
class NeedsValue:
    """Any of ``names`` given needs the field ``needs`` to be one of ``values``."""

    names: tuple[str, ...]
    needs: str
    values: tuple[str, ...]

    def check(self, name: str, obj: dict[str, Any]) -> None:
        for n in self.names:
            if obj.get(n) is not None and obj.get(self.needs) not in self.values:
                raise FieldError(f"{_path(name, n)} needs {_path(name, self.needs)} "
                                 f"{' or '.join(self.values)}")

    def schema(self) -> JsonSchema:
        return {"anyOf": [
            {"not": {"anyOf": [{"required": [n]} for n in self.names]}},
            {"required": [self.needs], "properties": {self.needs: {"enum": list(self.values)}}}]}


@dataclass(frozen=True)
class OneFamily:
    """The addresses ``names`` and a family-bound protocol (``proto_family``: protocol ->
    IP version) of one object are of one address family."""

    names: tuple[str, ...]
    proto: str
    proto_family: tuple[tuple[str, int], ...]

    def check(self, name: str, obj: dict[str, Any]) -> None:
        family = dict(self.proto_family)
        first: tuple[str, int] | None = None
        if obj.get(self.proto) in family:
            first = (f"{_path(name, self.proto)} {obj[self.proto]}", family[obj[self.proto]])
        for n in self.names:
            if obj.get(n) is None:
                continue
            version = 6 if ":" in obj[n] else 4
            if first is None:
                first = (f"{_path(name, n)} '{obj[n]}'", version)
            elif first[1] != version:
                raise FieldError(f"{_path(name, n)} '{obj[n]}' is IPv{version} but {first[0]} "
                                 f"is IPv{first[1]}: one address family per {name or 'object'}")

    def schema(self) -> JsonSchema:
        patterns = {4: IPV4_PREFIX, 6: IPV6_PREFIX}
        return {"anyOf": [
            {"properties": {**{n: {"pattern": f"^{patterns[v]}$"} for n in self.names},
                            self.proto: {"not": {"enum": [p for p, f in self.proto_family
                                                          if f != v]}}}}
            for v in (4, 6)]}


def type_name(value: Any) -> str:
    """The JSON-ish name of a value's type, for error messages."""
    return "null" if value is None else type(value).__name__


def shown(value: Any) -> str:
    """A value for an error message, long numbers cut (``12345...(400 digits)``)."""
    if isinstance(value, str):
        text = value if len(value) <= 40 else f"{value[:40]}..."
        return f"'{text}'"
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} digits)"


MAX_COUNT = 2 ** 63  # counts are int64 everywhere (sketch cells, totals)


def is_int(value: Any) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_count(value: Any) -> bool:
    """A non-negative integer below ``MAX_COUNT``."""
    return is_int(value) and 0 <= value < MAX_COUNT


def is_number(value: Any, lo: float, hi: float) -> bool:
    """An int or float (not a bool) in ``[lo, hi]``: compared, never converted,
    so ``10**400`` is simply out of range."""
    return isinstance(value, int | float) and not isinstance(value, bool) and lo <= value <= hi


@dataclass(frozen=True)
class Number:
    """A finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``); returned as float."""

    lo: float
    hi: float
    lo_open: bool = False

    def check(self, name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldError(f"{name} must be a number, not {type_name(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise FieldError(f"{name} {value} is not a finite number")
        low_fails = value <= self.lo if self.lo_open else value < self.lo
        if low_fails or value > self.hi:  # exact for huge ints too
            left = "(" if self.lo_open else "["
            raise FieldError(f"{name} {shown(value)} is out of range "
                             f"{left}{self.lo:g}, {self.hi:g}]")
        return float(value)

    def json_schema(self) -> JsonSchema:
        out: JsonSchema = {"type": "number", "minimum": self.lo, "maximum": self.hi}
        if self.lo_open:
            out["exclusiveMinimum"] = True
        return out


@dataclass(frozen=True)
class Integer:
    """An integer (not a bool) in ``lo..hi``."""

    lo: int
    hi: int

    def check(self, name: str, value: Any) -> int:
        if not is_int(value):
            raise FieldError(f"{name} must be an integer, not {type_name(value)}")
        if not self.lo <= value <= self.hi:
            raise FieldError(f"{name} {shown(value)} is out of range {self.lo}..{self.hi}")
        return int(value)

    def json_schema(self) -> JsonSchema:
        return {"type": "integer", "minimum": self.lo, "maximum": self.hi}


@dataclass(frozen=True)
class PowerOfTwo(Integer):
    """An integer in ``lo..hi`` that is a power of two (sketch widths)."""

    def check(self, name: str, value: Any) -> int:
        value = super().check(name, value)
        if value & (value - 1):
            raise FieldError(f"{name} {value} is not a power of two")
        return value

    def json_schema(self) -> JsonSchema:
        out = super().json_schema()
        out["enum"] = [1 << i for i in range(self.hi.bit_length())
                       if self.lo <= 1 << i <= self.hi]
        return out


@dataclass(frozen=True)
class Choice:
    """One of ``values``; ``aliases`` maps accepted spellings to a value."""

    values: tuple[str, ...]
    aliases: tuple[tuple[str, str], ...] = ()

    def check(self, name: str, value: Any) -> str:
        alias = dict(self.aliases)
        if isinstance(value, str) and value in alias:
            return alias[value]
        if not isinstance(value, str) or value not in self.values:
            show = f"'{value}'" if isinstance(value, str) else repr(value)
            raise FieldError(f"{name} {show} is not one of {', '.join(self.values)}")
        return value

    def json_schema(self) -> JsonSchema:
        return {"type": "string", "enum": [*self.values, *(a for a, _ in self.aliases)]}


@dataclass(frozen=True)
class Pattern:
    """A string matching ``regex`` completely; ``what`` says what it should be."""

    regex: str
    what: str

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or not re.fullmatch(self.regex, value):
            show = f"'{value}'" if isinstance(value, str) else type_name(value)
            raise FieldError(f"{name} {show} {self.what}")
        return value

    def json_schema(self) -> JsonSchema:
        return {"type": "string", "pattern": f"^({self.regex})$"}  # the group: regex may hold "|"


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_PORT_RE = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"


_H = "[0-9A-Fa-f]{1,4}"
IPV6_TEXT = ("(" + "|".join([
    f"({_H}:){{7}}{_H}", f"({_H}:){{1,7}}:", f"({_H}:){{1,6}}:{_H}",
    f"({_H}:){{1,5}}(:{_H}){{1,2}}", f"({_H}:){{1,4}}(:{_H}){{1,3}}",
    f"({_H}:){{1,3}}(:{_H}){{1,4}}", f"({_H}:){{1,2}}(:{_H}){{1,5}}",
    f"{_H}:(:{_H}){{1,6}}", f":((:{_H}){{1,7}}|:)"]) + ")")
IPV4_PREFIX = rf"{_OCTET}(\.{_OCTET}){{3}}(/([0-9]|[12][0-9]|3[0-2]))?"
IPV6_PREFIX = rf"{IPV6_TEXT}(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?"
IP_ADDRESS = rf"{_OCTET}(\.{_OCTET}){{3}}|{IPV6_TEXT}"  # one IPv4 or IPv6 address


@dataclass(frozen=True)
class Prefix:
    """An IPv4 (``a.b.c.d/n``) or IPv6 (hex groups, ``::``, ``/0..128``) address or
    prefix; host bits are masked as iptables does (``10.0.0.5/24`` is
    ``10.0.0.0/24``), a full-length prefix (``/32``, ``/128``) is written as the
    address, IPv6 per RFC 5952. No zone ids, no dotted IPv4 inside IPv6."""

    def check(self, name: str, value: Any) -> str:
        if isinstance(value, str) and re.fullmatch(IPV6_PREFIX, value):
            return str(ipaddress.IPv6Network(value, strict=False)).removesuffix("/128")
        if not isinstance(value, str) or not re.fullmatch(IPV4_PREFIX, value):
            show = f"'{value}'" if isinstance(value, str) else type_name(value)
            raise FieldError(f"{name} {show} is not an IPv4 or IPv6 address or prefix")
        return str(ipaddress.IPv4Network(value, strict=False)).removesuffix("/32")

    def json_schema(self) -> JsonSchema:
        return {"type": "string", "pattern": f"^({IPV4_PREFIX}|{IPV6_PREFIX})$"}


PORT = Integer(0, 65535)


@dataclass(frozen=True)
class PortSpec:
    """A port number or a range ``"a:b"`` of ports 0..65535 (ends in either order)."""

    def check(self, name: str, value: Any) -> int | str:
        if isinstance(value, str):
            match = re.fullmatch(rf"{_PORT_RE}:{_PORT_RE}", value)
            if not match:
                raise FieldError(f"{name} '{value}' is not a port or a range 'low:high' "
                                 "of ports 0..65535")
            low, high = sorted((int(match[1]), int(match[2])))
            return f"{low}:{high}"
        return PORT.check(name, value)

    def json_schema(self) -> JsonSchema:
        return {"oneOf": [PORT.json_schema(),
                          {"type": "string", "pattern": f"^{_PORT_RE}:{_PORT_RE}$"}]}


PORT_1_65535 = (r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}"
                r"|[1-9][0-9]{0,3})")
HOST_PORT_RE = rf"(\[[0-9A-Fa-f:.]{{2,45}}\]|[A-Za-z0-9_.-]{{1,253}}):({PORT_1_65535})"


def parse_host_port(value: Any) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) -> (host, port); ValueError otherwise.

    The host is a name or an address literal in ASCII (not resolved here);
    the port is 1..65535. One regular expression, also the JSON schema's."""
    if not isinstance(value, str):
        raise ValueError("must be a string 'host:port'")
    match = re.fullmatch(HOST_PORT_RE, value, re.ASCII)
    if match is None:
        raise ValueError(f"'{value}' is not host:port with a port 1..65535")
    return match[1].strip("[]"), int(match[2])


@dataclass(frozen=True)
class HostPort:
    """A ``host:port`` string (a name, an IPv4 address or ``[IPv6]``; port 1..65535)."""

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise FieldError(f"{name} must be a string 'host:port', not {type_name(value)}")
        try:
            parse_host_port(value)
        except ValueError as exc:
            raise FieldError(f"{name} {exc}") from None
        return value

    def json_schema(self) -> JsonSchema:
        return {"type": "string", "pattern": f"^{HOST_PORT_RE}$"}


@dataclass(frozen=True)
class ListOf:
    """A non-empty list of at most ``max_items`` distinct items, or the word ``word``
    (or one of the words, when ``word`` is a tuple)."""

    item: Checker
    max_items: int
    word: str | tuple[str, ...] | None = None
    noun: str = "item"

    @property
    def words(self) -> tuple[str, ...]:
        return (self.word,) if isinstance(self.word, str) else self.word or ()

    def check(self, name: str, value: Any) -> str | tuple[Any, ...]:
        if isinstance(value, str) and value in self.words:
            return value
        if not isinstance(value, list) or not value:
            either = "".join(f"'{w}' or " for w in self.words)
            raise FieldError(f"{name} must be {either}a non-empty list of {self.noun}s")
        if len(value) > self.max_items:
            raise FieldError(f"{name} lists {len(value)} {self.noun}s, "
                             f"more than {self.max_items}")
        items = tuple(self.item.check(f"{name}[{i}]", v) for i, v in enumerate(value))
        if len(set(items)) != len(items):
            raise FieldError(f"{name} lists a {self.noun} twice")
        return items

    def json_schema(self) -> JsonSchema:
        listed: JsonSchema = {"type": "array", "items": self.item.json_schema(), "minItems": 1,
                              "maxItems": self.max_items, "uniqueItems": True}
        if not self.words:
            return listed
        return {"oneOf": [{"type": "string", "enum": list(self.words)}, listed]}


@dataclass(frozen=True)
class Row:
    """One field of a table: its name, checker, default and documentation.

    ``default`` is the value used when the field is absent (``None``: stays
    unset; a callable is called with the object being parsed, for defaults
    that depend on other fields). ``required`` fields have no default.
    ``kinds`` (task table only) lists the task kinds the field applies to.
    """

    name: str
    checker: Checker
    default: Any = None
    doc: str = ""
    kinds: frozenset[str] = frozenset()
    required: bool = False

    def default_for(self, obj: dict[str, Any]) -> Any:
        return self.default(obj) if callable(self.default) else self.default


@dataclass(frozen=True)
class Nested:
    """An object of its own rows, built into ``factory(**fields)``.

    Unknown keys are refused (``unknown field 'window.size'``); absent
    fields take their row's default; ``rules`` run on the checked fields
    for checks across them, and their schemas join the object's (``allOf``).
    """

    rows: tuple[Row, ...]
    factory: Callable[..., Any]
    rules: tuple[Rule, ...] = ()

    def check(self, name: str, value: Any) -> Any:
        if not isinstance(value, dict):
            raise FieldError(f"{name} must be a mapping, not {type_name(value)}")
        names = [r.name for r in self.rows]
        for key in value:
            if key not in names:
                raise FieldError(f"unknown field '{name}.{key}'")
        out: dict[str, Any] = {}
        for row in self.rows:
            if row.name in value:
                out[row.name] = row.checker.check(f"{name}.{row.name}", value[row.name])
            elif row.required:
                raise FieldError(f"{name}.{row.name} is required")
            else:
                out[row.name] = row.default_for(value)
        for rule in self.rules:
            rule.check(name, out)
        return self.factory(**out)

    def json_schema(self) -> JsonSchema:
        out: JsonSchema = {"type": "object", "additionalProperties": False,
                           "properties": {r.name: described(r) for r in self.rows}}
        required = [r.name for r in self.rows if r.required]
        if required:
            out["required"] = required
        parts: list[JsonSchema] = []
        for rule in self.rules:
            schema = rule.schema()
            if schema is not None:
                parts += schema["allOf"] if list(schema) == ["allOf"] else [schema]
        if parts:
            out["allOf"] = parts
        return out


def described(row: Row) -> JsonSchema:
    """A row's JSON schema with its doc and (plain) default."""
    out = dict(row.checker.json_schema())
    if row.doc:
        out["description"] = row.doc
    if row.default is not None and not callable(row.default) \
            and isinstance(row.default, str | int | float):
        out["default"] = row.default
    return out


@dataclass(frozen=True)
class HostOrPrefix:
    """A host name, or an IPv4/IPv6 address or prefix (``10.0.9.0/24``; host bits may
    be set: it stands for its network). Kept as written, so distinct entries stay
    distinct."""

    host: Pattern

    def check(self, name: str, value: Any) -> str:
        if isinstance(value, str) and re.fullmatch(f"{IPV4_PREFIX}|{IPV6_PREFIX}", value):
            return value
        return self.host.check(name, value)

    def json_schema(self) -> JsonSchema:
        return {"anyOf": [self.host.json_schema(), Prefix().json_schema()]}


@dataclass(frozen=True)
class Url:
    """An ``http://`` or ``https://`` URL of at most ``max_length`` characters."""

    max_length: int
    #: explicit ASCII classes only, so Python and JSON-schema (ECMA) regexes agree
    regex: str = r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?"

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or len(value) > self.max_length \
                or not re.fullmatch(self.regex, value):
            raise FieldError(f"{name} must be an http:// or https:// URL "
                             f"of at most {self.max_length} characters")
        return value

    def json_schema(self) -> JsonSchema:
        return {"type": "string", "maxLength": self.max_length, "pattern": f"^{self.regex}$"}
