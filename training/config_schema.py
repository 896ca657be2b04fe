"""TOML tables against config dataclasses: unknown keys (with a "did you mean"), wrong types.

`problems` walks a parsed TOML document over a root dataclass whose fields are the sections
(each a dataclass; a field whose default is a dataclass is a nested table) and returns every
problem as a line that names the key and the fix; `build` then makes the dataclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal


def sections(root: type) -> dict[str, type]:
    """section name -> its dataclass, from the root's defaults."""
    cfg = root()
    return {f.name: type(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def fields(cls: type) -> dict[str, tuple[Any, Any]]:
    """name -> (type hint, default value) of a config dataclass."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation we cannot resolve: skip type checks
        hints = {}
    default = cls()
    return {f.name: (hints.get(f.name, Any), getattr(default, f.name))
            for f in dataclasses.fields(cls)}


def problems(data: dict, root: type) -> list[str]:
    """Unknown sections and keys, tables that are not tables, values of the wrong type."""
    known = sections(root)
    out: list[str] = []
    for name, value in data.items():
        if name not in known:
            out.append(f"unknown section [{name}]: " + _suggest(name, list(known), None, known))
        elif not isinstance(value, dict):
            out.append(f"{name} must be a table ([{name}] with keys under it), got {value!r}")
        else:
            _check_table(value, known[name], name, out, known)
    return out


def _check_table(data: dict, cls: type, where: str, out: list[str],
                 known: dict[str, type]) -> None:
    table = fields(cls)
    for key, value in data.items():
        if key not in table:
            out.append(f"[{where}] unknown key {key!r}: "
                       + _suggest(key, list(table), where, known))
            continue
        hint, default = table[key]
        if dataclasses.is_dataclass(default):
            if isinstance(value, dict):
                _check_table(value, type(default), f"{where}.{key}", out, known)
            else:
                out.append(f"{where}.{key} must be a table ([{where}.{key}]), got {value!r}")
        elif not type_ok(value, hint):
            out.append(f"{where}.{key} = {value!r}: expected {_type_name(hint)}")


def _suggest(key: str, names: list[str], where: str | None, known: dict[str, type]) -> str:
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    if where is not None:
        home = [s for s, cls in known.items() if s != where and key in fields(cls)]
        if home:
            return f"it is a key of [{home[0]}], not of [{where}]"
    return f"allowed: {', '.join(sorted(names))}"


def type_ok(value: Any, hint: Any) -> bool:
    """Whether a TOML value fits a field's type hint (an int is a float, a bool is not an int).

    >>> type_ok(3, float), type_ok(True, int), type_ok(None, int | None)
    (True, False, True)
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(type_ok(value, arg) for arg in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, list)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    return "a number" if hint is float else getattr(hint, "__name__", str(hint))


def build(cls: type, data: dict):
    """``cls`` from a table whose keys `problems` accepted (nested tables built first)."""
    table = fields(cls)
    kwargs = {k: build(type(table[k][1]), v) if dataclasses.is_dataclass(table[k][1]) else v
              for k, v in data.items()}
    return cls(**kwargs)
