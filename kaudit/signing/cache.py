"""Signed manifests of kernel cache directories (a pre-warmed Triton cache, a Kernel Hub cache), in the OpenSSF
model-signing format, so that a cache image or volume can be checked before pods use it.

The manifest is an in-toto Statement: ``predicateType`` ``https://model_signing/signature/v1.0``, one subject (the
directory's name and the sha256 over the concatenated raw per-file digests in sorted path order), and the predicate's
``resources`` listing every file with its sha256. It travels in a DSSE envelope inside a Sigstore bundle v0.3:
signed with a local EC P-256 key (``verificationMaterial.publicKey``, for air-gapped clusters; verified here with
``cryptography``, since sigstore-python is keyless-only), or keyless by Sigstore (verified with sigstore-python
against the trust root and the policy's signers).

Links to files are followed when they stay inside the directory (hub snapshots point into ``blobs/``) and refused
when they leave it; links to directories are refused (one could be re-pointed after signing without changing a
file); the signature file itself is not hashed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaudit.signing import dsse
from kaudit.signing.trust import SignatureError

if TYPE_CHECKING:
    from kaudit.policy.model import TrustedIdentity

PREDICATE_TYPE = "https://model_signing/signature/v1.0"
SIGNATURE_NAME = "kaudit-cache.sig"
_CHUNK = 1 << 20


def file_digests(directory: Path, ignore: Sequence[Path] = ()) -> dict[str, str]:
    """Relative path (``/``-separated) → sha256 hex of every regular file under ``directory``."""
    root = directory.resolve()
    skip = {p.resolve() for p in ignore}
    digests: dict[str, str] = {}
    for current, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        linked_dirs = [d for d in dirs if os.path.islink(os.path.join(current, d))]
        if linked_dirs:
            # a directory link could be pointed elsewhere after signing without changing any file's digest
            raise SignatureError(f"{Path(current) / linked_dirs[0]} links a directory; a signed cache may link files "
                                 "only")  # fmt: skip
        for name in sorted(files):
            path = Path(current) / name
            try:
                real = path.resolve(strict=True)
            except (OSError, RuntimeError) as exc:
                raise SignatureError(f"{path} cannot be resolved ({exc})") from exc
            if real in skip or path in skip:
                continue
            if real != root and root not in real.parents:
                raise SignatureError(f"{path} links outside {directory}; a signed cache must be self-contained")
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
        "_type": dsse.STATEMENT_TYPE,
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
    bundle = dsse.sign_with_key(statement(directory, file_digests(directory, [signature])), private_key_pem)
    try:
        signature.write_text(json.dumps(bundle, indent=2) + "\n")
    except OSError as exc:
        raise SignatureError(f"cannot write the signature {signature}: {exc.strerror}") from exc
    return bundle


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
    try:
        text = signature.read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read the signature {signature}: {exc.strerror}") from exc
    bundle = dsse.parse_bundle(text, str(signature))
    if public_key_pem is not None:
        signed: Any = dsse.verify_with_key(bundle, public_key_pem)
    else:
        signed = dsse.verify_keyless(bundle, signers, trust_config)
    try:
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
