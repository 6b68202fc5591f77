"""Detectors: one per kind of file that can hold GPU device code, tried in order on each file's first bytes."""

from __future__ import annotations

from kaudit.detectors.foreign_host import ForeignHostDetector
from kaudit.detectors.host_elf import HostElfDetector
from kaudit.detectors.interface import SNIFF_BYTES, Detection, Detector, Problem
from kaudit.detectors.standalone import (
    BundleDetector,
    CubinDetector,
    FatbinDetector,
    HsacoDetector,
    OffloadBinaryDetector,
    PtxDetector,
)


def default_detectors() -> list[Detector]:
    """Every detector, cheapest magic checks first; PTX (a text sniff) last."""
    return [
        HostElfDetector(),
        CubinDetector(),
        HsacoDetector(),
        FatbinDetector(),
        BundleDetector(),
        OffloadBinaryDetector(),
        ForeignHostDetector(),
        PtxDetector(),
    ]


__all__ = ["SNIFF_BYTES", "Detection", "Detector", "Problem", "default_detectors"]
