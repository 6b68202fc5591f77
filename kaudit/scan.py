"""The scan orchestrator: walk paths, offer each file to the detectors, assemble the inventory.

No output and no argument parsing here: the CLI wires options in, formats render the report.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

from kaudit import __version__
from kaudit.detectors import SNIFF_BYTES, Detection, Detector, default_detectors
from kaudit.detectors.host_elf import gpu_runtimes
from kaudit.errors import LimitExceeded, MalformedBinary, UnsupportedFormat
from kaudit.inventory import (
    ArchSummary,
    CacheEntry,
    CodeKind,
    DeviceCode,
    FindingKind,
    FirstUseSignal,
    GpuBinary,
    ScanFinding,
    ScanReport,
    ScanStats,
)
from kaudit.walk.files import Candidate, Walker, disk_candidate, sha256_of
from kaudit.walk.tree import catalog_tree

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
    """Detectors to use (default: all); custom detectors run in this process only."""
    jobs: int | None = None
    """Worker processes for files on disk (default: the CPUs available; 1 scans in this process)."""


Examined = tuple[GpuBinary | None, list[ScanFinding]]


class Scanner:
    """Scans files and directory trees for GPU device code."""

    def __init__(self, options: ScanOptions | None = None) -> None:
        self._options = options or ScanOptions()
        self._detectors = list(self._options.detectors or default_detectors())

    def _detector_for(self, head: bytes) -> Detector | None:
        return next((d for d in self._detectors if d.matches(head)), None)

    def sniff(self, head: bytes) -> bool:
        """Whether a file starting with ``head`` is one of the detectors' kinds."""
        return self._detector_for(head) is not None

    def _jobs(self) -> int:
        if self._options.detectors is not None:
            return 1
        if self._options.jobs is not None:
            return max(1, self._options.jobs)
        return available_cpus()

    def scan_paths(self, paths: Sequence[str], progress: ProgressCallback | None = None) -> ScanReport:
        """Scan each path (file or directory); problems become findings, never exceptions.

        Files on disk are parsed by worker processes, several at a time; results keep the walk's order.
        """
        started = time.monotonic()
        walker = Walker(sniff=self.sniff)
        binaries: list[GpuBinary] = []
        findings: list[ScanFinding] = []
        parsed = 0
        jobs = self._jobs()
        pending: deque[tuple[str, Future[Examined]]] = deque()
        pool: ProcessPoolExecutor | None = None

        def collect(limit: int) -> None:
            while len(pending) > limit:
                path, future = pending.popleft()
                binary, problems = future.result()
                if binary is not None:
                    binaries.append(binary)
                findings.extend(problems)
                if progress is not None:
                    progress(path, walker.bytes_seen)

        try:
            for root in paths:
                for candidate in walker.walk(root):
                    parsed += 1
                    if candidate.on_disk and jobs > 1:
                        if pool is None:
                            pool = ProcessPoolExecutor(max_workers=jobs, mp_context=fork_context())
                        future = pool.submit(_examine_file, candidate.path, candidate.size)
                    else:
                        future = Future()
                        future.set_result(self.examine(candidate))
                    pending.append((candidate.path, future))
                    collect(16 * jobs)  # bounded: results are gathered in order while workers keep busy
            collect(0)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        findings.extend(
            ScanFinding(p.path, FindingKind.LIMIT if p.limit else FindingKind.UNREADABLE, p.reason)
            for p in walker.problems
        )
        caches: list[CacheEntry] = []
        signals: list[FirstUseSignal] = []
        for root, listing in walker.listings.items():
            entries, found_signals, embedded, problems = catalog_tree(root, listing, binaries, self.examine)
            caches.extend(entries)
            signals.extend(found_signals)
            binaries.extend(embedded)
            findings.extend(problems)
        stats = ScanStats(
            files_seen=walker.files_seen,
            files_parsed=parsed,
            bytes_seen=walker.bytes_seen,
            duration_s=round(time.monotonic() - started, 3),
        )
        subject = paths[0] if len(paths) == 1 else ", ".join(paths)
        return ScanReport(subject, tuple(binaries), tuple(findings), stats, __version__, None, tuple(caches),
                          tuple(signals))  # fmt: skip

    def examine(self, candidate: Candidate) -> Examined:
        """Describe one candidate file: its inventory entry (or ``None``) and the problems met."""
        detector = self._detector_for(candidate.head)
        if detector is None:
            return None, []
        try:
            with candidate.open_blob() as blob:
                detection = detector.detect(blob, candidate.path)
                if detection is None:
                    return None, []
                digest = candidate.sha256 or sha256_of(blob)
        except LimitExceeded as exc:
            return None, [ScanFinding(candidate.path, FindingKind.LIMIT, exc.diagnostics())]
        except MalformedBinary as exc:
            return None, [ScanFinding(candidate.path, FindingKind.MALFORMED, f"{detector.name}: {exc}")]
        except UnsupportedFormat as exc:
            return None, [ScanFinding(candidate.path, FindingKind.UNSUPPORTED, exc.diagnostics())]
        except OSError as exc:
            return None, [ScanFinding(candidate.path, FindingKind.UNREADABLE, f"cannot read: {exc.strerror}")]
        problems = [ScanFinding(candidate.path, p.kind, p.reason, p.location) for p in detection.problems]
        return _binary(candidate, detection, digest), problems


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def fork_context() -> multiprocessing.context.BaseContext:
    """Workers are forked: they start in milliseconds with kaudit already imported."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


_WORKER_SCANNER: Scanner | None = None


def _examine_file(path: str, size: int) -> Examined:
    """Worker-process entry point: examine one file on disk with the default detectors."""
    global _WORKER_SCANNER
    if _WORKER_SCANNER is None:
        _WORKER_SCANNER = Scanner(ScanOptions(jobs=1))
    try:
        with open(path, "rb", buffering=0) as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as exc:
        return None, [ScanFinding(path, FindingKind.UNREADABLE, f"cannot read: {exc.strerror}")]
    return _WORKER_SCANNER.examine(disk_candidate(path, size, head))


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
