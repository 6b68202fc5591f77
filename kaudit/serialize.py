"""Inventory dataclasses to and from plain JSON values (the JSON report, the per-layer result cache).

Only data is read back: a cached layer result is JSON (its kernels packed in a blob beside it), rebuilt
field by field into the frozen dataclasses with type checks, never unpickled. Anything that does not fit the
types raises :class:`CorruptRecord`.
"""

from __future__ import annotations

import collections.abc
import json
import math
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import fields, is_dataclass
from enum import Enum
from functools import cache
from operator import attrgetter
from typing import Any, TypeVar

from kaudit.errors import Error
from kaudit.inventory import ArchSummary, DeviceCode, Kernel, PackedKernels, ScanFinding, ScanStats

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


class KernelBlob:
    """The layer cache's store for packed kernels: their compressed bytes side by side, referred to from the
    JSON record by ``[offset, length, count]`` so that reading a layer back never decodes a kernel."""

    def __init__(self, data: bytes = b"") -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.data = data

    def add(self, kernels: Sequence[Kernel]) -> list[int]:
        packed = kernels if isinstance(kernels, PackedKernels) else PackedKernels.of(kernels)
        if not isinstance(packed, PackedKernels):
            return [0, 0, 0]
        reference = [self.size, len(packed.packed), packed.kernel_count]
        self.parts.append(packed.packed)
        self.size += len(packed.packed)
        return reference

    def get(self, reference: Any, where: str) -> Sequence[Kernel]:
        if (
            not isinstance(reference, list)
            or len(reference) != 3
            or not all(type(v) is int and v >= 0 for v in reference)
            or reference[0] + reference[1] > len(self.data)
        ):
            raise CorruptRecord(f"{where}: kernel reference {reference!r:.40} is outside the blob")
        offset, length, count = reference
        return PackedKernels(self.data[offset : offset + length], count) if count else ()


_ACTIVE_BLOB: ContextVar[KernelBlob | None] = ContextVar("kaudit_kernel_blob", default=None)
_DEVICE_CODE_FIELDS = tuple(f.name for f in fields(DeviceCode))
_KERNELS_AT = _DEVICE_CODE_FIELDS.index("kernels")
_device_code_values = attrgetter(*_DEVICE_CODE_FIELDS)


def to_jsonable(value: Any, blob: KernelBlob | None = None) -> Any:
    """Dataclasses → dicts in field order; tuples of dataclasses → lists; scalars, str enums and tuples of
    strings pass through (the JSON encoder writes them as they are).

    With ``blob`` (the layer cache's form), a device code object's kernels go into the blob and the record
    holds their reference."""
    flat = _FLAT.get(type(value))
    if flat is not None:
        return dict(zip(flat[0], flat[1](value), strict=True))
    names = _field_names(type(value))
    if names is None:
        if isinstance(value, PackedKernels):
            return [to_jsonable(kernel) for kernel in value]
        if isinstance(value, tuple | list) and value and not isinstance(value[0], _SCALARS):
            return [to_jsonable(item, blob) for item in value]
        if isinstance(value, dict):
            return {key: to_jsonable(item, blob) for key, item in value.items()}
        return value
    if blob is not None and type(value) is DeviceCode:
        # the layer cache's row: fields in order, kernels as their blob reference
        row = list(_device_code_values(value))
        row[_KERNELS_AT] = blob.add(value.kernels)
        return row
    out: dict[str, Any] = {}
    for name in names:
        item = getattr(value, name)
        out[name] = item if isinstance(item, _SCALARS) else to_jsonable(item, blob)
    if isinstance(value, DeviceCode) and blob is None:
        out["loadable"] = value.loadable
    return out


_KERNELS_SLOT = '"kernels": NaN'
"""Where a device code object's kernels go in its encoded JSON. No field of :class:`DeviceCode` is a float, and
inside an encoded string the quotes around ``kernels`` would be escaped, so the text occurs nowhere else."""


def device_code_json(codes: Sequence[DeviceCode]) -> Iterator[str]:
    """The report's JSON text for ``codes``, as pieces to write in order, comma-separated; packed kernels are
    spliced in as text, never decoded. The other fields of all of ``codes`` are encoded in one call: a library can
    hold thousands of objects, and one encoder call per object was a third of a warm rescan's report."""
    rows = []
    for code in codes:
        row = dict(zip(_DEVICE_CODE_FIELDS, _device_code_values(code), strict=True))
        row["kernels"] = math.nan
        row["loadable"] = code.loadable
        rows.append(row)
    pieces = json.dumps(rows)[1:-1].split(_KERNELS_SLOT)
    if len(pieces) != len(codes) + 1:
        raise AssertionError("a device code field encoded as NaN")  # the slot marker is no longer unique
    for code, piece in zip(codes, pieces, strict=False):
        kernels = code.kernels
        yield piece
        yield '"kernels": ' + (
            kernels.json_text() if isinstance(kernels, PackedKernels) else json.dumps(to_jsonable(kernels) or [])
        )
    yield pieces[-1]


def json_up_to(value: Any, last: str, blob: KernelBlob | None = None) -> str:
    """``value`` as JSON text that stops where field ``last`` begins (``{..., "last": ``), so the caller can
    stream that field's items: a library can hold thousands of objects and a hundred thousand kernels."""
    head = {f.name: to_jsonable(getattr(value, f.name), blob) for f in fields(value) if f.name != last}
    return json.dumps(head, separators=(",", ":"))[:-1] + f',"{last}":'


Decoder = Callable[[Any, str], Any]


def from_jsonable(cls: type[T], value: Any, blob: KernelBlob | None = None) -> T:
    """Rebuild an instance of ``cls`` (a dataclass, enum, tuple, dict or scalar type) from JSON values;
    ``blob`` resolves the kernel references of the layer cache's form."""
    decode = _decoder(typing.cast(Any, cls))
    token = _ACTIVE_BLOB.set(blob)
    try:
        return typing.cast(T, decode(value, cls.__name__))
    finally:
        _ACTIVE_BLOB.reset(token)


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
    if origin is collections.abc.Sequence and typing.get_args(tp) == (Kernel,):

        def kernel_reference(value: Any, where: str) -> Any:
            blob = _ACTIVE_BLOB.get()
            if blob is None:
                raise CorruptRecord(f"{where}: a kernel reference without a kernel blob")
            return blob.get(value, where)

        return kernel_reference
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

        row = _row_decoder(cls, hints) if cls is DeviceCode else None

        def instance(value: Any, where: str) -> Any:
            if row is not None and type(value) is list:
                return row(value, where)
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


def _row_decoder(cls: type, hints: dict[str, Any]) -> Decoder:
    """A decoder of the positional row the layer cache stores for ``cls`` (a library has thousands of device code
    objects): one type test per field where the field is a scalar, a str enum or a tuple of strings."""
    checks: list[tuple[str, Any]] = []
    for f in fields(cls):
        tp = hints[f.name]
        options = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
        if all(o in (str, int, bool, type(None)) for o in options):
            checks.append(("types", frozenset(options)))
        elif isinstance(tp, type) and issubclass(tp, Enum):
            checks.append(("enum", {member.value: member for member in tp}))
        elif tp == tuple[str, ...]:
            checks.append(("strings", None))
        else:
            checks.append(("decode", _decoder(tp)))
    width = len(checks)

    def row(value: list[Any], where: str) -> Any:
        if len(value) != width:
            raise CorruptRecord(f"{where}: expected {width} fields for {cls.__name__}")
        args = []
        for item, (kind, spec) in zip(value, checks, strict=True):
            if kind == "types":
                if type(item) not in spec:
                    raise CorruptRecord(f"{where}: {item!r:.80} is not a {cls.__name__} field value")
            elif kind == "enum":
                item = spec.get(item) if type(item) is str else None
                if item is None:
                    raise CorruptRecord(f"{where}: {value!r:.80} holds an unknown {cls.__name__} value")
            elif kind == "strings":
                if type(item) is not list or not all(type(text) is str for text in item):
                    raise CorruptRecord(f"{where}: {item!r:.80} is not a list of strings")
                item = tuple(item)
            else:
                item = spec(item, where)
            args.append(item)
        return cls(*args)

    return row


def _checked(value: Any, kinds: tuple[type, ...], where: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise CorruptRecord(f"{where}: {value!r:.80} is not a number")
    return value
