"""Declarative key tables: how a YAML mapping becomes a typed, frozen config dataclass.

Each config class lists its YAML keys once, as dataclass fields made with :func:`key`
(YAML name, converter, default). One walker (:func:`parse_node`) then does what Jackson
does for linkerd: rejects unknown keys, reports missing required ones, converts and
range-checks each value, and calls the class's own cross-field check. Polymorphic
sections (``kind:`` / ``protocol:``) dispatch through a :class:`KindFamily`.

The same tables drive :meth:`ConfigNode.to_json`, which re-serialises only the keys the
file set (plus ``kind``), the shape of linkerd's ``/config.json``.

Converters take ``(value, path, ctx)`` and return the typed value or raise
:class:`ConfigError` naming ``path``. ``None`` (YAML ``null`` or an empty value) counts as
absent, as Jackson treats a null ``Option``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, TypeVar

from .errors import ConfigError, join_path

__all__ = [
    "ParseContext", "ConfigNode", "KindFamily", "Converter", "key", "parse_node",
    "as_str", "as_bool", "as_int", "as_float", "as_port", "as_ip", "as_regex", "as_path",
    "list_of", "node_of", "one_or_list", "describe", "to_json_value", "key_name",
]

Converter = Callable[[Any, str, "ParseContext"], Any]
N = TypeVar("N", bound="ConfigNode")


@dataclass
class ParseContext:
    """State shared by one load: warnings to show the operator (never errors)."""

    warnings: list[str] = field(default_factory=list)

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{path}: {message}" if path else message)


def key(yaml_key: str, conv: Converter, default: Any = dataclasses.MISSING, *,
        default_factory: Any = dataclasses.MISSING, required: bool = False,
        always_emit: bool = False) -> Any:
    """A dataclass field read from YAML key ``yaml_key`` through ``conv``.

    ``required`` fields have no default. ``always_emit`` fields appear in ``to_json`` even
    when the file left them out (``kind``, and the router's ``client``).
    """
    metadata = {"yaml_key": yaml_key, "conv": conv, "required": required,
                "always_emit": always_emit}
    if required:
        return field(metadata=metadata)
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, kw_only=True)
class ConfigNode:
    """Base of every config dataclass: remembers which YAML keys the file set."""

    # Keys present in the file (the rest took their default). Not part of equality.
    explicit_keys: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    @classmethod
    def complete(cls, values: dict[str, Any], path: str, ctx: ParseContext) -> None:
        """Fill defaults that need parsing (paths, dtabs) into ``values`` (field names)."""

    def check(self, path: str, ctx: ParseContext) -> None:
        """Cross-field validation after construction; raise ConfigError naming the key."""

    def is_set(self, yaml_key: str) -> bool:
        """True when the file gave ``yaml_key`` explicitly."""
        return yaml_key in self.explicit_keys

    def to_json(self) -> dict[str, Any]:
        """This object as linkerd's ``/config.json`` shows it: set keys only, plus ``kind``."""
        out: dict[str, Any] = {}
        for f in schema_fields(type(self)):
            yk = f.metadata["yaml_key"]
            if yk in self.explicit_keys or f.metadata["always_emit"]:
                out[yk] = to_json_value(getattr(self, f.name))
        return out


def schema_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "yaml_key" in f.metadata]


def to_json_value(value: Any) -> Any:
    """A config value as JSON data: nodes recurse, tuples become lists, names are shown."""
    if isinstance(value, ConfigNode):
        return value.to_json()
    if isinstance(value, (tuple, list)):
        return [to_json_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json()
    return str(value)  # Path, Dtab, PathMatcher: their shown (canonical) text


def describe(value: Any) -> str:
    """How a wrong value is quoted in an error: ``'abc'``, ``1.5``, ``a list``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def key_name(path: str) -> str:
    """The last key of a YAML path (``routers[0].servers[1].port`` → ``port``)."""
    last = path.rsplit(".", 1)[-1]
    return last.split("[", 1)[0] or last


def expect_mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(path, f"expected a mapping, got {describe(value)}")
    return value


def parse_node(cls: type[N], value: Any, path: str, ctx: ParseContext,
               *, extra_keys: Iterable[str] = ()) -> N:
    """Build ``cls`` from the mapping ``value`` at ``path`` (keys in ``extra_keys`` are
    allowed but left to the caller)."""
    mapping = expect_mapping(value, path)
    fields_by_key = {f.metadata["yaml_key"]: f for f in schema_fields(cls)}
    allowed = set(extra_keys)
    values: dict[str, Any] = {}
    explicit: set[str] = set()
    for yk, raw in mapping.items():  # document order, like a streaming parser
        f = fields_by_key.get(yk)
        if f is None:
            if yk in allowed:
                continue
            known = ", ".join([*fields_by_key, *sorted(set(extra_keys) - set(fields_by_key))])
            raise ConfigError(join_path(path, yk), f"unknown key '{yk}' (known: {known})")
        if raw is None:
            continue
        values[f.name] = f.metadata["conv"](raw, join_path(path, yk), ctx)
        explicit.add(yk)
    for yk, f in fields_by_key.items():
        if f.metadata["required"] and f.name not in values:
            raise ConfigError(join_path(path, yk), f"missing required key '{yk}'")
    cls.complete(values, path, ctx)
    obj = cls(explicit_keys=frozenset(explicit), **values)
    obj.check(path, ctx)
    return obj


# --- polymorphic sections -------------------------------------------------------------


@dataclass(frozen=True)
class KindFamily:
    """The implementations a polymorphic section can name.

    ``classes`` maps a kind to its config class. ``unsupported`` holds kinds linkerd has
    but fastmesh does not, which get a "not supported" error instead of "unknown".
    ``experimental`` kinds need ``experimental: true`` beside them, as in linkerd.
    """

    noun: str  # "namer kind", "protocol", ...
    classes: Mapping[str, type[ConfigNode]]
    unsupported: frozenset[str] = frozenset()
    experimental: frozenset[str] = frozenset()
    tag: str = "kind"
    default: str | None = None

    def __call__(self, value: Any, path: str, ctx: ParseContext) -> ConfigNode:
        mapping = expect_mapping(value, path)
        kind_path = join_path(path, self.tag)
        kind = mapping.get(self.tag)
        if kind is None:
            if self.default is None:
                raise ConfigError(kind_path, f"missing required key '{self.tag}'")
            kind = self.default
        if not isinstance(kind, str):
            raise ConfigError(kind_path, f"expected a string, got {describe(kind)}")
        cls = self.classes.get(kind)
        if cls is None:
            if kind in self.unsupported:
                raise ConfigError(kind_path, f"{self.noun} '{kind}' is not supported by fastmesh "
                                             f"(supported: {', '.join(sorted(self.classes))})")
            raise ConfigError(kind_path, f"unknown {self.noun} '{kind}' "
                                         f"(known: {', '.join(sorted(self.classes))})")
        obj = parse_node(cls, mapping, path, ctx)
        if kind in self.experimental and not getattr(obj, "experimental", False):
            raise ConfigError(kind_path, f"{self.noun} '{kind}' is experimental and must be "
                                         "explicitly enabled with 'experimental: true'")
        return obj


# --- scalar converters ----------------------------------------------------------------

_INT_RE = re.compile(r"[+-]?[0-9]+")


def as_str(value: Any, path: str, ctx: ParseContext) -> str:
    # Jackson coerces numbers to strings for String fields (`port: 4141` for a port name).
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(path, f"expected a string, got {describe(value)}")


def as_bool(value: Any, path: str, ctx: ParseContext) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(path, f"expected a boolean (true or false), got {describe(value)}")


def _to_int(value: Any, path: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(path, f"expected an integer, got {describe(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
        return int(value.strip())  # Jackson coerces "4140" to 4140
    raise ConfigError(path, f"expected an integer, got {describe(value)}")


def as_int(min_value: int | None = None, max_value: int | None = None) -> Converter:
    """An integer converter with an optional inclusive range."""

    def convert(value: Any, path: str, ctx: ParseContext) -> int:
        number = _to_int(value, path)
        name = key_name(path)
        if min_value is not None and max_value is not None:
            if not min_value <= number <= max_value:
                raise ConfigError(path, f"{name} must be {min_value}..{max_value}, got {number}")
        elif min_value is not None and number < min_value:
            raise ConfigError(path, f"{name} must be at least {min_value}, got {number}")
        elif max_value is not None and number > max_value:
            raise ConfigError(path, f"{name} must be at most {max_value}, got {number}")
        return number

    return convert


as_port = as_int(0, 65535)


def as_float(min_value: float | None = None, max_value: float | None = None, *,
             message: str | None = None) -> Converter:
    """A number converter with an optional inclusive range and linkerd's error text."""

    def convert(value: Any, path: str, ctx: ParseContext) -> float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if number is None or not math.isfinite(number):
            raise ConfigError(path, f"expected a number, got {describe(value)}")
        too_low = min_value is not None and number < min_value
        too_high = max_value is not None and number > max_value
        if too_low or too_high:
            raise ConfigError(path, message or
                              f"{key_name(path)} must be between {min_value} and {max_value}, "
                              f"got {number}")
        return number

    return convert


_HOSTNAME_RE = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})"
                          r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?")


def as_ip(value: Any, path: str, ctx: ParseContext) -> str:
    """A bind address: an IPv4/IPv6 literal or a host name, kept as written.

    Host names are not resolved here (a config check must not need DNS); the server
    resolves them when it binds, as Java's InetAddress would at parse time.
    """
    text = as_str(value, path, ctx).strip()
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    if _HOSTNAME_RE.fullmatch(text):
        return text
    raise ConfigError(path, f"expected an IP address or host name, got {describe(value)}")


def as_regex(value: Any, path: str, ctx: ParseContext) -> str:
    text = as_str(value, path, ctx)
    try:
        re.compile(text)
    except re.error as exc:
        raise ConfigError(path, f"invalid regular expression {text!r}: {exc}") from exc
    return text


def as_path(value: Any, path: str, ctx: ParseContext) -> Any:
    """A finagle path (``/svc``), parsed with :meth:`fastmesh.naming.Path.read`."""
    from fastmesh.naming import ParseError, Path  # lazy: naming is a sibling package

    text = as_str(value, path, ctx)
    try:
        return Path.read(text)
    except ParseError as exc:
        raise ConfigError(path, f"invalid path: {exc}") from exc


# --- structure converters -------------------------------------------------------------


def list_of(conv: Converter, *, min_items: int = 0) -> Converter:
    def convert(value: Any, path: str, ctx: ParseContext) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {describe(value)}")
        if len(value) < min_items:
            raise ConfigError(path, f"{key_name(path)} must have at least {min_items} "
                                    f"item{'s' if min_items != 1 else ''}")
        items = []
        for index, item in enumerate(value):
            item_path = join_path(path, index)
            if item is None:
                raise ConfigError(item_path, "expected a value, got null")
            items.append(conv(item, item_path, ctx))
        return tuple(items)

    return convert


def one_or_list(conv: Converter) -> Converter:
    """One item or a list of them (linkerd's ``identifier``), always a tuple."""
    many = list_of(conv, min_items=1)

    def convert(value: Any, path: str, ctx: ParseContext) -> tuple[Any, ...]:
        if isinstance(value, list):
            return many(value, path, ctx)
        return (conv(value, path, ctx),)

    return convert


def node_of(cls: type[N]) -> Converter:
    def convert(value: Any, path: str, ctx: ParseContext) -> N:
        return parse_node(cls, value, path, ctx)

    return convert
