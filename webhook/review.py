"""AdmissionReview ``admission.k8s.io/v1`` in, AdmissionReview out: the webhook's decision, without Flask.

Every container of the object's pod spec (containers, initContainers, ephemeralContainers) is judged: its image
reference, the image's kernel inventory from the report store (by digest; a tag is never resolved here, so a tag
is denied with the digest to use when the store knows it), the CI gate's rules, and the pod-level rules (the
environment, shared writable cache volumes, the GPU the pod is scheduled on). Nothing in the object — labels,
annotations that claim a scan result — can exempt it: only the policy's namespaces, by name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kaudit.inventory import ImageInfo, ScanReport
from kaudit.policy.engine import evaluate
from kaudit.policy.model import Mode, Policy, PolicyFinding, RuleInfo
from kaudit.sources.interface import SourceError
from kaudit.sources.registry import Reference
from webhook.attestations import AttestationSource
from webhook.store import ReportStore

log = logging.getLogger("kaudit.webhook")

WORKLOAD_TEMPLATES: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Pod": ("spec",),
    "ServingRuntime": ("spec",),
    "ClusterServingRuntime": ("spec",),
}
"""Where each kind keeps its pod spec. KServe InferenceServices keep one per component (predictor, transformer,
explainer): see :func:`pod_specs`."""
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
WARNING_LIMIT = 120
"""Kubernetes recommends warnings of at most 120 characters; it drops them past 4,096 in total."""


@dataclass
class Decision:
    allowed: bool
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    audit: dict[str, str] = field(default_factory=dict)
    findings: list[PolicyFinding] = field(default_factory=list)
    denials: list[str] = field(default_factory=list)
    """Reasons to deny that are not rule findings (an image with no scan report, under an enforcing policy)."""
    exempt: bool = False


def pod_specs(obj: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(where, pod spec)`` for each pod spec of the object."""
    kind = obj.get("kind", "")
    if kind == "InferenceService":
        spec = obj.get("spec") or {}
        for component in ("predictor", "transformer", "explainer"):
            if isinstance(spec.get(component), Mapping):
                yield f"spec.{component}", _with_framework_containers(spec[component])
        return
    path = WORKLOAD_TEMPLATES.get(kind)
    if path is None:
        return
    node: Any = obj
    for step in path:
        node = node.get(step) if isinstance(node, Mapping) else None
    if isinstance(node, Mapping):
        yield ".".join(path), node


def _with_framework_containers(component: Mapping[str, Any]) -> Mapping[str, Any]:
    """A KServe component with its framework specs (``model``, ``pytorch``, ``huggingface``, ...) added as
    containers: each embeds a container, and its ``image`` replaces the serving runtime's."""
    extra = [{**value, "name": key} for key, value in component.items()
             if isinstance(value, Mapping) and isinstance(value.get("image"), str)]  # fmt: skip
    if not extra:
        return component
    return {**component, "containers": [*(component.get("containers") or []), *extra]}


def containers(pod: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for field_name in CONTAINER_LISTS:
        for container in pod.get(field_name) or []:
            if isinstance(container, Mapping):
                yield field_name, container


class Reviewer:
    """Decides AdmissionReviews with one policy, one rule catalog and one report store."""

    def __init__(self, policy: Policy, catalog: Mapping[str, RuleInfo], store: ReportStore,
                 attestations: AttestationSource | None = None) -> None:  # fmt: skip
        self.policy, self.catalog, self.store, self.attestations = policy, catalog, store, attestations

    def review(self, request: Mapping[str, Any]) -> Decision:
        namespace = str(request.get("namespace") or "")
        obj = request.get("object") or {}
        if namespace in self.policy.exempt_namespaces:
            log.warning("admitted without review: namespace %s is exempt by policy %s (%s %s, uid %s)", namespace,
                        self.policy.name, obj.get("kind"), (obj.get("metadata") or {}).get("name"),
                        request.get("uid"))  # fmt: skip
            return Decision(True, exempt=True, audit={"exempt": f"namespace {namespace} is exempt by policy"})
        decision = Decision(True)
        for where, pod in pod_specs(obj):
            for field_name, container in containers(pod):
                self._container(decision, f"{where}.{field_name}", pod, container)
        denials = [f for f in decision.findings if f.counts and f.severity.at_least(self.policy.fail_on)]
        reasons = [*decision.denials, *(self._line(f) for f in denials)]
        if reasons:
            decision.allowed = False
            decision.message = f"kaudit policy {self.policy.name} denies this object: " + "; ".join(reasons)
        for finding in decision.findings:
            if finding in denials:
                continue
            if finding.mode is Mode.AUDIT or finding.exempted_by is not None:
                key = f"{finding.rule.id.lower()}-{len(decision.audit)}"
                decision.audit[key] = self._line(finding)[:1000]
            else:
                decision.warnings.append(self._warning(finding))
        decision.warnings = _within_budget(decision.warnings)
        return decision

    def _line(self, finding: PolicyFinding) -> str:
        violation = finding.violation
        where = f" [{violation.subject}]" if violation.subject else ""
        return f"{finding.rule.id}{where}: {violation.message}. Fix: {finding.fix}"

    def _warning(self, finding: PolicyFinding) -> str:
        """A warning short enough for kubectl (120 characters): the container, not its whole image reference."""
        container = (finding.violation.subject or "").split(" ", 1)[0]
        return f"{finding.rule.id} {container}: {finding.violation.message}"[:WARNING_LIMIT]

    def _container(self, decision: Decision, where: str, pod: Mapping[str, Any], container: Mapping[str, Any]) -> None:
        name = str(container.get("name", "?"))
        image = str(container.get("image", ""))
        subject = f"{where}[{name}] {image}"
        try:
            reference = Reference.parse(image)
        except SourceError as exc:
            decision.denials.append(f"{subject}: not an image reference kaudit can judge ({exc})")
            return
        report = self.store.get(reference.digest) if reference.digest else None
        if report is None and reference.digest and self.attestations is not None:
            report = self.attestations.get(image, reference.digest)
        known = report is not None
        if report is None:
            # still judged by what the reference alone shows (pinning, registry) and the pod's own settings
            digest = reference.digest or self.store.digest_for(image) or ""
            report = ScanReport(image, (), image=ImageInfo(image, digest, "", ()))
        result = evaluate(report, self.policy, self.catalog, pod=pod, image_reference=image, container=container)
        for finding in result.findings:
            violation = finding.violation
            if violation.subject is None or violation.subject in (name, image):
                finding = replace(finding, violation=replace(violation, subject=subject))
            decision.findings.append(finding)
        if not known:
            # a tag names no content: its kernels are as unknown as those of an image nobody scanned
            self._missing_report(decision, subject, reference.digest)

    def _missing_report(self, decision: Decision, subject: str, digest: str | None) -> None:
        if digest is None:
            text = f"{subject}: a tag cannot be matched to a kaudit scan report, so its kernels are unknown"
        else:
            text = (f"{subject}: no kaudit scan report for {digest} in the report store, so its kernels are unknown. "
                    f"Fix: scan it (`kaudit scan image ... -o admission=sha256-{digest.split(':', 1)[1]}.json`) "
                    "and add the report to the store")  # fmt: skip
        mode = self.policy.missing_report
        if mode is Mode.ENFORCE:
            decision.denials.append(text)
        elif mode is Mode.WARN:
            container = subject.split(" ", 1)[0]
            decision.warnings.append(f"{container}: no kaudit scan report for its image; its kernels are unknown")
        else:
            decision.audit[f"missing-report-{len(decision.audit)}"] = text[:1000]


def _within_budget(warnings: list[str], total: int = 4096) -> list[str]:
    kept: list[str] = []
    used = 0
    for warning in dict.fromkeys(warnings):
        if used + len(warning) > total - 60:
            kept.append(f"... and {len(warnings) - len(kept)} more kaudit warnings")
            break
        kept.append(warning)
        used += len(warning)
    return kept


def response(request: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    """The AdmissionReview the API server expects back for ``request``."""
    body: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": decision.allowed}
    if not decision.allowed:
        body["status"] = {"code": 403, "reason": "Forbidden", "message": decision.message}
    if decision.warnings:
        body["warnings"] = decision.warnings
    if decision.audit:
        body["auditAnnotations"] = {key[:63]: value for key, value in decision.audit.items()}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": body}
