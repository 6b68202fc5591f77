"""Policies, the rule catalog's entries, and what evaluating a policy finds: plain frozen dataclasses."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from kaudit.archs import FleetArch
from kaudit.inventory import LayerRef, Owner


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"

    @property
    def rank(self) -> int:
        """Higher is more severe: critical 4 … info 0."""
        return len(_SEVERITY_ORDER) - 1 - _SEVERITY_ORDER.index(self)

    def at_least(self, threshold: Severity) -> bool:
        return self.rank >= threshold.rank


_SEVERITY_ORDER = list(Severity)


class Mode(StrEnum):
    """What a rule's findings do."""

    ENFORCE = "enforce"
    """Count against the gate (``--fail-on``) and deny admission."""
    WARN = "warn"
    """Reported as warnings; never fail the gate or deny."""
    AUDIT = "audit"
    """Recorded in reports (and admission audit annotations) only."""
    OFF = "off"
    """Not evaluated."""


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """One entry of the rule catalog (``rules/*.yaml``)."""

    id: str
    name: str
    """A CamelCase name for SARIF (``ImageNotPinnedByDigest``)."""
    title: str
    severity: Severity
    rationale: str
    remediation: str
    check: str
    """The check's name in :mod:`kaudit.rules`."""
    tags: tuple[str, ...] = ()
    source: str = ""
    """The catalog file it came from."""


@dataclass(frozen=True, slots=True)
class RuleSetting:
    """A policy's choice for one rule."""

    mode: Mode = Mode.ENFORCE
    severity: Severity | None = None
    """Overrides the catalog's severity when set."""


@dataclass(frozen=True, slots=True)
class TrustedIdentity:
    """A signer whose signatures the policy accepts (checked by the signing issue's verifier)."""

    issuer: str
    subject: str
    """A glob over the certificate's subject (e.g. a GitHub workflow URI)."""


@dataclass(frozen=True, slots=True)
class Exemption:
    """A rule switched off for some paths or images, with a reason, until an expiry date."""

    rule: str
    reason: str
    paths: tuple[str, ...] = ()
    """Globs over file paths; empty means every path."""
    images: tuple[str, ...] = ()
    """Globs over image references; empty means every image."""
    expires: date | None = None

    def covers(self, rule: str, path: str | None, image: str | None) -> bool:
        if rule != self.rule and self.rule != "*":
            return False
        if self.paths and not (path and any(fnmatch.fnmatchcase(path, glob) for glob in self.paths)):
            return False
        return not self.images or bool(image and any(fnmatch.fnmatchcase(image, glob) for glob in self.images))

    def expired(self, today: date) -> bool:
        return self.expires is not None and today > self.expires


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    description: str = ""
    fleet_archs: tuple[FleetArch, ...] = ()
    """The GPUs pods run on; coverage rules judge every GPU binary against each."""
    trusted_identities: tuple[TrustedIdentity, ...] = ()
    attestation_signers: tuple[TrustedIdentity, ...] = ()
    """Who may sign kaudit attestations and cosign image signatures; when empty, ``trusted_identities`` (the
    kernels' signers) are used."""
    trust_config: str | None = None
    """The Sigstore trust root signatures are verified against (a ``trusted_root.json`` or ClientTrustConfig), for
    a private Sigstore deployment; ``None`` is the public-good instance's root shipped with sigstore-python."""
    allowed_registries: tuple[str, ...] = ()
    """Registry hosts (``registry.example.com``, ``*.example.com``) images may come from; empty allows all."""
    default_mode: Mode = Mode.ENFORCE
    rules: dict[str, RuleSetting] = field(default_factory=dict)
    """Per-rule settings; a rule not named here runs in ``default_mode`` at its catalog severity."""
    exemptions: tuple[Exemption, ...] = ()
    fail_on: Severity = Severity.HIGH
    """The gate's default threshold (``--fail-on`` overrides it); admission denies at the same threshold."""
    exempt_namespaces: tuple[str, ...] = ()
    """Namespaces (by name, never by label) the admission webhook admits without judging; each is logged."""
    missing_report: Mode = Mode.ENFORCE
    """Admission of an image with no scan report: deny (``enforce``), admit with a warning (``warn``) or an audit
    annotation (``audit``)."""
    source: str = ""

    @property
    def image_signers(self) -> tuple[TrustedIdentity, ...]:
        return self.attestation_signers or self.trusted_identities

    def setting(self, rule: str) -> RuleSetting:
        return self.rules.get(rule, RuleSetting(self.default_mode))


@dataclass(frozen=True, slots=True)
class Violation:
    """What a check found, before the policy decides severity and mode."""

    message: str
    path: str | None = None
    """The file (or cache entry directory) concerned; ``None`` for the image itself."""
    layer: LayerRef | None = None
    owner: Owner | None = None
    fix: str | None = None
    """A fix specific to this finding; the rule's remediation applies otherwise."""
    subject: str | None = None
    """What was judged when it is not the scanned subject (a container of a pod)."""
    arch: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyFinding:
    rule: RuleInfo
    severity: Severity
    mode: Mode
    violation: Violation
    exempted_by: Exemption | None = None

    @property
    def fix(self) -> str:
        return self.violation.fix or self.rule.remediation

    @property
    def counts(self) -> bool:
        """True when the finding counts against the gate: enforced and not exempted."""
        return self.mode is Mode.ENFORCE and self.exempted_by is None

    def record(self) -> dict[str, Any]:
        """The finding as plain JSON values (the JSON report's ``policy.findings``)."""
        violation = self.violation
        layer = violation.layer
        return {
            "rule": self.rule.id,
            "title": self.rule.title,
            "severity": self.severity.value,
            "mode": self.mode.value,
            "message": violation.message,
            "path": violation.path,
            "subject": violation.subject,
            "arch": violation.arch,
            "layer": None
            if layer is None
            else {"index": layer.index, "digest": layer.digest, "diff_id": layer.diff_id},
            "owner": None if violation.owner is None else violation.owner.purl,
            "fix": self.fix,
            "exempted": None
            if self.exempted_by is None
            else {
                "reason": self.exempted_by.reason,
                "expires": None if self.exempted_by.expires is None else self.exempted_by.expires.isoformat(),
            },
        }


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """A policy evaluated over one scan report (and, for admission, one pod)."""

    policy: Policy
    rules: tuple[RuleInfo, ...]
    """Every rule evaluated, in catalog order."""
    findings: tuple[PolicyFinding, ...]
    notes: tuple[str, ...] = ()
    """Things the evaluation noticed (an expired exemption, an unknown rule id in the policy)."""

    def failing(self, threshold: Severity) -> list[PolicyFinding]:
        """Findings that fail a gate at ``threshold``."""
        return [f for f in self.findings if f.counts and f.severity.at_least(threshold)]
