"""SARIF 2.1.0 for GitHub code scanning and other SARIF consumers: one result per policy finding.

Conventions follow Grype's presenter (sbom-and-scanning.md §4): ``security-severity`` on each rule, ``level`` from
the severity, a location URI of ``<image>/<path>`` (image paths are not repository files, so kaudit supplies its
own ``partialFingerprints``), ``image@layer:/path`` as the logical location. Exempted findings carry a
``suppressions`` entry with the exemption's reason; warn- and audit-mode findings are lowered to ``warning`` and
``note``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kaudit import __version__
from kaudit.formats.interface import Format
from kaudit.inventory import ScanReport
from kaudit.policy.model import Mode, PolicyFinding, PolicyResult, Severity

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/kaudit/kaudit"
SECURITY_SEVERITY = {Severity.CRITICAL: "9.5", Severity.HIGH: "7.5", Severity.MEDIUM: "5.0", Severity.LOW: "2.0",
                     Severity.INFO: "0.0"}  # fmt: skip
LEVEL = {Severity.CRITICAL: "error", Severity.HIGH: "error", Severity.MEDIUM: "warning", Severity.LOW: "note",
         Severity.INFO: "note"}  # fmt: skip


def _subject_name(report: ScanReport) -> str:
    """A short, path-safe name for the scanned subject (``vllm`` for ``registry/org/vllm:tag@sha256:…``)."""
    reference = report.image.reference if report.image is not None else report.subject
    name = reference.split("@", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return name.split(":", 1)[0] or "subject"


def _level(finding: PolicyFinding) -> str:
    if finding.mode is Mode.AUDIT:
        return "note"
    if finding.mode is Mode.WARN:
        return "warning" if LEVEL[finding.severity] == "error" else LEVEL[finding.severity]
    return LEVEL[finding.severity]


def _result(finding: PolicyFinding, index: int, report: ScanReport) -> dict[str, Any]:
    violation = finding.violation
    subject = _subject_name(report)
    path = violation.path or violation.subject or report.subject
    relative = path.lstrip("/") if report.image is not None else path
    uri = f"{subject}/{relative}" if report.image is not None else relative
    identity = "\0".join([report.image.manifest_digest if report.image else report.subject, finding.rule.id,
                          path, violation.arch or "", violation.subject or ""])  # fmt: skip
    location: dict[str, Any] = {
        "physicalLocation": {"artifactLocation": {"uri": uri}, "region": {"startLine": 1}},
    }
    if report.image is not None:
        layer = violation.layer.digest if violation.layer else report.image.manifest_digest
        location["logicalLocations"] = [{"fullyQualifiedName": f"{report.image.reference}@{layer}:/{relative}",
                                         "kind": "module"}]  # fmt: skip
    result: dict[str, Any] = {
        "ruleId": finding.rule.id,
        "ruleIndex": index,
        "level": _level(finding),
        "message": {"text": f"{violation.message}. Fix: {finding.fix}"},
        "locations": [location],
        "partialFingerprints": {
            "primaryLocationLineHash": hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest() + ":1"
        },
        "properties": {
            "kaudit:severity": finding.severity.value,
            "kaudit:mode": finding.mode.value,
            "kaudit:layer": violation.layer.digest if violation.layer else None,
            "kaudit:owner": violation.owner.purl if violation.owner else None,
            "kaudit:arch": violation.arch,
        },
    }
    if finding.exempted_by is not None:
        expires = finding.exempted_by.expires
        result["suppressions"] = [{"kind": "external", "status": "accepted",
                                   "justification": finding.exempted_by.reason
                                   + (f" (until {expires.isoformat()})" if expires else "")}]  # fmt: skip
    return result


def sarif_document(report: ScanReport, policy: PolicyResult) -> dict[str, Any]:
    rules = list(policy.rules)
    index = {rule.id: position for position, rule in enumerate(rules)}
    driver = {
        "name": "kaudit",
        "version": __version__,
        "informationUri": INFORMATION_URI,
        "rules": [
            {
                "id": rule.id,
                "name": rule.name,
                "shortDescription": {"text": rule.title},
                "fullDescription": {"text": rule.rationale},
                "help": {"text": rule.remediation, "markdown": rule.remediation},
                "defaultConfiguration": {"level": LEVEL[policy.policy.setting(rule.id).severity or rule.severity]},
                "properties": {
                    "security-severity": SECURITY_SEVERITY[policy.policy.setting(rule.id).severity or rule.severity],
                    "tags": ["gpu", "kaudit", *rule.tags][:20],
                    "precision": "high",
                },
            }
            for rule in rules
        ],
    }
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": driver},
                "automationDetails": {"id": f"kaudit/{policy.policy.name}/{_subject_name(report)}/"},
                "results": [_result(f, index[f.rule.id], report) for f in policy.findings],
                "properties": {
                    "kaudit:subject": report.subject,
                    "kaudit:policy": policy.policy.name,
                    "kaudit:notes": list(policy.notes),
                },
            }
        ],
    }


class SarifFormat(Format):
    name = "sarif"
    is_manifest = True
    needs_policy = True

    def render(self, report: ScanReport, policy: PolicyResult | None = None) -> str:
        if policy is None:
            raise ValueError("SARIF output needs a policy evaluation")
        return json.dumps(sarif_document(report, policy), indent=2) + "\n"
