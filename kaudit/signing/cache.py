"""Signed manifests of kernel cache directories (a pre-warmed Triton cache, a Kernel Hub cache), in the OpenSSF
model-signing format, so that a cache image or volume can be checked before pods use it.

The manifest is an in-toto Statement: ``predicateType`` ``https://model_signing/signature/v1.0``, one subject (the
directory's name and the sha256 over the concatenated raw per-file digests in sorted path order), and the predicate's
``resources`` listing every file with its sha256. It travels in a DSSE envelope inside a Sigstore bundle v0.3:
signed with a local EC P-256 key (``verificationMaterial.publicKey``, for air-gapped clusters; verified here with
``cryptography``, since sigstore-python is keyless-only), or keyless by Sigstore (verified with sigstore-python
against the trust root and the policy's signers).

Symbolic links are followed when they stay inside the directory (hub snapshots point into ``blobs/``) and refused
when they leave it; the signature file itself is not hashed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaudit.signing.trust import SignatureError, SignerPolicy, load_verifier

if TYPE_CHECKING:
    from kaudit.policy.model import TrustedIdentity

PREDICATE_TYPE = "https://model_signing/signature/v1.0"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SIGNATURE_NAME = "kaudit-cache.sig"
_CHUNK = 1 << 20


def _pae(payload: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)


def file_digests(directory: Path, ignore: Sequence[Path] = ()) -> dict[str, str]:
    """Relative path (``/``-separated) → sha256 hex of every regular file under ``directory``."""
    root = directory.resolve()
    skip = {p.resolve() for p in ignore}
    digests: dict[str, str] = {}
    for current, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(current, d))]:
            path = Path(current) / name
            real = path.resolve()
            if real in skip or path in skip:
                continue
            if real != root and root not in real.parents:
                raise SignatureError(f"{path} links outside {directory}; a signed cache must be self-contained")
            if real.is_dir():
                continue  # a link to a directory inside the cache: its files are hashed where they live
            if not real.is_file():
                raise SignatureError(f"{path} is not a regular file")
            digest = hashlib.sha256()
            with open(real, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
            digests[path.relative_to(root).as_posix()] = digest.hexdigest()
    return digests


def statement(directory: Path, digests: dict[str, str]) -> dict[str, Any]:
    combined = hashlib.sha256(b"".join(bytes.fromhex(digests[name]) for name in sorted(digests))).hexdigest()
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": directory.resolve().name, "digest": {"sha256": combined}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": True,
                "ignore_paths": [SIGNATURE_NAME],
            },
            "resources": [{"name": name, "algorithm": "sha256", "digest": digests[name]} for name in sorted(digests)],
        },
    }


def default_signature(directory: Path) -> Path:
    return directory / SIGNATURE_NAME


def sign_with_key(directory: Path, private_key_pem: bytes, signature: Path) -> dict[str, Any]:
    """Sign ``directory``'s manifest with a local EC key; writes and returns the bundle."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"the signing key is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SignatureError("the signing key must be an EC key (P-256 or P-384)")
    payload = json.dumps(statement(directory, file_digests(directory, [signature])), sort_keys=True).encode()
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    bundle = {
        "mediaType": BUNDLE_TYPE,
        "verificationMaterial": {"publicKey": {"hint": base64.b64encode(hashlib.sha256(public).digest()).decode()}},
        "dsseEnvelope": {"payload": base64.b64encode(payload).decode(), "payloadType": PAYLOAD_TYPE,
                         "signatures": [{"sig": base64.b64encode(key.sign(_pae(payload),
                                                                          ec.ECDSA(hashes.SHA256()))).decode()}]},
    }  # fmt: skip
    signature.write_text(json.dumps(bundle, indent=2) + "\n")
    return bundle


def _read_bundle(signature: Path) -> dict[str, Any]:
    try:
        bundle: Any = json.loads(signature.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SignatureError(f"cannot read the signature {signature}: {exc}") from exc
    if not isinstance(bundle, dict) or not isinstance(bundle.get("dsseEnvelope"), dict):
        raise SignatureError(f"{signature} is not a Sigstore bundle with a DSSE envelope")
    return bundle


def _payload_with_key(bundle: dict[str, Any], public_key_pem: bytes) -> bytes:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except ValueError as exc:
        raise SignatureError(f"the verification key is not a PEM public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SignatureError("the verification key must be an EC public key")
    envelope = bundle["dsseEnvelope"]
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = [base64.b64decode(s["sig"], validate=True) for s in envelope["signatures"]]
        payload_type = envelope["payloadType"]
    except (KeyError, TypeError, ValueError) as exc:
        raise SignatureError(f"malformed DSSE envelope: {exc}") from exc
    if payload_type != PAYLOAD_TYPE:
        raise SignatureError(f"the envelope holds {payload_type!r}, not an in-toto statement")
    for signature in signatures:
        try:
            key.verify(signature, _pae(payload), ec.ECDSA(hashes.SHA256()))
            return payload
        except InvalidSignature:
            continue
    raise SignatureError("the signature does not verify with this key")


def _payload_keyless(bundle: dict[str, Any], signers: Sequence[TrustedIdentity], trust_config: str | None) -> bytes:
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle

    if not signers:
        raise SignatureError("no trusted signer given (--identity and --issuer, or a policy's signers)")
    try:
        payload_type, payload = load_verifier(trust_config).verify_dsse(Bundle.from_json(json.dumps(bundle)),
                                                                        SignerPolicy(signers))  # fmt: skip
    except SigstoreError as exc:
        raise SignatureError(f"the signature does not verify: {exc}") from exc
    if payload_type != PAYLOAD_TYPE:
        raise SignatureError(f"the envelope holds {payload_type!r}, not an in-toto statement")
    return payload


def verify(
    directory: Path,
    signature: Path,
    *,
    public_key_pem: bytes | None = None,
    signers: Sequence[TrustedIdentity] = (),
    trust_config: str | None = None,
) -> dict[str, str]:
    """Check the signature, then every file against the signed manifest; returns the verified digests. Raises
    :class:`SignatureError` naming what does not match."""
    bundle = _read_bundle(signature)
    if public_key_pem is not None:
        payload = _payload_with_key(bundle, public_key_pem)
    else:
        payload = _payload_keyless(bundle, signers, trust_config)
    try:
        signed: Any = json.loads(payload)
        resources = {r["name"]: r["digest"] for r in signed["predicate"]["resources"] if r["algorithm"] == "sha256"}
        (subject,) = signed["subject"]
        claimed = subject["digest"]["sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"the signed statement is not a model-signing manifest: {exc}") from exc
    if signed.get("predicateType") != PREDICATE_TYPE:
        raise SignatureError(f"the signed statement is a {signed.get('predicateType')!r}, not a {PREDICATE_TYPE}")
    if statement(directory, resources)["subject"][0]["digest"]["sha256"] != claimed:
        raise SignatureError("the signed manifest is inconsistent: its resources do not add up to its subject digest")
    actual = file_digests(directory, [signature])
    problems = [
        f"{name}: changed" for name in sorted(actual.keys() & resources.keys()) if actual[name] != resources[name]
    ]
    problems += [f"{name}: not in the signed manifest" for name in sorted(actual.keys() - resources.keys())]
    problems += [f"{name}: missing" for name in sorted(resources.keys() - actual.keys())]
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise SignatureError(f"{directory} does not match its signed manifest: {shown}")
    return actual
