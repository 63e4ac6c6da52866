"""A small YAML writer for Kubernetes objects (dicts, lists, strings, numbers, booleans).

The installer renders manifests and kubeadm configs without a YAML library:
block style, keys in the order given, multi-line strings as literal blocks,
and any string a YAML reader could take for something else (``true``, ``8471``,
``*``, ``a: b``) double-quoted. The tests read every output back with a real
YAML parser and compare it with the object it came from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_PLAIN = re.compile(r"^[A-Za-z/][A-Za-z0-9_/.:=@+-]*$")
"""Strings written unquoted: they start with a letter or ``/`` (never a number, date or sign)."""
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _RESERVED and not value.endswith(":"):
            return value
        return json.dumps(value)
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _is_block(value: Any) -> bool:
    return isinstance(value, (Mapping, list, tuple)) and len(value) > 0


def _literal_ok(value: Any) -> bool:
    """Multi-line text a literal block holds exactly; anything else is written double-quoted."""
    return (isinstance(value, str) and "\n" in value and not value.endswith("\n\n") and "\r" not in value
            and not value[0].isspace() and "\t" not in value)


def _literal(text: str, indent: int) -> list[str]:
    chomp = "" if text.endswith("\n") else "-"
    pad = " " * indent
    return [f"|{chomp}"] + [f"{pad}{line}" if line else "" for line in text.rstrip("\n").split("\n")]


def _lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = _scalar(str(key))
            if _literal_ok(item):
                head, *rest = _literal(item, indent + 2)
                out.append(f"{pad}{name}: {head}")
                out.extend(rest)
            elif _is_block(item):
                out.append(f"{pad}{name}:")
                out.extend(_lines(item, indent + 2 if isinstance(item, Mapping) else indent))
            else:
                out.append(f"{pad}{name}: {_empty(item)}")
        return out
    if isinstance(value, (list, tuple)):
        for item in value:
            if _is_block(item):
                inner = _lines(item, indent + 2)
                out.append(f"{pad}- {inner[0][indent + 2:]}")
                out.extend(inner[1:])
            elif _literal_ok(item):
                head, *rest = _literal(item, indent + 2)
                out.append(f"{pad}- {head}")
                out.extend(rest)
            else:
                out.append(f"{pad}- {_empty(item)}")
        return out
    return [pad + _scalar(value)]


def _empty(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[]"
    return _scalar(value)


def dump(value: Any) -> str:
    """One YAML document (no ``---``), ending with a newline."""
    if not _is_block(value):
        return _empty(value) + "\n"
    return "\n".join(_lines(value, 0)) + "\n"


def dump_all(documents: Iterable[Any], header: Sequence[str] = ()) -> str:
    """Several documents separated by ``---``, after ``header`` as ``#`` comment lines."""
    parts = [dump(doc) for doc in documents]
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header)
    return comment + "---\n".join(parts)
