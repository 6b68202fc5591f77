"""Signatures, offline, against a private Sigstore the tests build (tests/sigstore_fake.py): signed kernel caches
(key-based and keyless) and Kernel Hub variant signatures judged by KA203. Every negative case must be refused
with a reason: tampered payload, tampered file, wrong identity, wrong issuer, foreign CA, foreign CT key, foreign
Rekor key, altered integrated time, missing inclusion proof, malformed bundles."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kaudit.inventory import CacheEntry, ScanReport
from kaudit.policy.engine import evaluate
from kaudit.policy.load import load_catalog, load_policy
from kaudit.policy.model import TrustedIdentity
from kaudit.signing import cache
from kaudit.signing.trust import SignatureError
from tests.conftest import ROOT
from tests.sigstore_fake import GITHUB, FakeSigstore

SIGNER = "https://github.com/kaudit-test/caches/.github/workflows/warm.yml@refs/heads/main"
TRUSTED = [TrustedIdentity(GITHUB, "https://github.com/kaudit-test/*")]
CATALOG = load_catalog()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    target = tmp_path / "triton"
    shutil.copytree(ROOT / "tests" / "fixtures" / "caches" / "triton", target)
    return target


def _keys(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / "key.pem", tmp_path / "pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))  # fmt: skip
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    return private, public


def kaudit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kaudit", *args], capture_output=True, text=True, timeout=120)


def test_key_signed_cache_round_trip_and_tampering(cache_dir: Path, tmp_path: Path) -> None:
    private, public = _keys(tmp_path)
    signed = kaudit("sign", "cache", str(cache_dir), "--key", str(private))
    assert signed.returncode == 0 and "signed 10 files" in signed.stdout, signed.stderr
    assert kaudit("verify", "cache", str(cache_dir), "--key", str(public)).returncode == 0
    bundle = json.loads((cache_dir / "kaudit-cache.sig").read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    assert statement["subject"][0]["name"] == "triton" and len(statement["predicate"]["resources"]) == 10
    (tmp_path / "other").mkdir()
    _, other = _keys(tmp_path / "other")
    wrong = kaudit("verify", "cache", str(cache_dir), "--key", str(other))
    assert wrong.returncode == 1 and "does not verify with this key" in wrong.stderr
    launcher = next(cache_dir.rglob("__triton_launcher*.so"))
    launcher.write_bytes(launcher.read_bytes() + b"\x90")
    (cache_dir / "extra.py").write_text("import os")
    next(cache_dir.rglob("*.ttir")).unlink()
    tampered = kaudit("verify", "cache", str(cache_dir), "--key", str(public))
    assert tampered.returncode == 1 and "Traceback" not in tampered.stderr
    assert "__triton_launcher.cpython-312-x86_64-linux-gnu.so: changed" in tampered.stderr
    assert "extra.py: not in the signed manifest" in tampered.stderr and "kaudit_add.ttir: missing" in tampered.stderr


def test_links_leaving_the_cache_are_refused(cache_dir: Path, tmp_path: Path) -> None:
    (cache_dir / "escape").symlink_to("/etc/hostname")
    private, _public = _keys(tmp_path)
    with pytest.raises(SignatureError, match="links outside"):
        cache.sign_with_key(cache_dir, private.read_bytes(), cache_dir / "kaudit-cache.sig")


def _keyless(cache_dir: Path, sigstore: FakeSigstore, identity: str = SIGNER, issuer: str = GITHUB) -> dict[str, Any]:
    manifest = cache.statement(cache_dir, cache.file_digests(cache_dir))
    bundle = sigstore.sign_dsse(manifest, identity, issuer)
    (cache_dir / "kaudit-cache.sig").write_text(json.dumps(bundle))
    return bundle


def _verify_keyless(cache_dir: Path, root: Path) -> subprocess.CompletedProcess[str]:
    return kaudit("verify", "cache", str(cache_dir), "--identity", "https://github.com/kaudit-test/*", "--issuer",
                  GITHUB, "--trust-config", str(root))  # fmt: skip


def _edit(bundle: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    edited = json.loads(json.dumps(bundle))
    change(edited)
    return edited


def _entry(bundle: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = bundle["verificationMaterial"]["tlogEntries"][0]
    return entry


NEGATIVE: dict[str, tuple[Callable[[FakeSigstore, Path], dict[str, Any]], str]] = {
    "wrong identity": (lambda s, d: _keyless(d, s, identity="https://github.com/evil/caches/.github/w.yml@x"),
                       "not among the policy's trusted signers"),
    "prefix is not a match": (lambda s, d: _keyless(d, s, identity="https://github.com/kaudit-test.evil.com/x"),
                              "not among the policy's trusted signers"),
    "wrong issuer": (lambda s, d: _keyless(d, s, issuer="https://accounts.google.com"),
                     "not among the policy's trusted signers"),
    "foreign CA": (lambda s, d: _keyless(d, FakeSigstore(ct=s.ct, rekor=s.rekor)), "certificate"),
    "foreign CT key": (lambda s, d: _keyless(d, FakeSigstore(ca=s.ca, rekor=s.rekor)), "SCT"),
    "foreign Rekor key": (lambda s, d: _keyless(d, FakeSigstore(ca=s.ca, ct=s.ct)), "checkpoint"),
    "altered integrated time": (lambda s, d: _edit(_keyless(d, s), lambda b: _entry(b).update(
        integratedTime=str(int(_entry(b)["integratedTime"]) + 60))), "inclusion promise"),
    "missing inclusion proof": (lambda s, d: _edit(_keyless(d, s), lambda b: _entry(b).pop("inclusionProof")),
                                "inclusionProof"),
    "tampered payload": (lambda s, d: _edit(_keyless(d, s), lambda b: b["dsseEnvelope"].update(
        payload=base64.b64encode(base64.b64decode(b["dsseEnvelope"]["payload"]).replace(b"sha256", b"sha257"))
        .decode())), "does not verify"),
}  # fmt: skip


def test_keyless_signed_cache_verifies(cache_dir: Path, tmp_path: Path) -> None:
    sigstore = FakeSigstore()
    root = sigstore.write_trust_root(tmp_path / "trusted_root.json")
    _keyless(cache_dir, sigstore)
    ok = _verify_keyless(cache_dir, root)
    assert ok.returncode == 0 and "verified 10 files" in ok.stdout, ok.stderr
    next(cache_dir.rglob("*.ptx")).write_text("// replaced")
    changed = _verify_keyless(cache_dir, root)
    assert changed.returncode == 1 and "kaudit_add.ptx: changed" in changed.stderr


@pytest.mark.parametrize("case", sorted(NEGATIVE))
def test_keyless_negative_cases_are_refused(case: str, cache_dir: Path, tmp_path: Path) -> None:
    sigstore = FakeSigstore()
    root = sigstore.write_trust_root(tmp_path / "trusted_root.json")
    make, reason = NEGATIVE[case]
    bundle = make(sigstore, cache_dir)
    (cache_dir / "kaudit-cache.sig").write_text(json.dumps(bundle))
    refused = _verify_keyless(cache_dir, root)
    assert refused.returncode == 1 and "NOT verified" in refused.stderr and "Traceback" not in refused.stderr, case
    assert reason in refused.stderr, refused.stderr


MALFORMED = ["", "not json", "[]", '{"dsseEnvelope": 1}', '{"mediaType": "x", "dsseEnvelope": {}}',
             '{"dsseEnvelope": {"payload": "!!", "payloadType": "x", "signatures": []}}']  # fmt: skip


@pytest.mark.parametrize("content", MALFORMED)
def test_malformed_bundles_give_clear_errors(content: str, cache_dir: Path, tmp_path: Path) -> None:
    _private, public = _keys(tmp_path)
    (cache_dir / "kaudit-cache.sig").write_text(content)
    for extra in (["--key", str(public)], ["--identity", "x", "--issuer", "y"]):
        refused = kaudit("verify", "cache", str(cache_dir), *extra)
        assert refused.returncode == 1 and "NOT verified" in refused.stderr and "Traceback" not in refused.stderr


def _hub_report(bundle_text: str, metadata: bytes) -> ScanReport:
    entry = CacheEntry("hf-kernel-hub", "root/.cache/huggingface/hub/kernels--kaudit-test--saxpy/snapshots/c/build/v",
                       "kaudit-test/saxpy@c", details=(("repository", "kaudit-test/saxpy"), ("commit", "c" * 40),
                       ("signature", "present"), ("signature-bundle", bundle_text),
                       ("metadata-sha256", hashlib.sha256(metadata).hexdigest())))  # fmt: skip
    return ScanReport("x", (), caches=(entry,))


def _policy(tmp_path: Path, signers: str, root: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(f"apiVersion: kaudit.dev/v1\nkind: Policy\nname: t\n{signers}trust-config: {root.name}\n")
    return path


SIGNERS = (
    "signers:\n  - issuer: https://token.actions.githubusercontent.com\n    subject: https://github.com/kaudit-test/*\n"
)


def test_hub_signatures_judged_by_ka203(tmp_path: Path) -> None:
    sigstore = FakeSigstore()
    root = sigstore.write_trust_root(tmp_path / "trusted_root.json")
    metadata = b'{"name": "saxpy", "version": 1}'
    good = json.dumps(sigstore.sign_artifact(metadata, SIGNER))

    def ka203(report: ScanReport, signers: str = SIGNERS) -> list[str]:
        policy = load_policy(_policy(tmp_path, signers, root), CATALOG)
        return [f.violation.message for f in evaluate(report, policy, CATALOG).findings if f.rule.id == "KA203"]

    assert ka203(_hub_report(good, metadata)) == []
    (tampered,) = ka203(_hub_report(good, metadata + b" "))
    assert "does not verify" in tampered and "digest mismatch" in tampered
    stranger = json.dumps(sigstore.sign_artifact(metadata, "https://github.com/evil/x/.github/w.yml@refs/heads/main"))
    (untrusted,) = ka203(_hub_report(stranger, metadata))
    assert "not among the policy's trusted signers" in untrusted
    (nobody,) = ka203(_hub_report(good, metadata), signers="")
    assert "the policy trusts no signer" in nobody
    (garbage,) = ka203(_hub_report("{not a bundle", metadata))
    assert "does not verify: failed to load bundle" in garbage
    foreign = json.dumps(FakeSigstore().sign_artifact(metadata, SIGNER))
    (foreign_ca,) = ka203(_hub_report(foreign, metadata))
    assert "does not verify" in foreign_ca


def test_links_to_directories_and_loops_are_refused(cache_dir: Path, tmp_path: Path) -> None:
    private, _public = _keys(tmp_path)
    (cache_dir / "alias").symlink_to(next(p for p in cache_dir.iterdir() if p.is_dir()).name)
    with pytest.raises(SignatureError, match="links a directory"):
        cache.sign_with_key(cache_dir, private.read_bytes(), cache_dir / "kaudit-cache.sig")
    (cache_dir / "alias").unlink()
    (cache_dir / "loop").symlink_to("loop")
    refused = kaudit("sign", "cache", str(cache_dir), "--key", str(private))
    assert refused.returncode == 2 and "cannot be resolved" in refused.stderr and "Traceback" not in refused.stderr
    (cache_dir / "loop").unlink()
    nowhere = kaudit("sign", "cache", str(cache_dir), "--key", str(private), "--signature", str(tmp_path / "no/x.sig"))
    assert nowhere.returncode == 2 and "cannot write the signature" in nowhere.stderr


def test_unusable_hub_digests_fail_ka202(tmp_path: Path) -> None:
    entry = CacheEntry("hf-kernel-hub", "hub/kernels--o--n/snapshots/c/build/v", "o/n@c",
                       details=(("repository", "o/n"), ("commit", "c" * 40), ("digest", "present"),
                                ("digest-check", "unverifiable"), ("signature", "absent")),
                       notes=("digest: metadata.json digest uses 'x'; kaudit checks sha256",))  # fmt: skip
    policy = tmp_path / "p.yaml"
    policy.write_text("apiVersion: kaudit.dev/v1\nkind: Policy\nname: t\n")
    result = evaluate(ScanReport("x", (), caches=(entry,)), load_policy(policy, CATALOG), CATALOG)
    (finding,) = [f for f in result.findings if f.rule.id == "KA202"]
    assert "cannot be checked" in finding.violation.message


def test_malformed_referrers_are_refused_not_raised() -> None:
    from kaudit.signing.attestation import verify_image

    class Client:
        def referrers(self, digest: str) -> list[dict[str, Any]]:
            return [{"artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json", "digest": "sha256:" + "1" * 64}]

        def manifest(self, ref: str) -> tuple[bytes, str, str]:
            return b"[1]", "application/vnd.oci.image.manifest.v1+json", ref

        def exists(self, ref: str) -> bool:
            return False

    found = verify_image(Client(), "sha256:" + "2" * 64, public_key_pem=b"")  # type: ignore[arg-type]
    assert found.verified == [] and "not an OCI manifest" in found.refused[0]
