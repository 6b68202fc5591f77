"""Policies, the rule catalog, the engine's modes, severities and exemptions, and GPU compatibility."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from kaudit.archs import Coverage, FleetArch, coverage, runs_on
from kaudit.inventory import ArchSummary
from kaudit.policy.engine import evaluate
from kaudit.policy.load import available_policies, load_catalog, load_policy
from kaudit.policy.model import Mode, Severity
from kaudit.policy.yamlfile import PolicyFileError
from tests.conftest import fixture_path, scan

CATALOG = load_catalog()
HEADER = "apiVersion: kaudit.dev/v1\nkind: Policy\nname: t\n"


def _policy(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(HEADER + body)
    return path


def test_catalog_and_bundled_policies_load() -> None:
    assert len(CATALOG) >= 10 and all(rule.rationale and rule.remediation for rule in CATALOG.values())
    policies = {name: load_policy(path, CATALOG) for name, path in available_policies().items()}
    assert {"production", "experimental", "custom-example"} <= set(policies)
    assert policies["production"].setting("KA303").mode is Mode.ENFORCE
    assert policies["experimental"].setting("KA401").mode is Mode.WARN
    assert policies["experimental"].setting("KA201").mode is Mode.ENFORCE


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("fleet:\n  archs: [sm_90, hopper]\n", 5, "'hopper' is not a GPU architecture"),
        ("rules:\n  KA101: {mode: enforce}\n  KA999: {mode: warn}\n", 6, "unknown rule 'KA999'"),
        ("rules:\n  KA101: {mode: sometimes}\n", 5, "'mode' must be one of"),
        ("defaults:\n  fail-on: urgent\n", 5, "'fail-on' must be one of"),
        ("exemptions:\n  - rule: KA401\n    reason: vendor SDK\n", 5, "needs an expiry date"),
        ("exemptions:\n  - rule: KA401\n    reason: x\n    expires: next year\n", 7, "must be a date"),
        ("exemptions:\n  - rule: KA401\n    expires: 2027-01-01\n", 5, "'reason' must be non-empty text"),
        ("fleet:\n  archs: [sm_90\n", 6, ""),
        ("colour: blue\n", 4, "unknown key 'colour'"),
        ("rules:\n  KA101: {mode: warn}\n  KA101: {mode: off}\n", 6, "'KA101' appears twice"),
    ],
)
def test_policy_errors_carry_line_numbers(tmp_path: Path, body: str, line: int, message: str) -> None:
    with pytest.raises(PolicyFileError) as caught:
        load_policy(_policy(tmp_path, body), CATALOG)
    assert caught.value.line == line, caught.value.diagnostics()
    assert message in caught.value.diagnostics()
    assert caught.value.diagnostics().startswith(f"{tmp_path / 'policy.yaml'}:{line}: ")


def test_policy_validate_command(tmp_path: Path) -> None:
    bad = _policy(tmp_path, "rules:\n  KA999: {mode: warn}\n")
    run = subprocess.run(
        [sys.executable, "-m", "kaudit", "policy", "validate", str(bad)], capture_output=True, text=True
    )
    assert run.returncode == 1 and f"{bad}:5: unknown rule 'KA999'" in run.stderr
    good = subprocess.run([sys.executable, "-m", "kaudit", "policy", "validate", "policies/production.yaml"],
                          capture_output=True, text=True)  # fmt: skip
    assert good.returncode == 0 and "valid policy 'production'" in good.stdout
    listing = subprocess.run([sys.executable, "-m", "kaudit", "policy", "list"], capture_output=True, text=True)
    assert all(rule in listing.stdout for rule in CATALOG) and "production" in listing.stdout
    explained = subprocess.run([sys.executable, "-m", "kaudit", "policy", "explain", "ka303"], capture_output=True,
                               text=True)  # fmt: skip
    assert "Why it matters" in explained.stdout and "production: enforce, critical" in explained.stdout
    unknown = subprocess.run([sys.executable, "-m", "kaudit", "policy", "explain", "KA000"], capture_output=True,
                             text=True)  # fmt: skip
    assert unknown.returncode == 2 and "no rule" in unknown.stderr


def test_modes_severities_and_expiring_exemptions(tmp_path: Path) -> None:
    report = scan(fixture_path("kern_sm_80.cubin"), fixture_path("kern_sm_90a.cubin"))
    policy = load_policy(_policy(tmp_path, """fleet:
  archs: [sm_80]
rules:
  KA401: {mode: warn, severity: low}
  KA302: {mode: off}
exemptions:
  - rule: KA303
    paths: ["*/kern_sm_90a.cubin"]
    reason: only used on the H100 pool
    expires: 2027-01-31
"""), CATALOG)  # fmt: skip
    before = evaluate(report, policy, CATALOG, today=date(2027, 1, 31))
    assert "KA302" not in {rule.id for rule in before.rules}
    unowned = [f for f in before.findings if f.rule.id == "KA401"]
    assert len(unowned) == 2 and all(f.mode is Mode.WARN and f.severity is Severity.LOW for f in unowned)
    (missing,) = [f for f in before.findings if f.rule.id == "KA303"]
    assert missing.exempted_by is not None and not missing.counts
    assert before.failing(Severity.INFO) == [] and before.notes == ()
    after = evaluate(report, policy, CATALOG, today=date(2027, 2, 1))
    (missing,) = [f for f in after.findings if f.rule.id == "KA303"]
    assert missing.exempted_by is None and after.failing(Severity.HIGH) == [missing]
    assert after.failing(Severity.CRITICAL) == [missing] and "expired on 2027-01-31" in after.notes[0]


def test_gate_threshold_and_usage_errors(tmp_path: Path) -> None:
    policy = _policy(tmp_path, "fleet:\n  archs: [sm_80]\nrules:\n  KA401: {mode: off}\n")
    cubin = str(fixture_path("kern_sm_80.cubin"))
    base = [sys.executable, "-m", "kaudit", "scan", "path", cubin, "--policy", str(policy), "-o", "json=/dev/null"]
    assert subprocess.run(base, capture_output=True).returncode == 0
    ptx = str(fixture_path("kern80.ptx"))
    medium = [*base[:5], ptx, *base[6:]]
    assert subprocess.run(medium, capture_output=True).returncode == 0  # KA302 is medium; the policy fails on high
    failed = subprocess.run([*medium, "--fail-on", "medium"], capture_output=True, text=True)
    assert failed.returncode == 1 and "1 enforced finding(s) at or above medium" in failed.stderr
    no_policy = subprocess.run([sys.executable, "-m", "kaudit", "scan", "path", cubin, "-o", "sarif"],
                               capture_output=True, text=True)  # fmt: skip
    assert no_policy.returncode == 2 and "-o sarif needs a policy" in no_policy.stderr
    missing = subprocess.run([*base[:6], "--policy", "nonesuch"], capture_output=True, text=True)
    assert missing.returncode == 2 and "no bundled policy 'nonesuch'" in missing.stderr


@pytest.mark.parametrize(
    ("code", "gpu", "runs"),
    [
        ("sm_80", "sm_86", True), ("sm_86", "sm_80", False), ("sm_80", "sm_90", False), ("sm_90a", "sm_90", True),
        ("sm_90a", "sm_100", False), ("sm_100f", "sm_103", True), ("sm_100f", "sm_120", False),
        ("compute_80", "sm_90", True), ("compute_90", "sm_80", False), ("compute_90a", "sm_100", False),
        ("compute_100f", "sm_103", True), ("gfx942:sramecc+:xnack-", "gfx942", True), ("gfx90a", "gfx942", False),
        ("gfx9-4-generic", "gfx942", True), ("gfx942", "sm_90", False), ("sm_90", "gfx942", False),
    ],
)  # fmt: skip
def test_runs_on(code: str, gpu: str, runs: bool) -> None:
    assert runs_on(code, FleetArch.parse(gpu)) is runs


def test_coverage_states() -> None:
    hopper, mi300 = FleetArch.parse("sm_90"), FleetArch.parse("gfx942")
    assert coverage(ArchSummary(sass_archs=("sm_90a",)), hopper) is Coverage.NATIVE
    assert coverage(ArchSummary(sass_archs=("sm_80",), ptx_archs=("compute_80",)), hopper) is Coverage.PTX_JIT
    assert coverage(ArchSummary(sass_archs=("sm_80",)), hopper) is Coverage.MISSING
    assert coverage(ArchSummary(sass_archs=("sm_80",)), mi300) is None
    assert coverage(ArchSummary(gfx_targets=("gfx90a",)), mi300) is Coverage.MISSING


def test_rules_judge_the_reference_a_pod_uses(tmp_path: Path) -> None:
    """The webhook's form: the same report, judged for the reference a pod's container names."""
    from dataclasses import replace

    from kaudit.inventory import ImageInfo

    digest = "sha256:" + "ab" * 32
    report = replace(scan(fixture_path("kern_sm_80.cubin")),
                     image=ImageInfo("registry.example.com/team/app@" + digest, digest, "linux/amd64", ()))  # fmt: skip
    policy = load_policy(_policy(tmp_path, "registries: [registry.example.com]\n"), CATALOG)
    pod = {"containers": [{"name": "server", "image": "mirror.example.org/team/app:v1"}]}
    by_digest = evaluate(report, policy, CATALOG)
    assert not [f for f in by_digest.findings if f.rule.id in ("KA101", "KA102")]
    as_deployed = evaluate(report, policy, CATALOG, pod=pod, image_reference="mirror.example.org/team/app:v1")
    (unpinned,) = [f for f in as_deployed.findings if f.rule.id == "KA101"]
    assert unpinned.violation.subject == "mirror.example.org/team/app:v1"
    assert unpinned.fix == f"reference the image as mirror.example.org/team/app@{digest}"
    (registry,) = [f for f in as_deployed.findings if f.rule.id == "KA102"]
    assert "mirror.example.org" in registry.violation.message


@pytest.mark.parametrize(("expires", "message"), [("2024-13-45", "invalid value"),
                                                  ("2099-01-01 10:00:00", "not a date and time")])  # fmt: skip
def test_exemption_dates_are_checked(tmp_path: Path, expires: str, message: str) -> None:
    body = f"exemptions:\n  - rule: KA401\n    reason: r\n    expires: {expires}\n"
    with pytest.raises(PolicyFileError, match=message):
        load_policy(_policy(tmp_path, body), CATALOG)


def test_image_signers_default_to_the_kernel_signers(tmp_path: Path) -> None:
    kernels = "signers:\n  - issuer: https://token.actions.githubusercontent.com\n    subject: https://github.com/k/*\n"
    images = ("attestation-signers:\n  - issuer: https://token.actions.githubusercontent.com\n"
              "    subject: https://github.com/platform/*\n")  # fmt: skip
    only_kernels = load_policy(_policy(tmp_path, kernels), CATALOG)
    assert only_kernels.image_signers == only_kernels.trusted_identities
    both = load_policy(_policy(tmp_path, kernels + images), CATALOG)
    assert [s.subject for s in both.image_signers] == ["https://github.com/platform/*"]
    assert [s.subject for s in both.trusted_identities] == ["https://github.com/k/*"]
