"""The webhook's decisions without a server: reports, modes and the policy's choices for unknown images."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from kaudit.formats.admission import AdmissionFormat, read_admission_report
from kaudit.inventory import ImageInfo
from kaudit.policy.load import load_catalog, load_policy
from tests.conftest import fixture_path, scan
from webhook.review import Reviewer, response
from webhook.store import ReportStore

CATALOG = load_catalog()
DIGEST = "sha256:" + "ab" * 32


def _reviewer(tmp_path: Path, body: str) -> Reviewer:
    tmp_path.mkdir(parents=True, exist_ok=True)
    policy = tmp_path / "policy.yaml"
    policy.write_text("apiVersion: kaudit.dev/v1\nkind: Policy\nname: t\nfleet:\n  archs: [sm_80]\n" + body)
    store = tmp_path / "reports"
    store.mkdir()
    report = replace(scan(fixture_path("kern_sm_80.cubin")),
                     image=ImageInfo("registry.example.com/app:v1", DIGEST, "linux/amd64", ()))  # fmt: skip
    (store / f"sha256-{'ab' * 32}.json").write_text(AdmissionFormat().render(report))
    (store / f"sha256-{'cd' * 32}.json").write_text("{not json")
    return Reviewer(load_policy(policy, CATALOG), CATALOG, ReportStore(str(store)))


def _request(image: str, namespace: str = "team") -> dict[str, Any]:
    return {"uid": "u1", "namespace": namespace, "operation": "CREATE",
            "object": {"kind": "Pod", "spec": {"containers": [{"name": "c", "image": image}]}}}  # fmt: skip


def test_admission_report_round_trip(tmp_path: Path) -> None:
    report = scan(fixture_path("libk_plain.so"))
    restored = read_admission_report(AdmissionFormat().render(report))
    assert restored.binaries[0].loadable == report.binaries[0].loadable and restored.binaries[0].device_code == ()


def test_unknown_content_follows_missing_report(tmp_path: Path) -> None:
    rules = "rules:\n  KA101: {mode: warn}\n  KA401: {mode: off}\n"
    enforcing = _reviewer(tmp_path / "a", rules + "admission:\n  missing-report: enforce\n")
    tag = enforcing.review(_request("registry.example.com/app:v1"))
    assert not tag.allowed and "a tag cannot be matched to a kaudit scan report" in tag.message
    assert any(w.startswith("KA101 spec.containers[c]") for w in tag.warnings)
    corrupt = enforcing.review(_request("registry.example.com/app@sha256:" + "cd" * 32))
    assert not corrupt.allowed and "no kaudit scan report" in corrupt.message  # an unreadable report is no report
    assert enforcing.review(_request(f"registry.example.com/app@{DIGEST}")).allowed
    warning = _reviewer(tmp_path / "b", rules + "admission:\n  missing-report: warn\n")
    decision = warning.review(_request("registry.example.com/app@sha256:" + "ef" * 32))
    assert decision.allowed and any("no kaudit scan report" in w for w in decision.warnings)
    audit = _reviewer(tmp_path / "c", rules + "admission:\n  missing-report: audit\n")
    decision = audit.review(_request("registry.example.com/app@sha256:" + "ef" * 32))
    assert decision.allowed and not decision.warnings and any("missing-report" in k for k in decision.audit)
    body = response({"uid": "u1"}, decision)
    assert body["response"]["uid"] == "u1" and body["response"]["auditAnnotations"]


def test_exempt_namespace_by_name_only(tmp_path: Path) -> None:
    reviewer = _reviewer(tmp_path, "admission:\n  exempt-namespaces: [sandbox]\n")
    assert reviewer.review(_request("registry.example.com/app:v1", "sandbox")).exempt
    labelled = _request("registry.example.com/app:v1")
    labelled["object"]["metadata"] = {"labels": {"kaudit.dev/exempt": "true"}, "namespace": "sandbox"}
    assert not reviewer.review(labelled).allowed


def test_what_the_reference_alone_shows_is_judged_without_a_report(tmp_path: Path) -> None:
    """No report (a tag, an unscanned digest): pinning and the registry are still judged, with live exemptions
    only; a name kaudit cannot parse is denied."""
    body = ("registries: [registry.example.com]\nrules:\n  KA401: {mode: off}\nadmission:\n  missing-report: warn\n"
            "exemptions:\n  - rule: KA101\n    images: ['registry.example.com/legacy:*']\n    reason: old tags\n"
            "    expires: 2099-01-01\n  - rule: KA101\n    images: ['registry.example.com/expired:*']\n"
            "    reason: was allowed\n    expires: 2020-01-01\n")  # fmt: skip
    reviewer = _reviewer(tmp_path, body)
    unscanned = "sha256:" + "ef" * 32
    assert not reviewer.review(_request(f"evil.example.org/app@{unscanned}")).allowed  # KA102 without a report
    assert reviewer.review(_request(f"registry.example.com/my--app@{unscanned}")).allowed  # a valid name, warned
    assert reviewer.review(_request("registry.example.com/legacy:v1")).allowed  # a live exemption
    expired = reviewer.review(_request("registry.example.com/expired:v1"))
    assert not expired.allowed and "KA101" in expired.message
    for image in ("registry.example.com/App:v1", "registry.example.com/app@sha512:" + "ab" * 64, "???"):
        refused = reviewer.review(_request(image))
        assert not refused.allowed and "not an image reference kaudit can judge" in refused.message, image


def test_pod_labels_that_name_no_gpu(tmp_path: Path) -> None:
    reviewer = _reviewer(tmp_path, "rules:\n  KA401: {mode: off}\n")
    request = _request(f"registry.example.com/app@{DIGEST}")
    request["object"]["spec"]["nodeSelector"] = {"nvidia.com/gpu.compute.major": "100",
                                                 "amd.com/gpu.family": "Radeon-Foo"}  # fmt: skip
    assert reviewer.review(request).allowed  # nothing to judge against, and no internal error
    request["object"]["spec"]["containers"][0]["env"] = [{"name": "LOCAL_KERNELS", "valueFrom": {"secretKeyRef": {
        "name": "s", "key": "k"}}}]  # fmt: skip
    decision = reviewer.review(request)
    assert not decision.allowed and "KA601" in decision.message  # a value from a Secret is still set


def test_kserve_framework_images_are_judged(tmp_path: Path) -> None:
    reviewer = _reviewer(tmp_path, "rules:\n  KA401: {mode: off}\n")
    service = {"uid": "u", "namespace": "team", "operation": "CREATE", "object": {
        "kind": "InferenceService", "spec": {"predictor": {"model": {
            "modelFormat": {"name": "pytorch"}, "image": "registry.example.com/runtime:latest"}}}}}  # fmt: skip
    decision = reviewer.review(service)
    assert not decision.allowed and "spec.predictor.containers[model]" in decision.message
    service["object"]["spec"]["predictor"]["model"]["image"] = f"registry.example.com/app@{DIGEST}"
    assert reviewer.review(service).allowed


def test_pods_naming_the_index_find_the_platform_report(tmp_path: Path) -> None:
    """Reports are stored by the platform manifest that was scanned; pods of multi-platform images name the index."""
    reviewer = _reviewer(tmp_path, "rules:\n  KA401: {mode: off}\n")
    index = "sha256:" + "12" * 32
    report = replace(scan(fixture_path("kern_sm_80.cubin")),
                     image=ImageInfo("registry.example.com/multi:v1", "sha256:" + "34" * 32, "linux/amd64", (),
                                     index_digest=index))  # fmt: skip
    store = Path(reviewer.store.directory)
    (store / f"sha256-{'34' * 32}.json").write_text(AdmissionFormat().render(report))
    assert reviewer.store.get(index) is not None
    assert reviewer.review(_request(f"registry.example.com/multi@{index}")).allowed
    assert not reviewer.review(_request("registry.example.com/multi@sha256:" + "56" * 32)).allowed
