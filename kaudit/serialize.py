"""Inventory dataclasses to and from plain JSON values (the JSON report, the per-layer result cache).

Only data is read back: a cached layer result is JSON, rebuilt field by field into the frozen dataclasses with
type checks, never unpickled. Anything that does not fit the types raises :class:`CorruptRecord`.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable
from contextvars import ContextVar
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


class StringTable:
    """Kernel names stored once, referred to by index: a large library repeats each kernel in every arch's
    object, and demangled C++ template names run to kilobytes."""

    def __init__(self, strings: list[str] | None = None) -> None:
        self.strings: list[str] = strings if strings is not None else []
        self._index = {text: i for i, text in enumerate(self.strings)}

    def ref(self, text: str | None) -> int:
        if text is None:
            return -1
        index = self._index.get(text)
        if index is None:
            index = self._index[text] = len(self.strings)
            self.strings.append(text)
        return index

    def get(self, index: Any, where: str) -> str | None:
        if index == -1:
            return None
        if type(index) is not int or not 0 <= index < len(self.strings):
            raise CorruptRecord(f"{where}: string reference {index!r:.20} is outside the table")
        return self.strings[index]


_ACTIVE_TABLE: ContextVar[StringTable | None] = ContextVar("kaudit_string_table", default=None)


def to_jsonable(value: Any, compact: StringTable | None = None) -> Any:
    """Dataclasses → dicts in field order; tuples of dataclasses → lists; scalars, str enums and tuples of
    strings pass through (the JSON encoder writes them as they are).

    ``compact`` (the layer cache's form) writes kernels as positional lists whose names refer to a string
    table: an image of several GB has hundreds of thousands of kernels."""
    flat = _FLAT.get(type(value))
    if flat is not None:
        if compact is not None and type(value) is Kernel:
            name, demangled, *rest = flat[1](value)
            return [compact.ref(name), compact.ref(demangled), *rest]
        return dict(zip(flat[0], flat[1](value), strict=True))
    names = _field_names(type(value))
    if names is None:
        if isinstance(value, tuple | list) and value and not isinstance(value[0], _SCALARS):
            return [to_jsonable(item, compact) for item in value]
        if isinstance(value, dict):
            return {key: to_jsonable(item, compact) for key, item in value.items()}
        return value
    out = {}
    for name in names:
        item = getattr(value, name)
        out[name] = item if isinstance(item, _SCALARS) else to_jsonable(item, compact)
    if isinstance(value, DeviceCode) and compact is None:
        out["loadable"] = value.loadable
    return out


def json_up_to(value: Any, last: str, compact: StringTable | None = None) -> str:
    """``value`` as JSON text that stops where field ``last`` begins (``{..., "last": ``), so the caller can
    stream that field's items: a library can hold thousands of objects and a hundred thousand kernels."""
    head = {f.name: to_jsonable(getattr(value, f.name), compact) for f in fields(value) if f.name != last}
    return json.dumps(head, separators=(",", ":"))[:-1] + f',"{last}":'


Decoder = Callable[[Any, str], Any]


def from_jsonable(cls: type[T], value: Any, strings: StringTable | None = None) -> T:
    """Rebuild an instance of ``cls`` (a dataclass, enum, tuple, dict or scalar type) from JSON values;
    ``strings`` resolves the name references of compact kernels."""
    decode = _decoder(typing.cast(Any, cls))
    token = _ACTIVE_TABLE.set(strings)
    try:
        return typing.cast(T, decode(value, cls.__name__))
    finally:
        _ACTIVE_TABLE.reset(token)


@cache
def _decoder(tp: Any) -> Decoder:
    """A decoder for one type, built once: the cache of a large layer holds tens of thousands of kernels."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(tp) if o is not type(None)]
        nullable = len(options) < len(typing.get_args(tp))
        if len(options) == 1 and options[0] in (str, int, bool):
            scalar = options[0]

            def optional_scalar(value: Any, where: str) -> Any:
                if (value is None and nullable) or type(value) is scalar:
                    return value
                raise CorruptRecord(f"{where}: {value!r:.80} is not {scalar.__name__} or null")

            return optional_scalar
        decoders = [_decoder(o) for o in options]

        def union(value: Any, where: str) -> Any:
            if value is None and nullable:
                return None
            for decode in decoders:
                try:
                    return decode(value, where)
                except CorruptRecord:
                    continue
            raise CorruptRecord(f"{where}: {value!r:.80} fits none of {tp}")

        return union
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _decoder(args[0])

            def variadic(value: Any, where: str) -> Any:
                if not isinstance(value, list):
                    raise CorruptRecord(f"{where}: expected a list")
                return tuple([item(v, where) for v in value])

            return variadic
        items = [_decoder(a) for a in args]

        def fixed(value: Any, where: str) -> Any:
            if not isinstance(value, list) or len(value) != len(items):
                raise CorruptRecord(f"{where}: expected {len(items)} items")
            return tuple(decode(v, where) for decode, v in zip(items, value, strict=True))

        return fixed
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        decode_key, decode_value = _decoder(key_type), _decoder(value_type)

        def mapping(value: Any, where: str) -> Any:
            if not isinstance(value, dict):
                raise CorruptRecord(f"{where}: expected an object")
            return {decode_key(k, where): decode_value(v, where) for k, v in value.items()}

        return mapping
    if isinstance(tp, type) and is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        plan = [(f.name, _decoder(hints[f.name])) for f in fields(tp)]
        cls = tp

        def instance(value: Any, where: str) -> Any:
            if isinstance(value, list) and cls is Kernel and len(value) == len(plan):
                table = _ACTIVE_TABLE.get()
                if table is None:
                    raise CorruptRecord(f"{where}: a compact kernel without a string table")
                name = table.get(value[0], where)
                if name is None:
                    raise CorruptRecord(f"{where}: a kernel without a name")
                rest = value[2:]
                # every other kernel field is an optional count: one check instead of a decoder per field
                if not all(v is None or type(v) is int for v in rest):
                    raise CorruptRecord(f"{where}: kernel fields {rest!r:.80} are not counts")
                return cls(name, table.get(value[1], where), *rest)
            if not isinstance(value, dict):
                raise CorruptRecord(f"{where}: expected an object for {cls.__name__}")
            kwargs = {name: decode(value[name], where) for name, decode in plan if name in value}
            try:
                return cls(**kwargs)
            except TypeError as exc:
                raise CorruptRecord(f"{where}: {exc}") from exc

        return instance
    if isinstance(tp, type) and issubclass(tp, Enum):
        enum = tp

        def member(value: Any, where: str) -> Any:
            try:
                return enum(value)
            except ValueError as exc:
                raise CorruptRecord(f"{where}: {value!r} is not a {enum.__name__}") from exc

        return member
    if tp is float:
        return lambda value, where: float(_checked(value, (int, float), where))
    if tp in (str, int, bool):
        expected = tp

        def scalar(value: Any, where: str) -> Any:
            if type(value) is not expected:
                raise CorruptRecord(f"{where}: {value!r:.80} is not a {expected.__name__}")
            return value

        return scalar
    if tp is Any:
        return lambda value, where: value
    raise TypeError(f"no decoder for {tp!r}")


def _checked(value: Any, kinds: tuple[type, ...], where: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise CorruptRecord(f"{where}: {value!r:.80} is not a number")
    return value
