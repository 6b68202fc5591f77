"""JSON scan reports, versioned by docs/schema/scan-report-v1.json.

The document is written as it is serialised, one GPU binary per line, so the output of a scan with tens of
thousands of kernels is never held twice in memory; the C JSON encoder does the work.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TextIO

from kaudit.formats.interface import Format
from kaudit.inventory import GpuBinary, ScanReport
from kaudit.serialize import device_code_json, json_up_to, to_jsonable

if TYPE_CHECKING:
    from kaudit.policy.model import PolicyResult

SCHEMA_VERSION = "1.2"
SCHEMA_ID = "https://github.com/kaudit/kaudit/docs/schema/scan-report-v1.json"


def report_header(report: ScanReport) -> dict[str, Any]:
    return {
        "$schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "kaudit", "version": report.tool_version},
        "subject": report.subject,
        "stats": to_jsonable(report.stats),
        "image": to_jsonable(report.image),
    }


def _write_binary(binary: GpuBinary, stream: TextIO) -> None:
    """One binary, its kernels written object by object: a library such as libtorch_cuda holds thousands of
    device code objects and over a hundred thousand kernels, too much to hold as one JSON value."""
    stream.write(json_up_to(binary, "device_code") + "[")
    for piece in device_code_json(binary.device_code):
        stream.write(piece)
    stream.write("]}")


class JsonFormat(Format):
    name = "json"
    is_manifest = True

    def write(self, report: ScanReport, stream: TextIO, policy: PolicyResult | None = None) -> None:
        header = json.dumps(report_header(report))
        stream.write(header[:-1] + ',\n"binaries": [')
        for index, binary in enumerate(report.binaries):
            stream.write("\n" if index == 0 else ",\n")
            _write_binary(binary, stream)
        stream.write('\n],\n"findings": [')
        for index, finding in enumerate(report.findings):
            stream.write(("\n" if index == 0 else ",\n") + json.dumps(to_jsonable(finding)))
        stream.write('\n],\n"caches": ' + json.dumps(to_jsonable(report.caches)))
        stream.write(',\n"first_use": ' + json.dumps(to_jsonable(report.first_use)))
        if policy is not None:
            stream.write(',\n"policy": ' + json.dumps(policy_record(policy)))
        stream.write("}\n")

    def render(self, report: ScanReport, policy: PolicyResult | None = None) -> str:
        import io

        buffer = io.StringIO()
        self.write(report, buffer, policy)
        return buffer.getvalue()


def policy_record(policy: PolicyResult) -> dict[str, Any]:
    return {
        "name": policy.policy.name,
        "source": policy.policy.source,
        "fleet_archs": [gpu.name for gpu in policy.policy.fleet_archs],
        "rules": [rule.id for rule in policy.rules],
        "findings": [finding.record() for finding in policy.findings],
        "notes": list(policy.notes),
    }
