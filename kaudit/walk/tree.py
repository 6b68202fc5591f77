"""The cache-cataloging pass of ``kaudit scan path`` over a directory tree.

The device-code pass (:mod:`kaudit.scan`) finds binaries by content and lists the tree's files and symlinks as it
walks; this pass reads, from that listing, what the cache catalogers need besides — the small files of interest
and the device code embedded in pickles, compile artifacts and JIT cache entries — and runs the catalogers
(:mod:`kaudit.caches`) over the tree.
"""

from __future__ import annotations

import os

from kaudit.binfmt.bounded import FileBlob
from kaudit.caches import CacheView, catalog_view
from kaudit.inventory import CacheEntry, FindingKind, FirstUseSignal, GpuBinary, ScanFinding
from kaudit.walk.files import TreeListing, sha256_of
from kaudit.walk.interest import Interest, classify, classify_content
from kaudit.walk.layers import Examine, read_interesting


def catalog_tree(
    root: str, listing: TreeListing, binaries: list[GpuBinary], examine: Examine
) -> tuple[tuple[CacheEntry, ...], tuple[FirstUseSignal, ...], list[GpuBinary], list[ScanFinding]]:
    """Cache entries and first-use signals under ``root`` (as the device-code walk listed it), plus device code
    embedded in its containers."""
    texts: dict[str, str] = {}
    embedded: list[GpuBinary] = []
    findings: list[ScanFinding] = []
    for path, size in listing.files.items():
        interest = classify(path)
        if interest is None and path.endswith(".bin") and size > 64:
            try:
                with open(path, "rb") as handle:
                    interest = classify_content(path, handle.read(64))
            except OSError:
                continue  # the device-code walk has reported it
        if interest is None or interest is Interest.RPMDB:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            findings.append(ScanFinding(path, FindingKind.UNREADABLE, f"cannot read: {exc.strerror}"))
            continue
        try:
            kept = read_interesting(path, interest, FileBlob(fd, size), examine)
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

    everything = {b.path: b for b in [*binaries, *embedded]}

    def digest_of(path: str) -> str | None:
        """The file's sha256: from the device-code pass when it read the file, else read now (cache catalogers
        ask only for the files of a Kernel Hub variant that lists digests)."""
        real = resolve(path)
        binary = everything.get(real) or everything.get(path)
        if binary is not None:
            return binary.sha256
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        try:
            return sha256_of(FileBlob(fd, os.fstat(fd).st_size))
        finally:
            os.close(fd)

    view = CacheView(set(listing.files), listing.symlinks, texts, everything, resolve=resolve, digest_of=digest_of)
    entries, signals = catalog_view(view)
    return entries, signals, embedded, findings
