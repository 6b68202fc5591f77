"""GPU binaries that no package installed: nobody can say where they came from or how to update them."""

from __future__ import annotations

from collections.abc import Iterator

from kaudit.policy.model import Violation
from kaudit.rules.interface import RuleContext


def unowned(context: RuleContext) -> Iterator[Violation]:
    for binary in context.binaries:
        if binary.owner is not None:
            continue
        yield Violation(f"{binary.path} is a GPU binary that no package database lists",
                        path=binary.path, layer=binary.layer,
                        fix="install it through a package (pip, apt, rpm, conda) so its origin and version are "
                            "recorded, or record it in the SBOM by hand")  # fmt: skip
