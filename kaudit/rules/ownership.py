"""GPU binaries that no package installed: nobody can say where they came from or how to update them."""

from __future__ import annotations

from collections.abc import Iterator

from kaudit.inventory import FileStatus
from kaudit.policy.model import Violation
from kaudit.rules.interface import RuleContext


def unowned(context: RuleContext) -> Iterator[Violation]:
    for binary in context.report.binaries:
        if binary.status is not FileStatus.PRESENT or binary.owner is not None or binary.path in context.cached_paths:
            continue  # runtime cache contents are judged by the cache rules
        if "!/" in binary.path:
            continue  # device code inside another file belongs to that file
        yield Violation(f"{binary.path} is a GPU binary that no package database lists",
                        path=binary.path, layer=binary.layer,
                        fix="install it through a package (pip, apt, rpm, conda) so its origin and version are "
                            "recorded, or record it in the SBOM by hand")  # fmt: skip
