"""kaudit's attestation of an image's kernel inventory, attached to the image in its registry, found and verified.

The attestation is an in-toto Statement — subject: the image's manifest digest; ``predicateType``
:data:`PREDICATE_TYPE`; predicate: kaudit's admission report of the image (every GPU binary with its layer,
package and architecture summaries, runtime caches, first-use signals) — in a DSSE envelope inside a Sigstore
bundle v0.3. It is stored as cosign v3 stores its bundles: an OCI 1.1 artifact manifest (``artifactType`` the bundle
media type, the bundle as its one layer, ``subject`` the image manifest). Registries with the referrers API index it
themselves; for those without (CNCF distribution 2.x, Debian's docker-registry) the referrers tag schema is kept up
to date: an OCI index tagged ``sha256-<hex>`` listing the referrers.

``verify_image`` finds every bundle referring to the image, verifies it (a local key, or keyless against a trust root
and trusted signers), and refuses one whose statement names another image. Cosign v3 image signatures
(``https://sigstore.dev/cosign/sign/v1``) are verified the same way; legacy cosign ``.sig`` signatures are reported
as present but not verifiable offline (they carry no inclusion proof).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kaudit import __version__
from kaudit.errors import Error
from kaudit.inventory import ScanReport
from kaudit.signing import dsse
from kaudit.signing.trust import SignatureError
from kaudit.sources.interface import SourceError, sha256_digest
from kaudit.sources.registry import OCI_INDEX, RegistryClient

if TYPE_CHECKING:
    from kaudit.policy.model import TrustedIdentity

PREDICATE_TYPE = "https://kaudit.dev/attestation/kernel-inventory/v1"
COSIGN_PREDICATE_TYPE = "https://sigstore.dev/cosign/sign/v1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"


def statement(report: ScanReport) -> dict[str, Any]:
    """The in-toto statement kaudit attests for a scanned registry image."""
    from kaudit.formats.admission import FORMAT, VERSION, compact
    from kaudit.serialize import to_jsonable

    if report.image is None:
        raise SignatureError("only an image can be attested")
    name = report.image.reference.split("@", 1)[0]
    return {
        "_type": dsse.STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": report.image.manifest_digest.split(":", 1)[1]}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "kaudit": __version__,
            "format": FORMAT,
            "version": VERSION,
            "report": to_jsonable(compact(report)),
        },
    }


def attach(client: RegistryClient, image_digest: str, bundle: dict[str, Any], predicate_type: str) -> str:
    """Push ``bundle`` as an artifact referring to the image manifest ``image_digest``; returns its digest."""
    subject_body, subject_type, _digest = client.manifest(image_digest)
    blob = json.dumps(bundle).encode()
    layer = client.put_blob(blob)
    config = client.put_blob(b"{}")
    annotations = {"dev.sigstore.bundle.content": "dsse-envelope", "dev.sigstore.bundle.predicateType": predicate_type}
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": dsse.BUNDLE_TYPE,
        "config": {"mediaType": EMPTY_CONFIG, "digest": config, "size": 2},
        "layers": [{"mediaType": dsse.BUNDLE_TYPE, "digest": layer, "size": len(blob)}],
        "subject": {"mediaType": subject_type, "digest": image_digest, "size": len(subject_body)},
        "annotations": annotations,
    }).encode()  # fmt: skip
    digest = client.put_manifest(sha256_digest(manifest), manifest, OCI_MANIFEST)
    if client.referrers(image_digest) is None:  # no referrers API: keep the tag schema's index current
        tag = image_digest.replace(":", "-")
        listed = [d for d in client.tag_index(tag) if d.get("digest") != digest]
        listed.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest),
                       "artifactType": dsse.BUNDLE_TYPE, "annotations": annotations})  # fmt: skip
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": listed}).encode()
        client.put_manifest(tag, index, OCI_INDEX)
    return digest


def subject_digests(statement: Any) -> list[str]:
    """The sha256 digests an in-toto statement's subjects name."""
    listed = statement.get("subject") if isinstance(statement, dict) else None
    return [str(s["digest"]["sha256"]) for s in listed if isinstance(s, dict) and isinstance(s.get("digest"), dict)
            and "sha256" in s["digest"]] if isinstance(listed, list) else []  # fmt: skip


def subjects(bundle: dict[str, Any]) -> list[str]:
    """The sha256 digests an (unverified) bundle's statement names: to refuse attaching it to another image."""
    import base64

    try:
        return subject_digests(json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise SignatureError(f"the bundle's payload is not an in-toto statement: {exc}") from exc


@dataclass(frozen=True)
class Verified:
    predicate_type: str
    statement: dict[str, Any]
    artifact: str
    """The digest of the referring artifact manifest."""


@dataclass(frozen=True)
class Found:
    verified: list[Verified]
    refused: list[str]
    """Bundles that refer to the image but do not verify, each with the reason."""
    legacy_signature: bool
    """A cosign ``sha256-<hex>.sig`` signature exists: it carries no inclusion proof and cannot be verified offline."""


def _referring_bundles(client: RegistryClient, image_digest: str) -> list[dict[str, Any]]:
    descriptors = client.referrers(image_digest)
    if descriptors is None:
        descriptors = client.tag_index(image_digest.replace(":", "-"))
    return [d for d in descriptors if d.get("artifactType") == dsse.BUNDLE_TYPE and isinstance(d.get("digest"), str)]


def verify_image(
    client: RegistryClient,
    image_digest: str,
    *,
    public_key_pem: bytes | None = None,
    signers: Sequence[TrustedIdentity] = (),
    trust_config: str | None = None,
) -> Found:
    """Every bundle referring to ``image_digest``, verified or refused with a reason."""
    verified: list[Verified] = []
    refused: list[str] = []
    for descriptor in _referring_bundles(client, image_digest):
        artifact = descriptor["digest"]
        try:
            body, _media_type, _digest = client.manifest(artifact)
            manifest = json.loads(body)
            if not isinstance(manifest, dict) or not isinstance(manifest.get("subject"), dict):
                raise SignatureError("the artifact is not an OCI manifest with a subject")
            if manifest["subject"].get("digest") != image_digest:
                raise SignatureError("the artifact manifest's subject is another image")
            layers = manifest.get("layers")
            (layer,) = [e for e in layers if isinstance(e, dict) and e.get("mediaType") == dsse.BUNDLE_TYPE] if \
                isinstance(layers, list) else []  # fmt: skip
            bundle = dsse.parse_bundle(client.blob(layer["digest"], "attestation bundle"), f"bundle in {artifact}")
            if public_key_pem is not None:
                signed = dsse.verify_with_key(bundle, public_key_pem)
            else:
                signed = dsse.verify_keyless(bundle, signers, trust_config)
            digests = subject_digests(signed)
            if image_digest.split(":", 1)[1] not in digests:
                raise SignatureError(f"the attestation is for another image digest ({', '.join(digests)})")
            verified.append(Verified(str(signed.get("predicateType")), signed, artifact))
        except (SignatureError, SourceError, ValueError, KeyError, TypeError, AttributeError) as exc:
            reason = exc.diagnostics() if isinstance(exc, Error) else f"malformed artifact: {exc}"
            refused.append(f"{artifact}: {reason}")
    legacy = client.exists(image_digest.replace(":", "-") + ".sig")
    return Found(verified, refused, legacy)
