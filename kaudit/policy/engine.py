"""Evaluate a policy: run each rule's check, then apply the policy's severities, modes and exemptions."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from kaudit.inventory import ScanReport
from kaudit.policy.model import Mode, Policy, PolicyFinding, PolicyResult, RuleInfo


def evaluate(
    report: ScanReport,
    policy: Policy,
    catalog: Mapping[str, RuleInfo],
    *,
    pod: Mapping[str, Any] | None = None,
    image_reference: str | None = None,
    container: Mapping[str, Any] | None = None,
    trust_config: str | None = None,
    today: date | None = None,
) -> PolicyResult:
    """Every rule of ``catalog`` that ``policy`` does not switch off, over ``report`` (and ``pod``)."""
    from kaudit.rules import CHECKS, RuleContext

    today = today or date.today()
    context = RuleContext(report, policy, pod, image_reference, container, trust_config)
    image = context.reference or report.subject
    notes = [f"exemption for {e.rule} expired on {e.expires} and no longer applies ({e.reason})"
             for e in policy.exemptions if e.expired(today)]  # fmt: skip
    live = [e for e in policy.exemptions if not e.expired(today)]
    evaluated: list[RuleInfo] = []
    findings: list[PolicyFinding] = []
    for rule in catalog.values():
        setting = policy.setting(rule.id)
        if setting.mode is Mode.OFF:
            continue
        evaluated.append(rule)
        severity = setting.severity or rule.severity
        for violation in CHECKS[rule.check](context):
            exemption = next((e for e in live if e.covers(rule.id, violation.path, image)), None)
            findings.append(PolicyFinding(rule, severity, setting.mode, violation, exemption))
    findings.sort(key=lambda f: (-f.severity.rank, f.rule.id, f.violation.path or "", f.violation.message))
    return PolicyResult(policy, tuple(evaluated), tuple(findings), tuple(notes))
