"""DSSE envelopes in Sigstore bundles v0.3: signed with a local EC key and checked with ``cryptography`` (the
air-gapped case: the bundle carries ``publicKey.hint``, no certificate), or checked keylessly with sigstore-python
against a trust root and trusted signers. Both yield the verified in-toto statement."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kaudit.signing.trust import SignatureError, SignerPolicy, load_verifier

if TYPE_CHECKING:
    from kaudit.policy.model import TrustedIdentity

PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


def _pae(payload: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)


def sign_with_key(statement: dict[str, Any], private_key_pem: bytes) -> dict[str, Any]:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"the signing key is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SignatureError("the signing key must be an EC key (P-256 or P-384)")
    payload = json.dumps(statement, sort_keys=True).encode()
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    signature = key.sign(_pae(payload), ec.ECDSA(hashes.SHA256()))
    return {
        "mediaType": BUNDLE_TYPE,
        "verificationMaterial": {"publicKey": {"hint": base64.b64encode(hashlib.sha256(public).digest()).decode()}},
        "dsseEnvelope": {"payload": base64.b64encode(payload).decode(), "payloadType": PAYLOAD_TYPE,
                         "signatures": [{"sig": base64.b64encode(signature).decode()}]},
    }  # fmt: skip


def sign_keyless(statement: dict[str, Any], identity_token: str | None, trust_config: str | None) -> dict[str, Any]:
    """Sign with Sigstore: a short-lived Fulcio certificate for the OIDC identity, a Rekor entry. Needs the network
    and an identity (``identity_token``, or ambient credentials such as GitHub Actions' ``id-token: write``);
    ``trust_config`` names a private Sigstore deployment's ClientTrustConfig (default: the public-good instance)."""
    from pathlib import Path

    from sigstore.dsse import Statement
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import ClientTrustConfig
    from sigstore.oidc import IdentityToken, detect_credential
    from sigstore.sign import SigningContext

    try:
        token = identity_token or detect_credential()
        if not token:
            raise SignatureError("keyless signing needs an OIDC identity: pass --identity-token, or run where "
                                 "ambient credentials exist (GitHub Actions with id-token: write)")  # fmt: skip
        identity = IdentityToken(token)
        config = (ClientTrustConfig.from_json(Path(trust_config).read_text(encoding="utf-8")) if trust_config
                  else ClientTrustConfig.production())  # fmt: skip
        with SigningContext.from_trust_config(config).signer(identity) as signer:
            bundle = signer.sign_dsse(Statement(json.dumps(statement, sort_keys=True).encode()))
    except SignatureError:
        raise
    except (SigstoreError, OSError, ValueError) as exc:
        raise SignatureError(f"keyless signing failed: {exc}") from exc
    signed: dict[str, Any] = json.loads(bundle.to_json())
    return signed


def parse_bundle(text: str | bytes, what: str) -> dict[str, Any]:
    try:
        bundle: Any = json.loads(text)
    except ValueError as exc:
        raise SignatureError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(bundle, dict) or not isinstance(bundle.get("dsseEnvelope"), dict):
        raise SignatureError(f"{what} is not a Sigstore bundle with a DSSE envelope")
    return bundle


def verify_with_key(bundle: dict[str, Any], public_key_pem: bytes) -> dict[str, Any]:
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
            return _statement(payload)
        except InvalidSignature:
            continue
    raise SignatureError("the signature does not verify with this key")


def verify_keyless(
    bundle: dict[str, Any], signers: Sequence[TrustedIdentity], trust_config: str | None
) -> dict[str, Any]:
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
    return _statement(payload)


def _statement(payload: bytes) -> dict[str, Any]:
    try:
        statement: Any = json.loads(payload)
    except ValueError as exc:
        raise SignatureError(f"the signed payload is not JSON: {exc}") from exc
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise SignatureError("the signed payload is not an in-toto Statement v1")
    return statement
