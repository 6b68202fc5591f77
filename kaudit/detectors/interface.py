"""The detector seam: each detector recognises one kind of file by content and describes its device code.

A detector declares what it looks for (:meth:`Detector.matches`, on the first bytes of a file) apart from
what it does (:meth:`Detector.detect`), so the walker can sniff cheaply and parse only what matches.
Problems inside a file are collected in :class:`Detection.problems`; a detector raises
:class:`~kaudit.errors.MalformedBinary` only when nothing at all could be read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from kaudit.binfmt.bounded import Blob
from kaudit.inventory import DeviceCode, FindingKind

SNIFF_BYTES = 4096
"""How many leading bytes of every file the walker hands to :meth:`Detector.matches`."""


@dataclass(frozen=True)
class Problem:
    """A problem inside one object of a file; the rest of the file was still read."""

    kind: FindingKind
    reason: str
    location: str | None = None


@dataclass
class Detection:
    """What a detector found in one file."""

    format: str
    device_code: list[DeviceCode] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    soname: str | None = None
    needed: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)


class Detector(ABC):
    """Recognises one kind of file by its content."""

    name: str

    @abstractmethod
    def matches(self, head: bytes) -> bool:
        """Whether a file starting with ``head`` (up to :data:`SNIFF_BYTES`) is for this detector."""

    @abstractmethod
    def detect(self, blob: Blob, path: str) -> Detection | None:
        """Describe the file's device code; ``None`` when it holds none after all."""
