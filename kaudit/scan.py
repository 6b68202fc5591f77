"""The scan orchestrator: walk paths, offer each file to the detectors, assemble the inventory.

No output and no argument parsing here: the CLI wires options in, formats render the report.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from kaudit import __version__
from kaudit.detectors import Detection, Detector, default_detectors
from kaudit.detectors.host_elf import gpu_runtimes
from kaudit.errors import LimitExceeded, MalformedBinary, UnsupportedFormat
from kaudit.inventory import (
    ArchSummary,
    CodeKind,
    DeviceCode,
    FindingKind,
    GpuBinary,
    ScanFinding,
    ScanReport,
    ScanStats,
)
from kaudit.walk.files import Candidate, Walker, sha256_of

ProgressCallback = Callable[[str, int], None]
"""Called with (path, bytes seen so far) after each candidate file is examined."""

_NATURAL = re.compile(r"(\d+)")


def arch_sort_key(arch: str) -> tuple[object, ...]:
    """Natural order: ``sm_80 < sm_90 < sm_90a < sm_100``; ``gfx90a < gfx942 < gfx1100``."""
    return tuple(int(part) if part.isdigit() else part for part in _NATURAL.split(arch))


def summarize(codes: Iterable[DeviceCode]) -> ArchSummary:
    """Arch sets (sorted) and the kernel count (SASS and HSACO kernels) over ``codes``."""
    sass: set[str] = set()
    ptx: set[str] = set()
    gfx: set[str] = set()
    kernels = 0
    ptx_kernels = 0
    objects = 0
    for code in codes:
        objects += 1
        if code.arch is None:
            continue
        if code.kind is CodeKind.SASS:
            sass.add(code.arch)
            kernels += len(code.kernels)
        elif code.kind is CodeKind.PTX:
            ptx.add(code.arch)
            ptx_kernels += len(code.kernels)
        elif code.kind is CodeKind.HSACO:
            gfx.add(code.arch)
            kernels += len(code.kernels)
    return ArchSummary(
        sass_archs=tuple(sorted(sass, key=arch_sort_key)),
        ptx_archs=tuple(sorted(ptx, key=arch_sort_key)),
        gfx_targets=tuple(sorted(gfx, key=arch_sort_key)),
        kernel_count=kernels,
        ptx_kernel_count=ptx_kernels,
        object_count=objects,
    )


@dataclass
class ScanOptions:
    """Knobs of a scan."""

    detectors: Sequence[Detector] | None = None


class Scanner:
    """Scans files and directory trees for GPU device code."""

    def __init__(self, options: ScanOptions | None = None) -> None:
        self._options = options or ScanOptions()
        self._detectors = list(self._options.detectors or default_detectors())

    def _detector_for(self, head: bytes) -> Detector | None:
        return next((d for d in self._detectors if d.matches(head)), None)

    def scan_paths(self, paths: Sequence[str], progress: ProgressCallback | None = None) -> ScanReport:
        """Scan each path (file or directory); problems become findings, never exceptions."""
        started = time.monotonic()
        walker = Walker(sniff=lambda head: self._detector_for(head) is not None)
        binaries: list[GpuBinary] = []
        findings: list[ScanFinding] = []
        parsed = 0
        for root in paths:
            for candidate in walker.walk(root):
                parsed += 1
                binary = self._examine(candidate, findings)
                if binary is not None:
                    binaries.append(binary)
                if progress is not None:
                    progress(candidate.path, walker.bytes_seen)
        findings.extend(
            ScanFinding(p.path, FindingKind.LIMIT if p.limit else FindingKind.UNREADABLE, p.reason)
            for p in walker.problems
        )
        stats = ScanStats(
            files_seen=walker.files_seen,
            files_parsed=parsed,
            bytes_seen=walker.bytes_seen,
            duration_s=round(time.monotonic() - started, 3),
        )
        subject = paths[0] if len(paths) == 1 else ", ".join(paths)
        return ScanReport(subject, tuple(binaries), tuple(findings), stats, __version__)

    def _examine(self, candidate: Candidate, findings: list[ScanFinding]) -> GpuBinary | None:
        detector = self._detector_for(candidate.head)
        if detector is None:
            return None
        try:
            with candidate.open_blob() as blob:
                detection = detector.detect(blob, candidate.path)
                if detection is None:
                    return None
                digest = sha256_of(blob)
        except LimitExceeded as exc:
            findings.append(ScanFinding(candidate.path, FindingKind.LIMIT, exc.diagnostics()))
            return None
        except MalformedBinary as exc:
            findings.append(ScanFinding(candidate.path, FindingKind.MALFORMED, f"{detector.name}: {exc}"))
            return None
        except UnsupportedFormat as exc:
            findings.append(ScanFinding(candidate.path, FindingKind.UNSUPPORTED, exc.diagnostics()))
            return None
        except OSError as exc:
            findings.append(ScanFinding(candidate.path, FindingKind.UNREADABLE, f"cannot read: {exc.strerror}"))
            return None
        findings.extend(ScanFinding(candidate.path, p.kind, p.reason, p.location) for p in detection.problems)
        return _binary(candidate, detection, digest)


def _binary(candidate: Candidate, detection: Detection, digest: str) -> GpuBinary:
    codes = tuple(detection.device_code)
    return GpuBinary(
        path=candidate.path,
        size=candidate.size,
        sha256=digest,
        format=detection.format,
        device_code=codes,
        loadable=summarize(c for c in codes if c.loadable),
        relocatable=summarize(c for c in codes if c.relocatable),
        link_stub_count=sum(1 for c in codes if c.link_stub),
        soname=detection.soname,
        needed=detection.needed,
        gpu_runtimes=gpu_runtimes(detection.needed),
        notes=tuple(detection.notes),
    )
