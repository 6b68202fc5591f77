"""Inventory dataclasses to and from plain JSON values (the JSON report, the per-layer result cache).

Only data is read back: a cached layer result is JSON, rebuilt field by field into the frozen dataclasses with
type checks, never unpickled. Anything that does not fit the types raises :class:`CorruptRecord`.
"""

from __future__ import annotations

import types
import typing
from dataclasses import fields, is_dataclass
from enum import Enum
from functools import cache
from operator import attrgetter
from typing import Any, TypeVar

from kaudit.errors import Error
from kaudit.inventory import ArchSummary, DeviceCode, Kernel, ScanFinding, ScanStats

T = TypeVar("T")

_SCALARS = (str, int, float, bool, type(None))
_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}
# Classes whose fields are all scalars or tuples of strings: serialised in one step, no recursion.
_FLAT = {cls: (names, attrgetter(*names)) for cls in (Kernel, ArchSummary, ScanFinding, ScanStats)
         for names in [tuple(f.name for f in fields(cls))]}  # fmt: skip


class CorruptRecord(Error):
    """A stored record does not match the inventory's types."""


def _field_names(cls: type) -> tuple[str, ...] | None:
    if cls not in _FIELD_NAMES:
        _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls)) if is_dataclass(cls) else None
    return _FIELD_NAMES[cls]


def to_jsonable(value: Any) -> Any:
    """Dataclasses → dicts in field order; tuples of dataclasses → lists; scalars, str enums and tuples of
    strings pass through (the JSON encoder writes them as they are)."""
    flat = _FLAT.get(type(value))
    if flat is not None:
        return dict(zip(flat[0], flat[1](value), strict=True))
    names = _field_names(type(value))
    if names is None:
        if isinstance(value, tuple | list) and value and not isinstance(value[0], _SCALARS):
            return [to_jsonable(item) for item in value]
        if isinstance(value, dict):
            return {key: to_jsonable(item) for key, item in value.items()}
        return value
    out = {}
    for name in names:
        item = getattr(value, name)
        out[name] = item if isinstance(item, _SCALARS) else to_jsonable(item)
    if isinstance(value, DeviceCode):
        out["loadable"] = value.loadable
    return out


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_jsonable(cls: type[T], value: Any) -> T:
    """Rebuild an instance of ``cls`` (a dataclass, enum, tuple, dict or scalar type) from JSON values."""
    return typing.cast(T, _build(cls, value, cls.__name__))


def _build(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _build(option, value, where)
            except CorruptRecord as exc:
                errors.append(str(exc))
        raise CorruptRecord(f"{where}: {value!r:.80} fits none of {tp}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list):
            raise CorruptRecord(f"{where}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], item, f"{where}[]") for item in value)
        if len(args) != len(value):
            raise CorruptRecord(f"{where}: expected {len(args)} items")
        return tuple(_build(arg, item, f"{where}[]") for arg, item in zip(args, value, strict=True))
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if not isinstance(value, dict):
            raise CorruptRecord(f"{where}: expected an object")
        return {_build(key_type, k, where): _build(value_type, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and is_dataclass(tp):
        if not isinstance(value, dict):
            raise CorruptRecord(f"{where}: expected an object for {tp.__name__}")
        hints = _hints(tp)
        kwargs = {}
        for f in fields(tp):
            if f.name in value:
                kwargs[f.name] = _build(hints[f.name], value[f.name], f"{where}.{f.name}")
        try:
            return tp(**kwargs)
        except TypeError as exc:
            raise CorruptRecord(f"{where}: {exc}") from exc
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError as exc:
            raise CorruptRecord(f"{where}: {value!r} is not a {tp.__name__}") from exc
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp in (str, int, bool) and type(value) is tp:
        return value
    if tp is Any:
        return value
    raise CorruptRecord(f"{where}: {value!r:.80} is not a {getattr(tp, '__name__', tp)}")
