"""The cache-cataloging pass of ``kaudit scan path`` over a directory tree.

The device-code pass (:mod:`kaudit.scan`) finds binaries by content; this pass reads what the cache catalogers
need besides — the small files of interest, symlinks, the file list — and the device code embedded in pickles,
compile artifacts and JIT cache entries, then runs the catalogers (:mod:`kaudit.caches`) over the tree.
"""

from __future__ import annotations

import os
import stat

from kaudit.binfmt.bounded import FileBlob
from kaudit.caches import CacheView, catalog_view
from kaudit.inventory import CacheEntry, FindingKind, FirstUseSignal, GpuBinary, ScanFinding
from kaudit.walk.interest import Interest, classify, classify_content
from kaudit.walk.layers import Examine, read_interesting


def catalog_tree(
    root: str, binaries: list[GpuBinary], examine: Examine
) -> tuple[tuple[CacheEntry, ...], tuple[FirstUseSignal, ...], list[GpuBinary], list[ScanFinding]]:
    """Cache entries and first-use signals under ``root``, plus device code embedded in its containers."""
    files: set[str] = set()
    symlinks: dict[str, str] = {}
    texts: dict[str, str] = {}
    embedded: list[GpuBinary] = []
    findings: list[ScanFinding] = []
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [*sorted(filenames), *dirnames]:
            path = os.path.join(directory, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISLNK(info.st_mode):
                symlinks[path] = os.readlink(path)
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            files.add(path)
            interest = classify(path)
            if interest is None and name.endswith(".bin") and info.st_size > 64:
                with open(path, "rb") as handle:
                    interest = classify_content(path, handle.read(64))
            if interest is None or interest is Interest.RPMDB:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
            except OSError as exc:
                findings.append(ScanFinding(path, FindingKind.UNREADABLE, f"cannot read: {exc.strerror}"))
                continue
            try:
                kept = read_interesting(path, interest, FileBlob(fd, info.st_size), examine)
            finally:
                os.close(fd)
            texts.update(kept.texts)
            embedded.extend(kept.binaries)
            findings.extend(kept.findings)

    real_root = os.path.realpath(root)

    def resolve(path: str) -> str:
        """``path`` through its symlinks, written relative to ``root`` as the scan writes paths; links that
        leave the tree are not followed."""
        real = os.path.realpath(path)
        if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
            return path
        return os.path.normpath(os.path.join(root, os.path.relpath(real, real_root)))

    view = CacheView(files, symlinks, texts, {b.path: b for b in [*binaries, *embedded]}, resolve=resolve)
    entries, signals = catalog_view(view)
    return entries, signals, embedded, findings
