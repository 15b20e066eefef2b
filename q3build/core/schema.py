"""Typed YAML loading: dataclasses are the schema.

``load(cls, path)`` reads a YAML file with ``yaml.safe_load``, checks it against the annotated
fields of a frozen dataclass and returns an instance. Every problem is collected (not just the
first) and reported as ``file:line: key.path: what was expected``; unknown keys get a
"did you mean" hint. Field docs live in ``field(metadata={"doc": ...})``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from q3build.errors import RecipeError


def doc(text: str, **kw) -> Any:
    """A dataclass field with documentation (and optional default/default_factory)."""
    return dataclasses.field(metadata={"doc": text}, **kw)


def _line_index(text: str) -> dict[tuple, int]:
    """Map key paths to 1-based line numbers using PyYAML's node tree (safe composer)."""
    index: dict[tuple, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return index

    def walk(node, path):
        index.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                index[path + (k.value,)] = k.start_mark.line + 1  # a key's line, not its value's
                walk(v, path + (k.value,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    if root is not None:
        walk(root, ())
    return index


def _fmt_path(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if tp is str:
        return "string"
    if tp is bool:
        return "bool"
    if tp is int:
        return "integer"
    if tp is float:
        return "number"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"mapping of {_type_name(typing.get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return f"mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def _got(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"bool {value}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class _Loader:
    def __init__(self, file: str, lines: dict[tuple, int]):
        self.file = file
        self.lines = lines
        self.problems: list[str] = []

    def error(self, path: tuple, msg: str) -> None:
        line = self.lines.get(path)
        if line is None:  # fall back to the nearest parent with a known line
            p = path
            while p and line is None:
                p = p[:-1]
                line = self.lines.get(p)
        where = f"{self.file}:{line}" if line else self.file
        self.problems.append(f"{where}: {_fmt_path(path)}: {msg}")

    def convert(self, tp, value, path: tuple):
        origin = typing.get_origin(tp)
        if tp is Any:
            return value
        if origin in (Union, types.UnionType):
            args = typing.get_args(tp)
            if value is None and type(None) in args:
                return None
            # try each alternative silently; report once if none fits
            for alt in args:
                if alt is type(None):
                    continue
                sub = _Loader(self.file, self.lines)
                result = sub.convert(alt, value, path)
                if not sub.problems:
                    return result
            # a single non-null alternative: report its precise problems
            non_null = [a for a in args if a is not type(None)]
            if len(non_null) == 1:
                return self.convert(non_null[0], value, path)
            self.error(path, f"expected {_type_name(tp)}, got {_got(value)}")
            return None
        if origin is Literal:
            if value not in typing.get_args(tp):
                self.error(path, f"expected {_type_name(tp)}, got {_got(value)}")
            return value
        if tp is bool:
            if not isinstance(value, bool):
                self.error(path, f"expected bool, got {_got(value)}")
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.error(path, f"expected integer, got {_got(value)}")
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.error(path, f"expected number, got {_got(value)}")
                return value
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                self.error(path, f"expected string, got {_got(value)}")
            return value
        if origin is list:
            (item,) = typing.get_args(tp)
            if not isinstance(value, list):
                self.error(path, f"expected {_type_name(tp)}, got {_got(value)}")
                return []
            return tuple(self.convert(item, v, path + (i,)) for i, v in enumerate(value))
        if origin is dict:
            _, item = typing.get_args(tp)
            if not isinstance(value, dict):
                self.error(path, f"expected {_type_name(tp)}, got {_got(value)}")
                return {}
            out = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    self.error(path + (k,), f"keys must be strings, got {_got(k)}")
                    continue
                out[k] = self.convert(item, v, path + (k,))
            return types.MappingProxyType(out)
        if dataclasses.is_dataclass(tp):
            return self.dataclass(tp, value, path)
        raise TypeError(f"unsupported schema type {tp!r}")

    def dataclass(self, cls, value, path: tuple):
        if not isinstance(value, dict):
            self.error(path, f"expected {_type_name(cls)}, got {_got(value)}")
            return None
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, v in value.items():
            if key not in fields:
                close = difflib.get_close_matches(str(key), list(fields), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(fields)})"
                self.error(path + (key,), f"unknown key{hint}")
                continue
            kwargs[key] = self.convert(hints[key], v, path + (key,))
        for name, f in fields.items():
            if name in kwargs:
                continue
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.error(path + (name,), f"required key missing (expected {_type_name(hints[name])})")
        if self.problems:
            return None
        return cls(**kwargs)


def parse(cls, data, *, file: str, text: str | None = None, checks=None):
    """Validate already-loaded data against ``cls``; raise RecipeError listing every problem.

    ``checks(obj, error)`` runs after a successful type check for rules types cannot say
    (hex lengths, fields required by a ``kind``); it reports with ``error(path_tuple, msg)``.
    """
    loader = _Loader(file, _line_index(text) if text is not None else {})
    result = loader.dataclass(cls, data, ())
    if not loader.problems and checks is not None:
        checks(result, loader.error)
    if loader.problems:
        raise RecipeError(loader.problems)
    return result


def read_yaml(path: Path, *, display: str | None = None):
    """Read a YAML file with safe_load; a syntax error becomes a RecipeError with the line."""
    display = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{display}: file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{display}:{mark.line + 1}" if mark else display
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"{where}: malformed YAML: {problem}") from None
    return data, text


def load(cls, path: Path, *, display: str | None = None, checks=None):
    data, text = read_yaml(path, display=display)
    if data is None:
        data = {}
    return parse(cls, data, file=display or str(path), text=text, checks=checks)


def to_record(x):
    """A schema dataclass (recipe, pin, series entry) as JSON data: the one conversion for all of them
    (their mappings are read-only proxies, their lists tuples)."""
    if dataclasses.is_dataclass(x):
        return {f.name: to_record(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, (dict, types.MappingProxyType)):
        return {k: to_record(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_record(v) for v in x]
    return x


def check_schema_version(value: int, supported: tuple[int, int], file: str) -> None:
    lo, hi = supported
    if not lo <= value <= hi:
        raise RecipeError(f"{file}: schema: version {value} is not supported (this q3build reads {lo}..{hi})")
