"""How the image is referenced: pinned by digest, from an allowed registry."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator

from kaudit.policy.model import Violation
from kaudit.rules.interface import RuleContext
from kaudit.sources.interface import SourceError
from kaudit.sources.registry import Reference


def _registry_reference(text: str) -> Reference | None:
    if text.startswith(("oci:", "docker-archive:", "dir:")):
        return None  # a local file, not something a node pulls
    try:
        return Reference.parse(text.removeprefix("registry:"))
    except SourceError:
        return None


def not_pinned(context: RuleContext) -> Iterator[Violation]:
    reference = context.reference
    parsed = _registry_reference(reference) if reference else None
    if reference is None or parsed is None or parsed.digest is not None:
        return
    known = context.report.image.manifest_digest if context.report.image is not None else None
    pinned = f"{parsed.registry}/{parsed.repository}@{known}" if known else None
    yield Violation(
        f"{reference} names a tag, which can move: replicas may run different images",
        subject=reference,
        fix=f"reference the image as {pinned}" if pinned else None,
    )


def registry_not_allowed(context: RuleContext) -> Iterator[Violation]:
    allowed = context.policy.allowed_registries
    reference = context.reference
    parsed = _registry_reference(reference) if reference else None
    if not allowed or parsed is None:
        return
    if not any(fnmatch.fnmatchcase(parsed.registry, pattern) for pattern in allowed):
        yield Violation(f"{reference} comes from {parsed.registry}, which the policy does not allow "
                        f"(allowed: {', '.join(allowed)})", subject=reference)  # fmt: skip
