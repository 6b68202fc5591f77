"""Verifying Sigstore bundles offline: the trust root, and an identity policy of anchored regular expressions.

sigstore-python verifies the certificate chain to the trust root's CA, the embedded SCT against its CT logs, the
Rekor inclusion proof, checkpoint and SignedEntryTimestamp against its transparency logs, and the signature; kaudit
adds which signers it trusts. Its own ``Identity`` policy matches exactly; a policy lists signers as an issuer and a
subject glob (a GitHub workflow URI with wildcards), so kaudit's policy full-matches both — never a prefix match,
which would let ``https://github.com/org/*`` through as ``https://github.com/org.attacker.com``.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaudit.errors import Error

if TYPE_CHECKING:
    from cryptography.x509 import Certificate
    from sigstore.verify import Verifier

    from kaudit.policy.model import TrustedIdentity

ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"
ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"


class SignatureError(Error):
    """A signature is missing, malformed or does not verify; the message says which and why."""


def load_verifier(trust_config: str | None) -> Verifier:
    """A verifier for the trust root in ``trust_config`` (a ``trusted_root.json`` or a ClientTrustConfig, as
    ``sigstore --trust-config`` takes), or for the public-good instance's root shipped with sigstore-python (no
    network: its TUF metadata is never refreshed here)."""
    from sigstore.models import TrustedRoot
    from sigstore.verify import Verifier

    if trust_config is None:
        return Verifier.production(offline=True)
    try:
        document: Any = json.loads(Path(trust_config).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SignatureError(f"cannot read trust config {trust_config}: {exc}") from exc
    root = document.get("trustedRoot", document) if isinstance(document, dict) else None
    try:
        from sigstore_models.trustroot.v1 import TrustedRoot as TrustedRootMessage

        return Verifier(trusted_root=TrustedRoot(TrustedRootMessage.from_json(json.dumps(root))))
    except Exception as exc:  # pydantic and protobuf errors: a trust root that does not parse
        raise SignatureError(f"{trust_config} is not a Sigstore trusted root or client trust config: {exc}") from exc


def _der_utf8(value: bytes) -> str:
    """A DER UTF8String (tag 0x0C) with short or long-form length."""
    if len(value) < 2 or value[0] != 0x0C:
        raise ValueError("not a UTF8String")
    length, offset = value[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, offset = int.from_bytes(value[2 : 2 + count], "big"), 2 + count
    if offset + length != len(value):
        raise ValueError("UTF8String length does not match")
    return value[offset:].decode("utf-8")


def certificate_issuer(cert: Certificate) -> str | None:
    from cryptography import x509

    for oid, decode in ((ISSUER_V2, _der_utf8), (ISSUER_V1, lambda raw: raw.decode("utf-8"))):
        try:
            extension = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
        except x509.ExtensionNotFound:
            continue
        value = extension.value
        raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
        try:
            return decode(raw)
        except (ValueError, UnicodeDecodeError):
            return None
    return None


def certificate_identities(cert: Certificate) -> list[str]:
    from cryptography import x509

    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*names.get_values_for_type(x509.UniformResourceIdentifier), *names.get_values_for_type(x509.RFC822Name)]


@dataclass(frozen=True)
class SignerPolicy:
    """Accepts a certificate whose issuer full-matches a signer's issuer and one of whose SANs full-matches that
    signer's subject glob (sigstore-python's ``policy`` protocol: ``verify(cert)`` raises on mismatch)."""

    signers: Sequence[TrustedIdentity]

    def verify(self, cert: Certificate) -> None:
        from sigstore.errors import VerificationError

        issuer = certificate_issuer(cert)
        identities = certificate_identities(cert)
        for signer in self.signers:
            if (
                issuer is not None
                and re.fullmatch(fnmatch.translate(signer.issuer), issuer)
                and any(re.fullmatch(fnmatch.translate(signer.subject), identity) for identity in identities)
            ):
                return
        raise VerificationError(f"signer {', '.join(identities) or 'without identity'} (issuer {issuer}) is not "
                                "among the policy's trusted signers")  # fmt: skip
