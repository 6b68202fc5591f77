"""Kernel inventories from signed kaudit attestations in the image's registry, for images the report store lacks.

Enabled by ``KAUDIT_ATTESTATIONS=registry``. An attestation counts only when it verifies — with the EC public key in
``KAUDIT_ATTESTATION_KEY``, or keylessly against the policy's signers and trust root — and its statement names the
admitted digest. Registry calls are bounded (2 s to connect, 5 s to read) to stay inside the API server's
``timeoutSeconds``; results, found or not, are cached per digest for ``KAUDIT_ATTESTATION_TTL`` seconds (300).
Plain-HTTP registries are named in ``KAUDIT_INSECURE_REGISTRIES`` (comma-separated).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

from kaudit.errors import Error, UsageError
from kaudit.formats.admission import read_admission_report
from kaudit.inventory import ScanReport
from kaudit.policy.model import Policy
from kaudit.signing.attestation import PREDICATE_TYPE, verify_image
from kaudit.sources.registry import Reference, RegistryClient

log = logging.getLogger("kaudit.webhook")


class AttestationSource:
    def __init__(self, policy: Policy, public_key_pem: bytes | None = None, insecure: frozenset[str] = frozenset(),
                 ttl_s: float = 300.0) -> None:  # fmt: skip
        self.policy, self.public_key_pem, self.insecure, self.ttl_s = policy, public_key_pem, insecure, ttl_s
        self._cache: dict[str, tuple[float, ScanReport | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls, policy: Policy) -> AttestationSource | None:
        if os.environ.get("KAUDIT_ATTESTATIONS", "") != "registry":
            return None
        key_path = os.environ.get("KAUDIT_ATTESTATION_KEY")
        key = None
        try:
            if key_path:
                with open(key_path, "rb") as handle:
                    key = handle.read()
            ttl = float(os.environ.get("KAUDIT_ATTESTATION_TTL", "300"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"attestation settings: {exc}") from exc
        insecure = frozenset(h for h in os.environ.get("KAUDIT_INSECURE_REGISTRIES", "").split(",") if h)
        return cls(policy, key, insecure, ttl)

    def get(self, image: str, digest: str) -> ScanReport | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
            if cached is not None and now - cached[0] < self.ttl_s:
                return cached[1]
        report = self._fetch(image, digest)
        with self._lock:
            self._cache[digest] = (now, report)
        return report

    def _fetch(self, image: str, digest: str) -> ScanReport | None:
        try:
            reference = Reference.parse(image)
            client = RegistryClient(reference, insecure=reference.registry in self.insecure, timeout=(2.0, 5.0))
            policy = self.policy
            found = verify_image(client, digest, public_key_pem=self.public_key_pem,
                                 signers=policy.image_signers, trust_config=policy.trust_config)  # fmt: skip
        except Error as exc:
            log.warning("attestations for %s: %s", image, exc.diagnostics())
            return None
        for reason in found.refused:
            log.warning("attestation for %s refused: %s", image, reason)
        for item in found.verified:
            if item.predicate_type != PREDICATE_TYPE:
                continue
            try:
                report = read_admission_report(json.dumps(item.statement["predicate"]))
            except (Error, KeyError, TypeError) as exc:
                log.warning("attestation %s for %s holds no readable inventory: %s", item.artifact, image, exc)
                continue
            if report.image is not None and report.image.manifest_digest == digest:
                return report
        return None
