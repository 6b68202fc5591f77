"""JUnit XML for CI dashboards: one test suite per rule, one failing test case per finding, and a passing case
for a rule that found nothing, so dashboards show what was checked and not only what failed (the shape of
Trivy's and Grype's JUnit templates). Warn- and audit-mode findings are ``skipped`` cases with their message."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from kaudit.formats.interface import Format, printable
from kaudit.inventory import ScanReport
from kaudit.policy.model import PolicyResult


class JunitFormat(Format):
    name = "junit"
    is_manifest = True
    needs_policy = True

    def render(self, report: ScanReport, policy: PolicyResult | None = None) -> str:
        if policy is None:
            raise ValueError("JUnit output needs a policy evaluation")
        suites = ET.Element("testsuites", name=f"kaudit {policy.policy.name}: {report.subject}")
        total = failed = 0
        for rule in policy.rules:
            findings = [f for f in policy.findings if f.rule.id == rule.id]
            failures = [f for f in findings if f.counts]
            suite = ET.SubElement(suites, "testsuite", name=f"{rule.id} {rule.title}",
                                  tests=str(max(len(findings), 1)), failures=str(len(failures)),
                                  skipped=str(len(findings) - len(failures)), errors="0")  # fmt: skip
            if not findings:
                ET.SubElement(suite, "testcase", classname=rule.id, name=f"{report.subject}: no findings")
            for finding in findings:
                violation = finding.violation
                case = ET.SubElement(suite, "testcase", classname=rule.id,
                                     name=f"[{finding.severity.value.upper()}] {violation.path or report.subject}"
                                          + (f" ({violation.arch})" if violation.arch else ""))  # fmt: skip
                text = f"{violation.message}\nFix: {finding.fix}"
                if violation.layer is not None:
                    text += f"\nLayer: {violation.layer.index} {violation.layer.digest}"
                if violation.owner is not None:
                    text += f"\nPackage: {violation.owner.purl}"
                if finding.counts:
                    failure = ET.SubElement(case, "failure", message=violation.message, type=finding.severity.value)
                    failure.text = text
                else:
                    why = (
                        f"exempt: {finding.exempted_by.reason}" if finding.exempted_by else f"{finding.mode.value} mode"
                    )
                    skipped = ET.SubElement(case, "skipped", message=why)
                    skipped.text = text
            total += max(len(findings), 1)
            failed += len(failures)
        suites.set("tests", str(total))
        suites.set("failures", str(failed))
        for element in suites.iter():
            element.attrib.update({key: printable(value) for key, value in element.attrib.items()})
            if element.text:
                element.text = printable(element.text)
        ET.indent(suites)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
