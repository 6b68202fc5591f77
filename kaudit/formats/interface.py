"""The output-format seam: each format renders a :class:`~kaudit.inventory.ScanReport` to text."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TextIO

from kaudit.inventory import ScanReport


class Format(ABC):
    """Renders a scan report."""

    name: str
    is_manifest: bool
    """True for machine-readable formats (safe to pipe); False for human-oriented ones."""

    @abstractmethod
    def render(self, report: ScanReport) -> str:
        """The whole document, ending with a newline."""

    def write(self, report: ScanReport, stream: TextIO) -> None:
        """Write the document to ``stream``; formats that can stream override this."""
        stream.write(self.render(report))
