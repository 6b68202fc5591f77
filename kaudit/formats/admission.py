"""The compact report the admission webhook reads: everything the rules judge, nothing they do not.

A full JSON report of an inference image lists every kernel of every cubin (libcublasLt alone has over 5,000
device code objects) and runs to hundreds of MB; a ConfigMap holds 1 MiB. The admission form keeps, per GPU
binary, its path, hash, layer, owning package and arch summaries — the device code objects are dropped — and the
image, runtime caches, first-use signals and scan findings whole. It is written by ``-o admission`` and stored as
``sha256-<hex>.json`` (the image's manifest digest) in the webhook's report store.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from kaudit.formats.interface import Format
from kaudit.inventory import ScanReport
from kaudit.serialize import CorruptRecord, from_jsonable, to_jsonable

if TYPE_CHECKING:
    from kaudit.policy.model import PolicyResult

FORMAT = "kaudit-admission-report"
VERSION = 1


def compact(report: ScanReport) -> ScanReport:
    """``report`` without device code objects (their summaries stay on each binary)."""
    return replace(report, binaries=tuple(replace(b, device_code=()) for b in report.binaries))


class AdmissionFormat(Format):
    name = "admission"
    is_manifest = True

    def render(self, report: ScanReport, policy: PolicyResult | None = None) -> str:
        document = {"format": FORMAT, "version": VERSION, "report": to_jsonable(compact(report))}
        return json.dumps(document, separators=(",", ":")) + "\n"


def read_admission_report(text: str | bytes) -> ScanReport:
    """The report in an admission document; raises :class:`CorruptRecord` for anything else. Only data is read:
    values are rebuilt into the inventory's dataclasses with type checks."""
    try:
        document: Any = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CorruptRecord(f"not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT or document.get("version") != VERSION:
        raise CorruptRecord(f"not a {FORMAT} version {VERSION} (write one with `kaudit scan image REF -o admission`)")
    try:
        return from_jsonable(ScanReport, document.get("report"))
    except RecursionError as exc:
        raise CorruptRecord("nested too deeply") from exc
