"""``kaudit attest`` and ``kaudit verify image`` through the real test registry (Debian's docker-registry, which has
no referrers API: the referrers tag schema is used), with a local key and keyless against the tests' private
Sigstore (tests/sigstore_fake.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kaudit.signing import attestation, dsse
from kaudit.sources.registry import Reference, RegistryClient
from tests.imagebuild import BuiltImage, build_layout
from tests.integration.test_policy_gate import failing_layers, passing_layers
from tests.registry import Registry
from tests.sigstore_fake import GITHUB, FakeSigstore

SIGNER = "https://github.com/kaudit-test/images/.github/workflows/release.yml@refs/heads/main"


def kaudit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kaudit", *args], capture_output=True, text=True, timeout=300)


def _key_pair(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = directory / "attest.pem", directory / "attest.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))  # fmt: skip
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    return private, public


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> dict[str, BuiltImage]:
    work = tmp_path_factory.mktemp("attest-images")
    images = {
        "good": build_layout(work / "good", passing_layers()),
        "bad": build_layout(work / "bad", failing_layers()),
        "keyless": build_layout(work / "keyless", passing_layers(), env={"HF_HUB_OFFLINE": "1"}),
        "cosign": build_layout(work / "cosign", passing_layers(), env={"HF_HUB_OFFLINE": "true"}),
    }
    for name, image in images.items():
        registry.push(image.layout, "v1", f"kaudit/{name}")
    return images


def _ref(registry: Registry, name: str) -> list[str]:
    return [f"{registry.host}/kaudit/{name}:v1", "--insecure-registry", registry.host, "--no-cache"]


def test_key_signed_attestation_round_trip(pushed: dict[str, BuiltImage], registry: Registry, tmp_path: Path) -> None:
    private, public = _key_pair(tmp_path)
    attached = kaudit("attest", *_ref(registry, "good"), "--key", str(private))
    digest = pushed["good"].manifest_digest
    assert attached.returncode == 0 and f"@{digest}" in attached.stdout, attached.stderr
    # Debian's docker-registry has no referrers API: the tag schema index lists the artifact
    client = RegistryClient(Reference.parse(f"{registry.host}/kaudit/good:v1"), insecure=True)
    assert client.referrers(digest) is None
    (listed,) = client.tag_index(digest.replace(":", "-"))
    assert listed["artifactType"] == dsse.BUNDLE_TYPE
    assert listed["annotations"]["dev.sigstore.bundle.predicateType"] == attestation.PREDICATE_TYPE
    verified = kaudit("verify", "image", *_ref(registry, "good"), "--key", str(public))
    assert verified.returncode == 0 and "verified: kaudit kernel inventory attestation" in verified.stdout
    # the predicate is the inventory the webhook needs
    found = attestation.verify_image(client, digest, public_key_pem=public.read_bytes())
    (item,) = found.verified
    report = item.statement["predicate"]["report"]
    assert report["image"]["manifest_digest"] == digest and report["binaries"] and not found.refused
    other_key = tmp_path / "other"
    other_key.mkdir()
    _private, stranger = _key_pair(other_key)
    refused = kaudit("verify", "image", *_ref(registry, "good"), "--key", str(stranger))
    assert refused.returncode == 1 and "does not verify with this key" in refused.stderr
    unsigned = kaudit("verify", "image", *_ref(registry, "bad"), "--key", str(public))
    assert unsigned.returncode == 1 and "no verified attestation" in unsigned.stderr


def test_keyless_attestation_against_a_private_sigstore(pushed: dict[str, BuiltImage], registry: Registry,
                                                         tmp_path: Path) -> None:  # fmt: skip
    sigstore = FakeSigstore()
    root = sigstore.write_trust_root(tmp_path / "trusted_root.json")
    statement_file = tmp_path / "statement.json"
    written = kaudit("attest", *_ref(registry, "keyless"), "--statement-out", str(statement_file))
    assert written.returncode == 0, written.stderr
    statement = json.loads(statement_file.read_text())
    assert statement["subject"][0]["digest"]["sha256"] == pushed["keyless"].manifest_digest.split(":")[1]
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(sigstore.sign_dsse(statement, SIGNER)))
    assert kaudit("attest", *_ref(registry, "keyless"), "--bundle", str(bundle)).returncode == 0
    keyless = ["--identity", "https://github.com/kaudit-test/*", "--issuer", GITHUB, "--trust-config", str(root)]
    verified = kaudit("verify", "image", *_ref(registry, "keyless"), *keyless)
    assert verified.returncode == 0 and "kaudit kernel inventory" in verified.stdout, verified.stderr
    # the CI gate on the attested inventory: the policy's signers, trust root and rules
    policy = tmp_path / "policy.yaml"
    policy.write_text("apiVersion: kaudit.dev/v1\nkind: Policy\nname: attested\nfleet:\n  archs: [sm_80]\n"
                      "signers:\n  - issuer: https://token.actions.githubusercontent.com\n"
                      "    subject: https://github.com/kaudit-test/*\ntrust-config: trusted_root.json\n"
                      "rules:\n  KA203: {mode: audit}\n  KA201: {mode: warn}\n")  # fmt: skip
    pinned = [f"{registry.host}/kaudit/keyless@{pushed['keyless'].manifest_digest}", *_ref(registry, "keyless")[1:]]
    gated = kaudit("verify", "image", *pinned, "--policy", str(policy))
    assert gated.returncode == 0, gated.stdout + gated.stderr
    # image attestations can have signers of their own: the kernels' signers then do not count for them
    original = policy.read_text()
    others = "attestation-signers:\n  - issuer: https://x.example\n    subject: https://nobody/*\n"
    policy.write_text(original.replace("signers:\n", others + "signers:\n", 1))
    refused = kaudit("verify", "image", *pinned, "--policy", str(policy))
    assert refused.returncode == 1 and "not among the policy's trusted signers" in refused.stderr
    policy.write_text(original)
    strict = policy.read_text().replace("archs: [sm_80]", "archs: [sm_75]")
    policy.write_text(strict)
    failing = kaudit("verify", "image", *pinned, "--policy", str(policy))
    assert failing.returncode == 1 and "KA303" in failing.stdout and "sm_75" in failing.stdout
    wrong = kaudit("verify", "image", *_ref(registry, "keyless"), "--identity", "https://github.com/evil/*",
                   "--issuer", GITHUB, "--trust-config", str(root))  # fmt: skip
    assert wrong.returncode == 1 and "not among the policy's trusted signers" in wrong.stderr
    foreign = FakeSigstore().write_trust_root(tmp_path / "foreign_root.json")
    untrusted_root = kaudit("verify", "image", *_ref(registry, "keyless"), *keyless[:4], "--trust-config", str(foreign))
    assert untrusted_root.returncode == 1 and "does not verify" in untrusted_root.stderr
    # a bundle made for another image is refused by attest, and by verify if it was attached anyway
    refused = kaudit("attest", *_ref(registry, "good"), "--bundle", str(bundle))
    assert refused.returncode == 2 and "not this image" in refused.stderr
    client = RegistryClient(Reference.parse(f"{registry.host}/kaudit/bad:v1"), insecure=True, push=True)
    attestation.attach(
        client, pushed["bad"].manifest_digest, json.loads(bundle.read_text()), attestation.PREDICATE_TYPE
    )
    misplaced = kaudit("verify", "image", *_ref(registry, "bad"), *keyless)
    assert misplaced.returncode == 1 and "attestation is for another image digest" in misplaced.stderr


def test_cosign_signatures(pushed: dict[str, BuiltImage], registry: Registry, tmp_path: Path) -> None:
    """A cosign v3 bundle (a DSSE statement of predicate type cosign/sign/v1, attached as a referrer) verifies with
    the same trust policy; a legacy ``.sig`` tag is reported as not verifiable offline."""
    sigstore = FakeSigstore()
    root = sigstore.write_trust_root(tmp_path / "trusted_root.json")
    digest = pushed["cosign"].manifest_digest
    cosign = {"_type": dsse.STATEMENT_TYPE, "subject": [{"digest": {"sha256": digest[7:]}}],
              "predicateType": attestation.COSIGN_PREDICATE_TYPE, "predicate": {}}  # fmt: skip
    signed = sigstore.sign_dsse(cosign, SIGNER)
    client = RegistryClient(Reference.parse(f"{registry.host}/kaudit/cosign:v1"), insecure=True, push=True)
    attestation.attach(client, digest, signed, attestation.COSIGN_PREDICATE_TYPE)
    body, media_type, _ = client.manifest(digest)
    client.put_manifest(digest.replace(":", "-") + ".sig", body, media_type)  # stands in for a legacy signature
    keyless = ["--identity", "https://github.com/kaudit-test/*", "--issuer", GITHUB, "--trust-config", str(root)]
    verified = kaudit("verify", "image", *_ref(registry, "cosign"), *keyless)
    assert verified.returncode == 0 and f"verified: {attestation.COSIGN_PREDICATE_TYPE}" in verified.stdout
    assert "legacy cosign signature" in verified.stderr and "cannot be verified offline" in verified.stderr


def test_the_webhook_reads_attested_inventories(pushed: dict[str, BuiltImage], registry: Registry,
                                                tmp_path: Path) -> None:  # fmt: skip
    """An image the report store does not know is judged by its signed attestation; an unsigned one stays unknown."""
    from kaudit.policy.load import load_catalog, load_policy
    from webhook.attestations import AttestationSource
    from webhook.review import Reviewer
    from webhook.store import ReportStore

    private, public = _key_pair(tmp_path)
    for name in ("keyless", "bad"):  # the keyless image is the clean one (HF_HUB_OFFLINE=1); sign it with a key too
        assert kaudit("attest", *_ref(registry, name), "--key", str(private)).returncode == 0
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("apiVersion: kaudit.dev/v1\nkind: Policy\nname: t\nfleet:\n  archs: [sm_80]\n"
                           "rules:\n  KA203: {mode: audit}\n  KA201: {mode: warn}\n")  # fmt: skip
    catalog = load_catalog()
    policy = load_policy(policy_file, catalog)
    empty = tmp_path / "store"
    empty.mkdir()
    source = AttestationSource(policy, public.read_bytes(), frozenset({registry.host}))
    reviewer = Reviewer(policy, catalog, ReportStore(str(empty)), source)

    def admit(name: str) -> tuple[bool, str]:
        image = f"{registry.host}/kaudit/{name}@{pushed[name].manifest_digest}"
        decision = reviewer.review({"uid": "u", "namespace": "team", "object": {"kind": "Pod", "spec": {
            "containers": [{"name": "c", "image": image}]}}})  # fmt: skip
        return decision.allowed, decision.message

    allowed, message = admit("keyless")
    assert allowed, message
    allowed, message = admit("bad")
    assert not allowed and "KA303" in message and "opt/app/kern_sm_90a.cubin" in message
    allowed, message = admit("cosign")  # signed only by cosign: no kaudit inventory attested
    assert not allowed and "no kaudit scan report" in message


def test_keyless_signing_fails_cleanly_without_a_sigstore(pushed: dict[str, BuiltImage], registry: Registry,
                                                          tmp_path: Path) -> None:  # fmt: skip
    """Keyless signing needs Fulcio and Rekor; here none is reachable. The identity token is checked first, then the
    private deployment the trust config names is contacted (127.0.0.1:9, nothing listens): each failure is one
    clear line."""
    import jwt

    sigstore = FakeSigstore()
    urls = [{"url": "http://127.0.0.1:9", "majorApiVersion": 1, "validFor": {"start": "2020-01-01T00:00:00Z"},
             "operator": "kaudit-test"}]  # fmt: skip
    config = tmp_path / "trust_config.json"
    config.write_text(json.dumps({
        "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
        "trustedRoot": sigstore.trusted_root(),
        "signingConfig": {"mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json", "caUrls": urls,
                          "oidcUrls": urls, "rekorTlogUrls": urls, "tsaUrls": [],
                          "rekorTlogConfig": {"selector": "ANY"}, "tsaConfig": {"selector": "ANY"}},
    }))  # fmt: skip
    bad_token = kaudit("attest", *_ref(registry, "bad"), "--keyless", "--identity-token", "not-a-jwt",
                       "--trust-config", str(config))  # fmt: skip
    assert bad_token.returncode == 2 and "keyless signing failed" in bad_token.stderr
    assert "Traceback" not in bad_token.stderr
    claims = {"iss": GITHUB, "aud": "sigstore", "sub": SIGNER, "email": "ci@kaudit.test", "iat": 1700000000,
              "nbf": 1700000000, "exp": 4102444800}  # fmt: skip
    token = jwt.encode(claims, "k" * 32, algorithm="HS256")
    unreachable = kaudit("attest", *_ref(registry, "bad"), "--keyless", "--identity-token", token,
                         "--trust-config", str(config))  # fmt: skip
    assert unreachable.returncode == 2 and "keyless signing failed" in unreachable.stderr, unreachable.stderr
    assert "127.0.0.1" in unreachable.stderr and "signingCert" in unreachable.stderr  # it asked the private Fulcio
    assert "Traceback" not in unreachable.stderr
