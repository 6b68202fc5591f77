"""JSON scan reports, versioned; the schema is docs/schema/scan-report-v1.json (also shipped in the package)."""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from enum import Enum
from typing import Any

from kaudit.formats.interface import Format
from kaudit.inventory import DeviceCode, ScanReport

SCHEMA_VERSION = "1.0"
SCHEMA_ID = "https://github.com/kaudit/kaudit/docs/schema/scan-report-v1.json"


def to_jsonable(value: Any) -> Any:
    """Dataclasses → dicts (in field order), enums → values, tuples → lists; ``None`` fields are kept."""
    if is_dataclass(value) and not isinstance(value, type):
        out = {f.name: to_jsonable(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, DeviceCode):
            out["loadable"] = value.loadable
        return out
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_jsonable(v) for v in value]
    return value


def report_document(report: ScanReport) -> dict[str, Any]:
    """The JSON document for ``report`` as plain Python objects."""
    return {
        "$schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "kaudit", "version": report.tool_version},
        "subject": report.subject,
        "stats": to_jsonable(report.stats),
        "binaries": to_jsonable(report.binaries),
        "findings": to_jsonable(report.findings),
    }


class JsonFormat(Format):
    name = "json"
    is_manifest = True

    def render(self, report: ScanReport) -> str:
        return json.dumps(report_document(report), indent=2) + "\n"
