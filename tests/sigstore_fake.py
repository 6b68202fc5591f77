"""A private Sigstore for the tests, with no network: a CA standing in for Fulcio, a CT log key (embedded SCTs), a
Rekor key (checkpoints and SignedEntryTimestamps), and a ``trusted_root.json`` naming them — the recipe of
admission-and-signing.md §2.7. sigstore-python verifies what it signs exactly as it verifies the public good
instance's bundles.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

NOW = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
ECDSA = ec.ECDSA(hashes.SHA256())
DER = serialization.Encoding.DER
GITHUB = "https://token.actions.githubusercontent.com"
DSSE_TYPE = "application/vnd.in-toto+json"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _der_length(length: int) -> bytes:
    if length < 128:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _utf8_string(text: str) -> bytes:
    raw = text.encode()
    return b"\x0c" + _der_length(len(raw)) + raw


def pae(payload_type: str, payload: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


@dataclass
class FakeSigstore:
    """One private instance. ``ca``, ``ct`` and ``rekor`` can be swapped for foreign keys to build bundles that must
    fail verification."""

    ca: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    ct: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    rekor: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def __post_init__(self) -> None:
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kaudit-test"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "kaudit test fulcio")])  # fmt: skip
        public = self.ca.public_key()
        self.ca_cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
                        .serial_number(1).not_valid_before(NOW - datetime.timedelta(days=1))
                        .not_valid_after(NOW + datetime.timedelta(days=3650))
                        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
                        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                       critical=True)
                        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
                        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
                        .sign(self.ca, hashes.SHA256()))  # fmt: skip

    # -- the trust root ---------------------------------------------------------------------------------------
    def trusted_root(self) -> dict[str, Any]:
        def log(key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, Any]:
            return {"baseUrl": url, "hashAlgorithm": "SHA2_256",
                    "publicKey": {"rawBytes": b64(_spki(key)), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                                  "validFor": {"start": "2020-01-01T00:00:00Z"}},
                    "logId": {"keyId": b64(hashlib.sha256(_spki(key)).digest())}}  # fmt: skip

        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(self.rekor, "https://rekor.kaudit.test")],
            "ctlogs": [log(self.ct, "https://ctlog.kaudit.test")],
            "certificateAuthorities": [{
                "subject": {"organization": "kaudit-test", "commonName": "kaudit test fulcio"},
                "uri": "https://fulcio.kaudit.test",
                "certChain": {"certificates": [{"rawBytes": b64(self.ca_cert.public_bytes(DER))}]},
                "validFor": {"start": "2020-01-01T00:00:00Z"},
            }],
            "timestampAuthorities": [],
        }  # fmt: skip

    def write_trust_root(self, path: Path) -> Path:
        path.write_text(json.dumps(self.trusted_root()))
        return path

    # -- certificates ---------------------------------------------------------------------------------------------
    def _leaf(self, key: ec.EllipticCurvePrivateKey, identity: str, issuer: str) -> x509.Certificate:
        san: x509.GeneralName = (x509.UniformResourceIdentifier(identity) if "://" in identity
                                 else x509.RFC822Name(identity))  # fmt: skip
        builder = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.ca_cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(NOW - datetime.timedelta(minutes=1))
                   .not_valid_after(NOW + datetime.timedelta(minutes=10))
                   .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca.public_key()),
                                  critical=False)
                   .add_extension(x509.SubjectAlternativeName([san]), critical=True)
                   .add_extension(x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.57264.1.1"),
                                                             issuer.encode()), critical=False)
                   .add_extension(x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.57264.1.8"),
                                                             _utf8_string(issuer)), critical=False))  # fmt: skip
        precert = builder.sign(self.ca, hashes.SHA256())
        tbs = precert.tbs_certificate_bytes
        timestamp = int(NOW.timestamp() * 1000)
        ct_id = hashlib.sha256(_spki(self.ct)).digest()
        ca_hash = hashlib.sha256(_spki(self.ca)).digest()
        signed = struct.pack("!BBQH", 0, 0, timestamp, 1) + ca_hash + len(tbs).to_bytes(3, "big") + tbs + b"\0\0"
        signature = self.ct.sign(signed, ECDSA)
        sct = b"\0" + ct_id + struct.pack("!QHBBH", timestamp, 0, 4, 3, len(signature)) + signature
        listing = struct.pack("!HH", len(sct) + 2, len(sct)) + sct
        value = b"\x04" + _der_length(len(listing)) + listing
        return builder.add_extension(x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2"), value),
                                     critical=False).sign(self.ca, hashes.SHA256())  # fmt: skip

    # -- transparency log -----------------------------------------------------------------------------------------
    def _entry(self, body: bytes, kind: str, integrated_time: int) -> dict[str, Any]:
        log_id = hashlib.sha256(_spki(self.rekor)).digest()
        root = hashlib.sha256(b"\0" + body).digest()
        note = f"rekor.kaudit.test - 1\n1\n{b64(root)}\n"
        checkpoint = (
            note + "\n\u2014 rekor.kaudit.test " + b64(log_id[:4] + self.rekor.sign(note.encode(), ECDSA)) + "\n"
        )
        promise = self.rekor.sign(rfc8785.dumps({"body": b64(body), "integratedTime": integrated_time,
                                                 "logID": log_id.hex(), "logIndex": 0}), ECDSA)  # fmt: skip
        return {"logIndex": "0", "logId": {"keyId": b64(log_id)}, "kindVersion": {"kind": kind, "version": "0.0.1"},
                "integratedTime": str(integrated_time), "inclusionPromise": {"signedEntryTimestamp": b64(promise)},
                "inclusionProof": {"logIndex": "0", "rootHash": b64(root), "treeSize": "1", "hashes": [],
                                   "checkpoint": {"envelope": checkpoint}},
                "canonicalizedBody": b64(body)}  # fmt: skip

    def _bundle(self, cert: x509.Certificate, entry: dict[str, Any], content: dict[str, Any]) -> dict[str, Any]:
        return {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                "verificationMaterial": {"certificate": {"rawBytes": b64(cert.public_bytes(DER))},
                                         "tlogEntries": [entry]},
                **content}  # fmt: skip

    def sign_artifact(self, data: bytes, identity: str, issuer: str = GITHUB) -> dict[str, Any]:
        """A message-signature bundle over ``data`` (what ``sigstore sign`` writes as ``<file>.sigstore``)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._leaf(key, identity, issuer)
        signature = key.sign(data, ECDSA)
        pem = cert.public_bytes(serialization.Encoding.PEM)
        body = json.dumps({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(data).hexdigest()}},
            "signature": {"content": b64(signature), "publicKey": {"content": b64(pem)}}}}).encode()  # fmt: skip
        return self._bundle(cert, self._entry(body, "hashedrekord", int(NOW.timestamp())), {"messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": b64(hashlib.sha256(data).digest())},
            "signature": b64(signature)}})  # fmt: skip

    def sign_dsse(self, statement: dict[str, Any], identity: str, issuer: str = GITHUB) -> dict[str, Any]:
        """A DSSE bundle over an in-toto statement."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._leaf(key, identity, issuer)
        payload = json.dumps(statement).encode()
        signature = key.sign(pae(DSSE_TYPE, payload), ECDSA)
        pem = cert.public_bytes(serialization.Encoding.PEM)
        body = json.dumps({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
            "envelopeHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
            "signatures": [{"signature": b64(signature), "verifier": b64(pem)}]}}).encode()  # fmt: skip
        return self._bundle(cert, self._entry(body, "dsse", int(NOW.timestamp())), {"dsseEnvelope": {
            "payload": b64(payload), "payloadType": DSSE_TYPE, "signatures": [{"sig": b64(signature)}]}})  # fmt: skip
