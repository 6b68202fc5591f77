"""The rule seam: a check reads a :class:`RuleContext` and yields :class:`~kaudit.policy.model.Violation`\\ s.

The same checks run in the CI gate (a scan report alone) and in the admission webhook (a scan report plus the pod
that will run the image): ``pod`` is ``None`` in CI, and checks that need it yield nothing without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from kaudit.inventory import FileStatus, GpuBinary, ScanReport
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
    def binaries(self) -> list[GpuBinary]:
        """The GPU binaries the binary rules judge (:func:`judged_binaries`)."""
        return judged_binaries(self.report)

    @property
    def reference(self) -> str | None:
        if self.image_reference is not None:
            return self.image_reference
        return self.report.image.reference if self.report.image is not None else None


Check = Callable[[RuleContext], Iterable[Violation]]


def judged_binaries(report: ScanReport) -> list[GpuBinary]:
    """The GPU binaries coverage and ownership are judged on: present in the final filesystem, standalone (device
    code found inside another file belongs to that file), and not part of a runtime cache entry — the cache rules
    judge those (a Triton cache's PTX is never JIT-loaded while its cubin sits beside it)."""
    cached = {path for entry in report.caches for path in entry.binaries}
    return [b for b in report.binaries
            if b.status is FileStatus.PRESENT and "!/" not in b.path and b.path not in cached]  # fmt: skip
