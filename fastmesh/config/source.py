"""Config text → plain Python data (dicts, lists, scalars), strict like linkerd's parser.

linkerd reads its config with Jackson: JSON when the first non-space character is ``{``,
YAML otherwise, and a key given twice in one mapping is an error
(``STRICT_DUPLICATE_DETECTION``). Mapping keys are field names, never typed values, so a
YAML key ``on`` or ``1`` stays the string it was written as, and YAML merge keys (``<<``)
are just an unknown field. Environment variables are *not* expanded: ``$POD_IP`` in a
config value is those six characters.

Duplicates are recorded on the mapping they occur in (``StrictDict.duplicates``) and
reported by :func:`check_duplicates` with the full YAML path of the repeated key, which the
parsers themselves cannot know.
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any, Iterator

import yaml

from .errors import ConfigError, join_path

__all__ = ["StrictDict", "read_source", "parse_text", "check_duplicates", "MAX_DEPTH"]

# Config documents are a handful of levels deep; anything deeper is a mistake or an attack
# (e.g. a recursive YAML alias), and the walkers below are bounded by this.
MAX_DEPTH = 64


class StrictDict(dict):
    """A mapping from the config text, remembering keys that were written more than once."""

    __slots__ = ("duplicates",)

    def __init__(self) -> None:
        super().__init__()
        # (key, 1-based line or None) for every repeated key, in document order.
        self.duplicates: list[tuple[str, int | None]] = []


class _StrictYamlLoader(yaml.SafeLoader):
    """SafeLoader whose mappings keep field names as written and record duplicate keys."""

    def construct_strict_mapping(self, node: yaml.MappingNode) -> Iterator[StrictDict]:
        mapping = StrictDict()
        yield mapping  # yield first, so recursive aliases resolve like SafeLoader's own maps
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    "found a non-scalar key (keys must be field names)", key_node.start_mark)
            key = key_node.value
            if key in mapping:
                mapping.duplicates.append((key, key_node.start_mark.line + 1))
            mapping[key] = self.construct_object(value_node, deep=True)


_StrictYamlLoader.add_constructor("tag:yaml.org,2002:map", _StrictYamlLoader.construct_strict_mapping)


def _strict_json_object(pairs: list[tuple[str, Any]]) -> StrictDict:
    mapping = StrictDict()
    for key, value in pairs:
        if key in mapping:
            mapping.duplicates.append((key, None))
        mapping[key] = value
    return mapping


def read_source(source: str | os.PathLike[str], text: str | None = None) -> tuple[str, str]:
    """Return ``(name, text)`` for a config: ``-`` is stdin, anything else a file path.

    ``text``, when given, is used as is and ``source`` only names it in messages.
    """
    name = os.fspath(source)
    if text is not None:
        return name, text
    if name == "-":
        return "<stdin>", sys.stdin.read()
    try:
        with open(name, encoding="utf-8-sig") as f:  # a BOM is not part of the document
            return name, f.read()
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {name!r}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"config file {name!r} is not UTF-8 text: {exc}") from exc


def parse_text(text: str, name: str = "<text>") -> Any:
    """Parse config text as JSON (first non-space char ``{``) or YAML, keys kept strict.

    ``name`` (the file) appears in YAML syntax errors beside the line and column.
    """
    if text.lstrip()[:1] == "{":
        try:
            return json.loads(text, object_pairs_hook=_strict_json_object)
        except json.JSONDecodeError as exc:
            raise ConfigError("", f"invalid JSON: {exc}") from exc
    try:
        stream = io.StringIO(text)
        stream.name = name  # PyYAML quotes the stream's name in its error marks
        return yaml.load(stream, Loader=_StrictYamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError("", f"invalid YAML: {' '.join(str(exc).split())}") from exc
    except RecursionError as exc:
        raise ConfigError("", "invalid YAML: the document nests too deeply") from exc


def check_duplicates(data: Any, path: str = "", depth: int = 0) -> None:
    """Raise ConfigError for the first key written twice anywhere in ``data``."""
    if depth > MAX_DEPTH:
        raise ConfigError(path, f"the document nests more than {MAX_DEPTH} levels deep")
    if isinstance(data, dict):
        for key, line in getattr(data, "duplicates", ()):
            where = f" (line {line})" if line is not None else ""
            raise ConfigError(join_path(path, key), f"duplicate key '{key}'{where}")
        for key, value in data.items():
            check_duplicates(value, join_path(path, key), depth + 1)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            check_duplicates(value, join_path(path, index), depth + 1)
