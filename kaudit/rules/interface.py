"""The rule seam: a check reads a :class:`RuleContext` and yields :class:`~kaudit.policy.model.Violation`\\ s.

The same checks run in the CI gate (a scan report alone) and in the admission webhook (a scan report plus the pod
that will run the image): ``pod`` is ``None`` in CI, and checks that need it yield nothing without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from kaudit.inventory import ScanReport
from kaudit.policy.model import Policy, Violation

if TYPE_CHECKING:
    from sigstore.verify import Verifier


@dataclass(frozen=True)
class RuleContext:
    report: ScanReport
    policy: Policy
    pod: Mapping[str, Any] | None = None
    """The pod spec under admission (``spec`` of a Pod), or ``None`` in CI."""
    image_reference: str | None = None
    """The image reference as written where it is used (a pod's ``image:``); defaults to the report's subject."""
    container: Mapping[str, Any] | None = None
    """The container of ``pod`` that runs the image, for admission."""
    trust_config: str | None = None
    """Overrides the policy's Sigstore trust root (``--trust-config``)."""

    @cached_property
    def verifier(self) -> Verifier:
        """The Sigstore verifier, built on first use (only the signature rules need it)."""
        from kaudit.signing.trust import load_verifier

        return load_verifier(self.trust_config or self.policy.trust_config)

    @cached_property
    def cached_paths(self) -> frozenset[str]:
        """GPU binaries that belong to runtime cache entries: the cache rules judge them, not the binary rules
        (a Triton cache's PTX is never JIT-loaded while its cubin sits beside it)."""
        return frozenset(path for entry in self.report.caches for path in entry.binaries)

    @property
    def reference(self) -> str | None:
        if self.image_reference is not None:
            return self.image_reference
        return self.report.image.reference if self.report.image is not None else None


Check = Callable[[RuleContext], Iterable[Violation]]
