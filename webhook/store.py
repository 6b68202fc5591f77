"""The report store: kaudit's admission reports, one per image manifest digest, in a directory.

Files are named ``sha256-<hex>.json`` (a ConfigMap key cannot hold ':'), written by ``kaudit scan image REF -o
admission=...``; the directory is usually a ConfigMap, Secret or volume mounted read-only. Reports are read when
first asked for and again when the file changes (a mounted ConfigMap is updated in place by the kubelet); a file
that is not a valid admission report is treated as missing, and logged.
"""

from __future__ import annotations

import logging
import os
import re
import threading

from kaudit.formats.admission import read_admission_report
from kaudit.inventory import ScanReport
from kaudit.serialize import CorruptRecord

log = logging.getLogger("kaudit.webhook")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_REPORT_BYTES = 64 << 20


class ReportStore:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, int, ScanReport | None]] = {}
        self._indexes: tuple[int, dict[str, str], dict[str, str]] | None = None

    def get(self, digest: str) -> ScanReport | None:
        """The report for the image with manifest ``digest`` — or with index ``digest``: pods of multi-platform
        images usually name the index, while reports are stored by the platform manifest that was scanned."""
        if not _DIGEST.match(digest):
            return None
        path = os.path.join(self.directory, f"sha256-{digest.split(':', 1)[1]}.json")
        try:
            status = os.stat(path)
        except OSError:
            platform = self._platform_of(digest)
            return self.get(platform) if platform is not None and platform != digest else None
        with self._lock:
            cached = self._cache.get(digest)
            if cached is not None and cached[:2] == (status.st_mtime, status.st_size):
                return cached[2]
        report = self._read(path, digest, status.st_size)
        with self._lock:
            self._cache[digest] = (status.st_mtime, status.st_size, report)
        return report

    def _platform_of(self, index_digest: str) -> str | None:
        """The platform manifest digest of a stored report whose image was resolved through ``index_digest``."""
        return self._index()[1].get(index_digest)

    def digest_for(self, reference: str) -> str | None:
        """The manifest digest of a stored report whose image was scanned as ``reference`` (to tell a tag's user
        which digest to pin), or ``None``."""
        return self._index()[0].get(reference)

    def _index(self) -> tuple[dict[str, str], dict[str, str]]:
        """(scanned reference → manifest digest, index digest → manifest digest) over the stored reports, rebuilt
        only when the directory changes: tags and index digests are looked up on every admission request."""
        try:
            stamp = os.stat(self.directory).st_mtime_ns
            names = sorted(os.listdir(self.directory))
        except OSError:
            return {}, {}
        with self._lock:
            if self._indexes is not None and self._indexes[0] == stamp:
                return self._indexes[1], self._indexes[2]
        references: dict[str, str] = {}
        platforms: dict[str, str] = {}
        for name in names:
            match = re.fullmatch(r"sha256-([0-9a-f]{64})\.json", name)
            report = self.get(f"sha256:{match.group(1)}") if match else None
            if report is None or report.image is None:
                continue
            references.setdefault(report.image.reference, report.image.manifest_digest)
            if report.image.index_digest:
                platforms[report.image.index_digest] = report.image.manifest_digest
        with self._lock:
            self._indexes = (stamp, references, platforms)
        return references, platforms

    def _read(self, path: str, digest: str, size: int) -> ScanReport | None:
        if size > MAX_REPORT_BYTES:
            log.error("report store: %s is %d bytes, over the %d-byte limit; ignored", path, size, MAX_REPORT_BYTES)
            return None
        try:
            with open(path, "rb") as handle:
                report = read_admission_report(handle.read())
        except (OSError, CorruptRecord) as exc:
            log.error("report store: %s is not a kaudit admission report (%s); ignored", path, exc)
            return None
        if report.image is None or report.image.manifest_digest != digest:
            log.error("report store: %s describes %s, not %s; ignored", path,
                      report.image.manifest_digest if report.image else "no image", digest)  # fmt: skip
            return None
        return report
