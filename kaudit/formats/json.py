"""JSON scan reports, versioned by docs/schema/scan-report-v1.json.

The document is written as it is serialised, one GPU binary per line, so the output of a scan with tens of
thousands of kernels is never held twice in memory; the C JSON encoder does the work.
"""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from operator import attrgetter
from typing import Any, TextIO

from kaudit.formats.interface import Format
from kaudit.inventory import ArchSummary, DeviceCode, Kernel, ScanFinding, ScanReport, ScanStats

SCHEMA_VERSION = "1.0"
SCHEMA_ID = "https://github.com/kaudit/kaudit/docs/schema/scan-report-v1.json"

_SCALARS = (str, int, float, bool, type(None))
_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}
# Classes whose fields are all scalars or tuples of strings: serialised in one step, no recursion.
_FLAT = {cls: (names, attrgetter(*names)) for cls in (Kernel, ArchSummary, ScanFinding, ScanStats)
         for names in [tuple(f.name for f in fields(cls))]}  # fmt: skip


def _field_names(cls: type) -> tuple[str, ...] | None:
    if cls not in _FIELD_NAMES:
        _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls)) if is_dataclass(cls) else None
    return _FIELD_NAMES[cls]


def to_jsonable(value: Any) -> Any:
    """Dataclasses → dicts in field order; tuples of dataclasses → lists; scalars, str enums and tuples of
    strings pass through (the encoder writes them as they are)."""
    flat = _FLAT.get(type(value))
    if flat is not None:
        return dict(zip(flat[0], flat[1](value), strict=True))
    names = _field_names(type(value))
    if names is None:
        if isinstance(value, tuple | list) and value and not isinstance(value[0], _SCALARS):
            return [to_jsonable(item) for item in value]
        return value
    out = {}
    for name in names:
        item = getattr(value, name)
        out[name] = item if isinstance(item, _SCALARS) else to_jsonable(item)
    if isinstance(value, DeviceCode):
        out["loadable"] = value.loadable
    return out


def report_header(report: ScanReport) -> dict[str, Any]:
    return {
        "$schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "kaudit", "version": report.tool_version},
        "subject": report.subject,
        "stats": to_jsonable(report.stats),
    }


class JsonFormat(Format):
    name = "json"
    is_manifest = True

    def write(self, report: ScanReport, stream: TextIO) -> None:
        header = json.dumps(report_header(report))
        stream.write(header[:-1] + ',\n"binaries": [')
        for index, binary in enumerate(report.binaries):
            stream.write(("\n" if index == 0 else ",\n") + json.dumps(to_jsonable(binary)))
        stream.write('\n],\n"findings": [')
        for index, finding in enumerate(report.findings):
            stream.write(("\n" if index == 0 else ",\n") + json.dumps(to_jsonable(finding)))
        stream.write("\n]}\n")

    def render(self, report: ScanReport) -> str:
        import io

        buffer = io.StringIO()
        self.write(report, buffer)
        return buffer.getvalue()
