"""Walk one image layer as a stream: verify its digests, find device code and the files that attribute it.

The compressed blob is hashed as it is read (its manifest digest), decompressed (gzip through ISA-L when
available, zstd), hashed again (the config's diff_id) and read by ``tarfile`` in stream mode: nothing is
extracted to disk. Each regular file is sniffed; device code and the files that matter later (package
databases, kernel cache metadata) are read and hashed, the rest only listed. Whiteouts, symlinks and hardlinks
are recorded for the merge (:mod:`kaudit.walk.merge`), which applies them across layers.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import tarfile
import tempfile
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO, BinaryIO

from kaudit.binfmt.bounded import Blob, BytesBlob, FileBlob
from kaudit.detectors.interface import SNIFF_BYTES
from kaudit.errors import Error, LimitExceeded, MalformedBinary
from kaudit.inventory import FindingKind, GpuBinary, ScanFinding
from kaudit.owners.model import PackageFiles
from kaudit.sources.interface import LayerDescriptor, LayerReader, SourceError
from kaudit.walk.files import Candidate, held_blob, list_tree
from kaudit.walk.interest import Interest, classify, classify_content

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
IN_MEMORY_LIMIT = 64 * 1024 * 1024
"""Files of interest up to this size are read into memory; larger ones are spooled to a temporary file."""
TEXT_LIMIT = 8 * 1024 * 1024
"""Text files of interest (package databases, cache metadata) larger than this are not kept."""
EMBEDDED_LIMIT = 512 * 1024 * 1024
"""Containers (pickles, artifacts, databases) larger than this are listed, not searched."""
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Bounds on what one layer may make kaudit do."""

    max_layer_bytes: int = 256 * 1024**3
    """Uncompressed bytes per layer; a tar bomb stops here."""
    max_members: int = 5_000_000
    max_member_bytes: int = 16 * 1024**3
    """A single file larger than this is listed but not read."""


@dataclass(frozen=True, slots=True)
class LayerFile:
    """A regular file of a layer: its size, and its sha256 when kaudit read it."""

    size: int
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Deferred:
    """A GPU file the layer walk set aside for another process to parse (never cached: it is transient)."""

    path: str
    size: int
    sha256: str
    spilled: str
    """A private temporary copy of the content; the parsing process deletes it."""


@dataclass(frozen=True)
class Handoff:
    """Where a layer walk sets aside large GPU files, so that several processes parse one layer's files."""

    directory: str
    min_size: int = 4 * 1024 * 1024
    max_size: int = IN_MEMORY_LIMIT
    """Larger files are parsed where they are read: copying gigabytes aside cost more than it saved (a 4.5 GB
    torch image: 53 s inline, 63 s handed off; docs/performance.md)."""


@dataclass(frozen=True, slots=True)
class LayerResult:
    """What one layer holds, independent of the other layers (cacheable by the layer digest)."""

    digest: str
    diff_id: str
    binaries: tuple[GpuBinary, ...] = ()
    findings: tuple[ScanFinding, ...] = ()
    files: dict[str, LayerFile] = field(default_factory=dict)
    whiteouts: tuple[str, ...] = ()
    opaque_dirs: tuple[str, ...] = ()
    symlinks: dict[str, str] = field(default_factory=dict)
    hardlinks: dict[str, str] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    packages: tuple[PackageFiles, ...] = ()
    deferred: tuple[Deferred, ...] = ()


def normalize(name: str) -> str | None:
    """An archive member name as a clean image path (no leading ``/``, no ``.``); ``None`` if it escapes."""
    path = posixpath.normpath("/" + name.replace("\\", "/"))
    if name and any(part == ".." for part in name.replace("\\", "/").split("/")):
        # normpath on an absolute path cannot climb above "/", but a ".." in a member name is hostile either way
        return None
    return path.lstrip("/") if path != "/" else ""


class _Readable(ABC):
    """What decompressors ask of a stream besides ``read``."""

    @abstractmethod
    def read(self, size: int = -1) -> bytes: ...

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _HashingReader(_Readable):
    """Reads from a stream while hashing and counting (and enforcing a byte budget)."""

    def __init__(self, stream: BinaryIO, limit: int | None = None, progress: Callable[[int], None] | None = None):
        self._stream = stream
        self._hash = hashlib.sha256()
        self.count = 0
        self._limit = limit
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size if size is not None and size >= 0 else _CHUNK)
        self._hash.update(data)
        self.count += len(data)
        if self._limit is not None and self.count > self._limit:
            raise LimitExceeded(f"layer decompresses to more than {self._limit} bytes (a tar bomb?); stopped")
        if self._progress is not None:
            self._progress(self.count)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def _decompressor(raw: BinaryIO, media_type: str, head: bytes) -> BinaryIO:
    if "zstd" in media_type or head.startswith(b"\x28\xb5\x2f\xfd"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    if "gzip" in media_type or head.startswith(b"\x1f\x8b"):
        try:
            from isal import igzip  # ISA-L: 2.6-5x the stdlib's gunzip (docs/performance.md)

            return igzip.IGzipFile(fileobj=raw, mode="rb")  # type: ignore[no-untyped-call,return-value]
        except ImportError:
            import gzip

            return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


class _Peekable(_Readable):
    """Lets the first bytes of a stream be looked at before handing it on."""

    def __init__(self, stream: _HashingReader) -> None:
        self._stream = stream
        self.head = stream.read(8)
        self._pending = self.head

    def read(self, size: int = -1) -> bytes:
        if self._pending:
            if size is None or size < 0:
                data, self._pending = self._pending + self._stream.read(-1), b""
                return data
            data, self._pending = self._pending[:size], self._pending[size:]
            if len(data) < size:
                data += self._stream.read(size - len(data))
            return data
        return self._stream.read(size)


@dataclass
class _Collected:
    binaries: list[GpuBinary] = field(default_factory=list)
    findings: list[ScanFinding] = field(default_factory=list)
    files: dict[str, LayerFile] = field(default_factory=dict)
    whiteouts: list[str] = field(default_factory=list)
    opaque_dirs: list[str] = field(default_factory=list)
    symlinks: dict[str, str] = field(default_factory=dict)
    hardlinks: dict[str, str] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    packages: list[PackageFiles] = field(default_factory=list)
    deferred: list[Deferred] = field(default_factory=list)
    handoff: Handoff | None = None


Examine = Callable[[Candidate], tuple[GpuBinary | None, list[ScanFinding]]]
Sniff = Callable[[bytes], bool]


def walk_layer(
    layer: LayerDescriptor,
    reader: LayerReader,
    examine: Examine,
    sniff: Sniff,
    limits: Limits = Limits(),
    progress: Callable[[int], None] | None = None,
    handoff: Handoff | None = None,
) -> LayerResult:
    """Stream one layer blob and describe it; raises :class:`SourceError` when the blob cannot be trusted.

    With ``handoff``, GPU files of at least ``handoff.min_size`` are copied aside and listed in
    ``LayerResult.deferred`` instead of parsed here, for the caller to parse in other processes."""
    collected = _Collected(handoff=handoff)
    with reader.open() as raw_stream:
        raw = _HashingReader(raw_stream, progress=progress)
        peek = _Peekable(raw)
        tar_stream = _HashingReader(_decompressor(peek, layer.media_type, peek.head), limits.max_layer_bytes)  # type: ignore[arg-type]
        try:
            with tarfile.open(fileobj=tar_stream, mode="r|") as archive:  # type: ignore[call-overload]
                for index, member in enumerate(archive):
                    if index >= limits.max_members:
                        raise LimitExceeded(f"layer has more than {limits.max_members} entries; stopped")
                    _member(archive, member, collected, examine, sniff, limits)
            tar_stream.drain()
            raw.drain()
        except LimitExceeded as exc:
            collected.findings.append(ScanFinding(f"layer {layer.digest}", FindingKind.LIMIT, exc.diagnostics()))
            return _result(layer.digest, "", collected)
        except _STREAM_ERRORS as exc:
            if isinstance(exc, SourceError):
                raise
            # A blob that differs from its digest was tampered with or damaged in transit: refuse it. One that
            # matches was published broken: report it and keep what could be read.
            raw.drain()
            _check_blob_digest(layer, raw.digest)
            reason = f"layer is truncated or corrupt after {tar_stream.count} bytes: {exc}"
            collected.findings.append(ScanFinding(f"layer {layer.digest}", FindingKind.MALFORMED, reason))
            return _result(layer.digest, "", collected)
    _check_blob_digest(layer, raw.digest)
    if layer.diff_id and tar_stream.digest != layer.diff_id:
        raise SourceError(
            f"layer {layer.index}: uncompressed digest {tar_stream.digest} does not match the config's diff_id "
            f"{layer.diff_id}"
        )
    return _result(layer.digest, tar_stream.digest, collected)


def _check_blob_digest(layer: LayerDescriptor, actual: str) -> None:
    if actual != layer.digest:
        raise SourceError(f"layer {layer.index}: blob digest {actual} does not match the manifest's {layer.digest}")


def _stream_errors() -> tuple[type[BaseException], ...]:
    """What a damaged layer stream raises: tar, gzip (stdlib and ISA-L), zstd and I/O errors."""
    import zlib

    import zstandard

    errors: list[type[BaseException]] = [tarfile.TarError, EOFError, OSError, ValueError, zlib.error,
                                         zstandard.ZstdError, MalformedBinary]  # fmt: skip
    try:
        from isal import isal_zlib

        errors.append(typing.cast(type[BaseException], isal_zlib.error))
    except ImportError:
        pass
    return tuple(errors)


_STREAM_ERRORS = _stream_errors()


def _result(digest: str, diff_id: str, c: _Collected) -> LayerResult:
    return LayerResult(digest, diff_id, tuple(c.binaries), tuple(c.findings), c.files, tuple(c.whiteouts),
                       tuple(c.opaque_dirs), c.symlinks, c.hardlinks, c.texts, tuple(c.packages),
                       tuple(c.deferred))  # fmt: skip


def _member(
    archive: tarfile.TarFile,
    member: tarfile.TarInfo,
    collected: _Collected,
    examine: Examine,
    sniff: Sniff,
    limits: Limits,
) -> None:
    path = normalize(member.name)
    if path is None:
        collected.findings.append(
            ScanFinding(member.name, FindingKind.MALFORMED, "entry path climbs out of the image root ('..'); skipped")
        )
        return
    directory, base = posixpath.split(path)
    if base == OPAQUE_MARKER:
        collected.opaque_dirs.append(directory)
        return
    if base.startswith(WHITEOUT_PREFIX):
        collected.whiteouts.append(posixpath.join(directory, base[len(WHITEOUT_PREFIX) :]))
        return
    if member.issym():
        collected.symlinks[path] = member.linkname
    elif member.islnk():
        target = normalize(member.linkname)
        if target is None:
            collected.findings.append(
                ScanFinding(path, FindingKind.MALFORMED, "hardlink target climbs out of the image root")
            )
        else:
            collected.hardlinks[path] = target
    elif member.isreg():
        stream = archive.extractfile(member)
        if stream is None:
            return
        try:
            _regular(path, member.size, stream, collected, examine, sniff, limits)
        except MalformedBinary as exc:
            collected.findings.append(ScanFinding(path, FindingKind.MALFORMED, exc.diagnostics()))


def _regular(
    path: str,
    size: int,
    stream: IO[bytes],
    collected: _Collected,
    examine: Examine,
    sniff: Sniff,
    limits: Limits,
) -> None:
    head = stream.read(SNIFF_BYTES)
    interest = classify(path) or classify_content(path, head)
    if interest is None and not sniff(head):
        collected.files[path] = LayerFile(size)
        return
    if size > limits.max_member_bytes:
        collected.files[path] = LayerFile(size)
        collected.findings.append(
            ScanFinding(path, FindingKind.LIMIT, f"{size}-byte file is over the {limits.max_member_bytes}-byte limit")
        )
        return
    handoff = collected.handoff
    if handoff is not None and interest is None and handoff.min_size <= size <= handoff.max_size and sniff(head):
        # set aside for another process: streamed straight into the hand-off directory, hashed on the way
        spilled, digest = _spill(head, stream, size, handoff.directory)
        collected.files[path] = LayerFile(size, digest)
        collected.deferred.append(Deferred(path, size, digest, spilled))
        return
    with _Spool(head, stream, size) as (blob, digest):
        collected.files[path] = LayerFile(size, digest)
        if sniff(head):
            binary, problems = examine(Candidate(path, size, head, held_blob(blob), sha256=digest))
            collected.findings.extend(problems)
            if binary is not None:
                collected.binaries.append(binary)
        if interest is not None:
            kept = read_interesting(path, interest, blob, examine)
            collected.texts.update(kept.texts)
            collected.packages.extend(kept.packages)
            collected.binaries.extend(kept.binaries)
            collected.findings.extend(kept.findings)


@dataclass
class Kept:
    """What a file of interest contributes: text, package lists, embedded device code, problems."""

    texts: dict[str, str] = field(default_factory=dict)
    packages: list[PackageFiles] = field(default_factory=list)
    binaries: list[GpuBinary] = field(default_factory=list)
    findings: list[ScanFinding] = field(default_factory=list)


def read_interesting(path: str, interest: Interest, blob: Blob, examine: Examine) -> Kept:
    """Read a file of interest: keep its text, parse its database, or examine the device code it embeds."""
    from kaudit.walk import embedded

    kept = Kept()
    if blob.size > EMBEDDED_LIMIT or (interest is Interest.TEXT and blob.size > TEXT_LIMIT):
        return kept
    data = blob.read(0, blob.size)
    try:
        if interest is Interest.TEXT:
            kept.texts[path] = data.decode("utf-8", "replace")
        elif interest is Interest.RPMDB:
            from kaudit.owners.rpm import read_rpmdb

            kept.packages.extend(read_rpmdb(data, path))
        elif interest is Interest.MIOPEN:
            kept.texts[path] = embedded.miopen_index(path, data)
        elif interest is Interest.COMPUTECACHE:
            facts, cubin = embedded.computecache_entry(data)
            kept.texts[path] = json.dumps({"computecache": facts})
            _examine_embedded(f"{path}!/cubin", cubin, examine, kept)
        else:
            payloads = embedded.pickle_payloads(data) if interest is Interest.PICKLE else embedded.carved_elves(data)
            for name, payload in payloads:
                _examine_embedded(f"{path}!/{name}", payload, examine, kept)
    except Error as exc:
        kept.findings.append(ScanFinding(path, FindingKind.MALFORMED, exc.diagnostics()))
    return kept


def _examine_embedded(path: str, payload: bytes, examine: Examine, kept: Kept) -> None:
    blob = BytesBlob(payload)
    binary, problems = examine(Candidate(path, len(payload), payload[:SNIFF_BYTES], held_blob(blob)))
    kept.findings.extend(problems)
    if binary is not None:
        kept.binaries.append(binary)


def _spill(head: bytes, stream: IO[bytes], size: int, directory: str) -> tuple[str, str]:
    """Write a member into a new private file in ``directory``; its path and sha256."""
    fd, path = tempfile.mkstemp(dir=directory, prefix="gpu-")
    digest = hashlib.sha256(head)
    written = len(head)
    with os.fdopen(fd, "wb") as handle:
        handle.write(head)
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            handle.write(chunk)
            written += len(chunk)
    if written != size:
        os.unlink(path)
        raise MalformedBinary(f"file is shorter ({written} bytes) than its tar header says")
    return path, digest.hexdigest()


def parse_deferred(deferred: Deferred, examine: Examine) -> tuple[GpuBinary | None, list[ScanFinding]]:
    """Parse a file a layer walk set aside, then delete its copy."""
    try:
        with open(deferred.spilled, "rb", buffering=0) as handle:
            head = handle.read(SNIFF_BYTES)
            blob = FileBlob(handle.fileno(), deferred.size)
            return examine(Candidate(deferred.path, deferred.size, head, held_blob(blob), sha256=deferred.sha256))
    except OSError as exc:
        return None, [ScanFinding(deferred.path, FindingKind.UNREADABLE, f"cannot read its copy: {exc.strerror}")]
    finally:
        with contextlib.suppress(OSError):
            os.unlink(deferred.spilled)


class _Spool(AbstractContextManager[tuple[Blob, str]]):
    """The member's content as a blob (in memory, or a temporary file for large members) and its sha256."""

    def __init__(self, head: bytes, stream: IO[bytes], size: int) -> None:
        self._head, self._stream, self._size = head, stream, size
        self._file: tempfile._TemporaryFileWrapper[bytes] | None = None

    def __enter__(self) -> tuple[Blob, str]:
        if self._size <= IN_MEMORY_LIMIT:
            data = bytearray(self._size)  # filled in place: head + rest would hold the member twice
            data[: len(self._head)] = self._head
            filled = len(self._head)
            view = memoryview(data)
            stream = typing.cast(io.BufferedIOBase, self._stream)  # tar members and files are buffered readers
            while filled < self._size and (count := stream.readinto(view[filled:])):
                filled += count
            if filled != self._size:
                raise MalformedBinary(f"file is shorter ({filled} bytes) than its tar header says")
            return BytesBlob(data), hashlib.sha256(data).hexdigest()
        digest = hashlib.sha256(self._head)
        self._file = tempfile.NamedTemporaryFile(prefix="kaudit-member-")
        self._file.write(self._head)
        written = len(self._head)
        while chunk := self._stream.read(_CHUNK):
            digest.update(chunk)
            self._file.write(chunk)
            written += len(chunk)
        self._file.flush()
        return FileBlob(self._file.fileno(), written), digest.hexdigest()

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()


def walk_directory(root: str, examine: Examine, sniff: Sniff, limits: Limits = Limits()) -> LayerResult:
    """An unpacked root filesystem (``dir:PATH``) as a single layer: same result, read from disk."""
    collected = _Collected()

    def relative(full: str) -> str:
        return os.path.relpath(full, root).replace(os.sep, "/")

    def unreadable(full: str, reason: str) -> None:
        collected.findings.append(ScanFinding(relative(full), FindingKind.UNREADABLE, reason))

    for full, size, target in list_tree(root, unreadable):
        path = relative(full)
        if target is not None:
            collected.symlinks[path] = target
            continue
        try:
            with open(full, "rb", buffering=0) as stream:
                _regular(path, size, stream, collected, examine, sniff, limits)
        except OSError as exc:
            unreadable(full, f"cannot read: {exc.strerror}")
        except MalformedBinary as exc:
            collected.findings.append(ScanFinding(path, FindingKind.MALFORMED, exc.diagnostics()))
    return _result(f"dir:{root}", "", collected)
