"""The output-format seam: each format renders a :class:`~kaudit.inventory.ScanReport` to text, with the policy
evaluation when ``--policy`` was given."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, TextIO

from kaudit.inventory import ScanReport

if TYPE_CHECKING:
    from kaudit.policy.model import PolicyResult


_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` safe for XML and strict encoders: bytes of a file name that were not UTF-8 (kept as surrogates) and
    control characters written as ``\\xNN``."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()) & 0xFF:02x}", text)


class Format(ABC):
    """Renders a scan report."""

    name: str
    is_manifest: bool
    """True for machine-readable formats (safe to pipe); False for human-oriented ones."""
    needs_policy: bool = False
    """True for formats that report policy findings only (SARIF, JUnit)."""

    @abstractmethod
    def render(self, report: ScanReport, policy: PolicyResult | None = None) -> str:
        """The whole document, ending with a newline."""

    def write(self, report: ScanReport, stream: TextIO, policy: PolicyResult | None = None) -> None:
        """Write the document to ``stream``; formats that can stream override this."""
        stream.write(self.render(report, policy))
