"""Kernel Hub kernels: pinned to a commit, matching their digests and lock, signed."""

from __future__ import annotations

from collections.abc import Iterator

from kaudit.inventory import CacheEntry
from kaudit.policy.model import Violation
from kaudit.rules.interface import RuleContext

_FULL_COMMIT_LENGTHS = (40, 64)


def _details(entry: CacheEntry) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in entry.details:
        out.setdefault(key, []).append(value)
    return out


def _hub_variants(context: RuleContext) -> list[tuple[CacheEntry, dict[str, list[str]]]]:
    return [(e, _details(e)) for e in context.report.caches if e.type == "hf-kernel-hub"]


def _locked(context: RuleContext) -> dict[str, set[str]]:
    """Repository → commits named by the image's ``kernels.lock`` files."""
    locked: dict[str, set[str]] = {}
    for entry in context.report.caches:
        if entry.type == "hf-kernel-lock":
            details = _details(entry)
            for repo, commit in zip(details.get("repository", []), details.get("commit", []), strict=False):
                locked.setdefault(repo, set()).add(commit)
    return locked


def floating_revision(context: RuleContext) -> Iterator[Violation]:
    """A branch or ``version=N`` pull recorded in ``refs/``, a dependency or lock that names no commit, or a
    cached kernel no lock file pins."""
    locked = _locked(context)
    for entry, details in _hub_variants(context):
        repo = details["repository"][0]
        refs = details.get("ref", [])
        if refs:
            yield Violation(f"{entry.key} was pulled by the floating revision {', '.join(refs)} (refs/ in the cache)",
                            path=entry.path, layer=entry.layer,
                            fix=f"pin {repo} to commit {details['commit'][0]} in kernels.lock and load it with "
                                "load_kernel(..., lockfile=...) or get_locked_kernel")  # fmt: skip
        elif repo not in locked:
            yield Violation(f"{entry.key} is cached but no kernels.lock in the image pins {repo}",
                            path=entry.path, layer=entry.layer,
                            fix=f"run `kernels lock` so that {repo} is locked to {details['commit'][0]}")  # fmt: skip
    for entry in context.report.caches:
        details = _details(entry)
        if entry.type == "hf-kernel-lock":
            commit = details.get("commit", [""])[0]
            if len(commit) not in _FULL_COMMIT_LENGTHS:
                yield Violation(f"{entry.path} locks {details.get('repository', ['?'])[0]} to {commit or 'nothing'}, "
                                "not a full commit id", path=entry.path, layer=entry.layer)  # fmt: skip
        elif entry.type == "hf-kernel-dependency" and entry.key not in locked:
            requested = details.get("requested", ["?"])[0]
            yield Violation(f"{entry.path} depends on {entry.key} ({requested}); no kernels.lock pins it to a commit",
                            path=entry.path, layer=entry.layer,
                            fix="run `kernels lock` and ship the lock file in the image")  # fmt: skip


def integrity(context: RuleContext) -> Iterator[Violation]:
    """Files that do not match ``metadata.json``'s digest, and cached commits that differ from the lock."""
    locked = _locked(context)
    for entry, details in _hub_variants(context):
        check = details.get("digest-check", ["absent"])[0]
        if check == "failed":
            problems = [note for note in entry.notes if note.startswith("digest:")]
            yield Violation(f"{entry.key}: {len(problems)} file(s) do not match metadata.json: "
                            + "; ".join(p.removeprefix("digest: ") for p in problems[:5]),
                            path=entry.path, layer=entry.layer,
                            fix="delete the cached variant and download it again from the locked commit; "
                                "find out what changed it")  # fmt: skip
        elif check == "unverifiable":
            problems = [note.removeprefix("digest: ") for note in entry.notes if note.startswith("digest:")]
            yield Violation(f"{entry.key}: metadata.json's digest cannot be checked ({'; '.join(problems[:3])})",
                            path=entry.path, layer=entry.layer,
                            fix="use a build whose metadata.json lists sha256 digests of every file")  # fmt: skip
        elif check == "absent" or details.get("digest", ["absent"])[0] == "absent":
            yield Violation(f"{entry.key}: metadata.json lists no file digests, so the files cannot be checked",
                            path=entry.path, layer=entry.layer,
                            fix="use a build made with kernel-builder's digest hook (kernels >= 0.17)")  # fmt: skip
        repo, commit = details["repository"][0], details["commit"][0]
        if repo in locked and commit not in locked[repo]:
            yield Violation(f"{entry.key} is cached, but kernels.lock pins {repo} to {', '.join(sorted(locked[repo]))}",
                            path=entry.path, layer=entry.layer,
                            fix="download the locked commit (`kernels download`) and remove the other one")  # fmt: skip


def unsigned(context: RuleContext) -> Iterator[Violation]:
    """A cached variant whose ``metadata.json`` carries no Sigstore signature, or one that does not verify against
    the trust root, or was made by a signer the policy does not trust. ``metadata.json`` lists the digest of every
    other file of the variant (KA202 checks them), so its signature covers the whole variant."""
    for entry, details in _hub_variants(context):
        if details.get("signature", ["absent"])[0] != "present":
            yield Violation(f"{entry.key}: no metadata.json.sigstore, so nothing proves who built this kernel",
                            path=entry.path, layer=entry.layer,
                            fix="use a signed build (kernels-community signs with sigstore) or sign your own "
                                "builds, and keep metadata.json.sigstore in the cache")  # fmt: skip
            continue
        problem = _signature_problem(context, details)
        if problem is not None:
            yield Violation(f"{entry.key}: metadata.json's signature {problem}", path=entry.path, layer=entry.layer,
                            fix="trust the kernel's signer in the policy (signers: issuer and subject), or use a "
                                "build signed by a signer you trust")  # fmt: skip


def _signature_problem(context: RuleContext, details: dict[str, list[str]]) -> str | None:
    """Why the variant's signature is not acceptable, or ``None`` when it verifies."""
    from kaudit.signing.trust import SignatureError, SignerPolicy

    if not context.policy.trusted_identities:
        return "cannot be accepted: the policy trusts no signer (add signers: to it)"
    bundle_text, digest = details.get("signature-bundle", [""])[0], details.get("metadata-sha256", [""])[0]
    if not bundle_text or not digest:
        return "could not be read with the metadata.json it signs"
    try:
        from sigstore.errors import Error as SigstoreError
        from sigstore.hashes import Hashed
        from sigstore.models import Bundle
        from sigstore_models.common.v1 import HashAlgorithm

        bundle = Bundle.from_json(bundle_text)
        prehashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(digest))
        context.verifier.verify_artifact(prehashed, bundle, SignerPolicy(context.policy.trusted_identities))
    except SignatureError as exc:
        return f"cannot be checked: {exc.diagnostics()}"
    except (SigstoreError, ValueError) as exc:
        return f"does not verify: {exc}"
    return None
