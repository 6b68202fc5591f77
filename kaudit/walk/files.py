"""Walk files, directory trees and archives (wheels and other zips, ``ar`` static libraries) in place.

Everything is opened read-only; symlinks inside trees are not followed and special files (FIFOs, devices)
are never opened, so a scan cannot block or escape the tree. Archive members are read without extracting
anything to disk, under size, count and depth limits.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import TracebackType

from kaudit.binfmt.bounded import Blob, BlobReader, BytesBlob, FileBlob, SubBlob, check_range
from kaudit.detectors.interface import SNIFF_BYTES
from kaudit.errors import LimitExceeded, MalformedBinary

ZIP_MAGIC = b"PK\x03\x04"
AR_MAGIC = b"!<arch>\n"
MAX_ARCHIVE_DEPTH = 3
MAX_ARCHIVE_MEMBERS = 200_000
MAX_MEMBER_BYTES = 2 << 30
"""Members are read into memory to be parsed; a larger member is reported, not read."""
_HASH_CHUNK = 1 << 20


@dataclass
class Candidate:
    """A file (or archive member) to offer to the detectors."""

    path: str
    size: int
    head: bytes
    open_blob: Callable[[], AbstractContextManager[Blob]]
    """Opens the full content; a context manager so file descriptors are closed promptly."""
    on_disk: bool = False
    """A plain file (not an archive member): another process can open it by its path."""
    sha256: str | None = None
    """The content's sha256 when the walker already computed it (image layers hash as they stream)."""


@dataclass
class TreeListing:
    """What a directory walk saw besides candidates: every regular file (with its size) and every symlink."""

    files: dict[str, int] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WalkProblem:
    """A file or member that could not be read; the walk went on."""

    path: str
    reason: str
    limit: bool = False


class _FileOpener:
    def __init__(self, path: str, size: int) -> None:
        self._path = path
        self._size = size
        self._fd = -1

    def __enter__(self) -> Blob:
        self._fd = os.open(self._path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        return FileBlob(self._fd, self._size)

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _Ready:
    """A context manager that hands out an already-open blob."""

    def __init__(self, blob: Blob) -> None:
        self._blob = blob

    def __enter__(self) -> Blob:
        return self._blob

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


def sha256_of(blob: Blob) -> str:
    """sha256 of a blob's content, read in 1 MiB chunks."""
    if isinstance(blob, BytesBlob):
        return hashlib.sha256(blob.data).hexdigest()
    digest = hashlib.sha256()
    for offset in range(0, blob.size, _HASH_CHUNK):
        digest.update(blob.read(offset, min(_HASH_CHUNK, blob.size - offset)))
    return digest.hexdigest()


def list_tree(root: str, on_error: Callable[[str, str], None]) -> Iterator[tuple[str, int, str | None]]:
    """``(path, size, symlink target)`` for every regular file and symlink under ``root``, in sorted order; the
    target is ``None`` for regular files. What cannot be listed or read goes to ``on_error(path, reason)`` and the
    walk goes on."""
    for directory, dirnames, filenames in os.walk(
        root, onerror=lambda exc: on_error(exc.filename or root, f"cannot list: {exc.strerror}")
    ):
        dirnames.sort()
        # os.walk lists symlinks to directories with the directories (and does not enter them)
        for name in [*sorted(filenames), *dirnames]:
            path = os.path.join(directory, name)
            try:
                info = os.lstat(path)
                target = os.readlink(path) if stat.S_ISLNK(info.st_mode) else None
            except OSError as exc:
                on_error(path, f"cannot read: {exc.strerror}")
                continue
            if target is not None or stat.S_ISREG(info.st_mode):
                yield path, info.st_size, target


class Walker:
    """Yields :class:`Candidate` files under the given paths; problems are collected in :attr:`problems`."""

    def __init__(self, *, sniff: Callable[[bytes], bool]) -> None:
        self.problems: list[WalkProblem] = []
        self.files_seen = 0
        self.bytes_seen = 0
        self.listings: dict[str, TreeListing] = {}
        """Per directory root walked: its files and symlinks, for the cache catalogers."""
        self._sniff = sniff

    def walk(self, root: str) -> Iterator[Candidate]:
        """Every regular file under ``root`` (a file or a directory), descending into archives."""
        try:
            info = os.stat(root)
        except OSError as exc:
            self.problems.append(WalkProblem(root, f"cannot read: {exc.strerror}"))
            return
        if stat.S_ISDIR(info.st_mode):
            yield from self._walk_tree(root)
        elif stat.S_ISREG(info.st_mode):
            yield from self._file(root, info.st_size)
        else:
            self.problems.append(WalkProblem(root, "not a regular file or directory; not opened"))

    def _walk_tree(self, root: str) -> Iterator[Candidate]:
        listing = self.listings[root] = TreeListing()
        for path, size, target in list_tree(root, lambda path, reason: self.problems.append(WalkProblem(path, reason))):
            if target is not None:
                listing.symlinks[path] = target
            else:
                listing.files[path] = size
                yield from self._file(path, size)

    def _file(self, path: str, size: int) -> Iterator[Candidate]:
        self.files_seen += 1
        self.bytes_seen += size
        opener = _FileOpener(path, size)
        try:
            with opener as blob:
                head = blob.read(0, min(size, SNIFF_BYTES))
                if head.startswith(AR_MAGIC) or head.startswith(ZIP_MAGIC):
                    yield from self._archive(path, blob, head, depth=1)
                    return
        except (OSError, MalformedBinary) as exc:
            self.problems.append(WalkProblem(path, f"cannot read: {getattr(exc, 'strerror', None) or exc}"))
            return
        if self._sniff(head):
            yield disk_candidate(path, size, head)

    def _archive(self, path: str, blob: Blob, head: bytes, depth: int) -> Iterator[Candidate]:
        if depth > MAX_ARCHIVE_DEPTH:
            self.problems.append(WalkProblem(path, f"archive nested deeper than {MAX_ARCHIVE_DEPTH}; not opened", True))
            return
        members = _ar_members(blob) if head.startswith(AR_MAGIC) else _zip_members(blob)
        try:
            for index, (name, member_blob) in enumerate(members):
                if index >= MAX_ARCHIVE_MEMBERS:
                    raise LimitExceeded(f"archive has over {MAX_ARCHIVE_MEMBERS} members")
                member_path = f"{path}!/{name}"
                if isinstance(member_blob, WalkProblem):
                    self.problems.append(WalkProblem(member_path, member_blob.reason, member_blob.limit))
                    continue
                self.files_seen += 1
                self.bytes_seen += member_blob.size
                if isinstance(member_blob, _ZipMember):
                    member_head = member_blob.head()
                else:
                    member_head = member_blob.read(0, min(member_blob.size, SNIFF_BYTES))
                if member_head.startswith(AR_MAGIC) or member_head.startswith(ZIP_MAGIC):
                    yield from self._archive(member_path, member_blob, member_head, depth + 1)
                elif self._sniff(member_head):
                    yield Candidate(member_path, member_blob.size, member_head, held_blob(member_blob))
        except (
            MalformedBinary,
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            OSError,
            EOFError,
            ValueError,
            NotImplementedError,
        ) as exc:
            self.problems.append(WalkProblem(path, f"archive unreadable: {exc}", isinstance(exc, LimitExceeded)))


def disk_candidate(path: str, size: int, head: bytes) -> Candidate:
    """A candidate for a plain file on disk."""
    return Candidate(path, size, head, lambda: _FileOpener(path, size), on_disk=True)


def held_blob(blob: Blob) -> Callable[[], AbstractContextManager[Blob]]:
    """A :attr:`Candidate.open_blob` for content already in hand (archive members, layer files, payloads)."""
    return lambda: _Ready(blob)


class _ZipMember:
    """A blob over one zip member, decompressed into memory on first full read (one member at a time)."""

    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        self._archive = archive
        self._info = info
        self._data: bytes | None = None

    @property
    def size(self) -> int:
        return self._info.file_size

    def head(self) -> bytes:
        with self._archive.open(self._info) as member:
            return member.read(SNIFF_BYTES)

    def read(self, offset: int, length: int) -> bytes:
        if self._data is None:
            # zipfile stops at the declared size and checks the CRC: a lying header cannot inflate more.
            with self._archive.open(self._info) as member:
                self._data = member.read(self._info.file_size)
            if len(self._data) != self._info.file_size:
                raise MalformedBinary(f"zip member is shorter ({len(self._data)} bytes) than its header says")
        check_range(len(self._data), offset, length, "read")
        return self._data[offset : offset + length]


def _zip_members(blob: Blob) -> Iterator[tuple[str, Blob | WalkProblem]]:
    """Regular-file members of a zip archive (a wheel), size-capped."""
    with zipfile.ZipFile(BlobReader(blob)) as archive:
        for info in archive.infolist():
            if info.is_dir() or stat.S_ISLNK(info.external_attr >> 16):
                continue
            if info.file_size > MAX_MEMBER_BYTES:
                yield (
                    info.filename,
                    WalkProblem("", f"member of {info.file_size} bytes is over the limit", True),
                )
                continue
            yield info.filename, _ZipMember(archive, info)


def _ar_members(blob: Blob) -> Iterator[tuple[str, Blob | WalkProblem]]:
    """Members of a System V / GNU / BSD ``ar`` archive, as windows on the archive (no copies)."""
    offset = len(AR_MAGIC)
    long_names = b""
    while offset + 60 <= blob.size:
        header = blob.read(offset, 60)
        if header[58:60] != b"`\n":
            raise MalformedBinary("ar member header has a bad terminator", offset=offset)
        raw_name = header[:16].decode("ascii", "replace").rstrip()
        try:
            size = int(header[48:58].decode("ascii").strip() or "0")
        except ValueError as exc:
            raise MalformedBinary("ar member size is not a number", offset=offset) from exc
        data_start = offset + 60
        if data_start + size > blob.size:
            raise MalformedBinary("ar member runs past the end of the archive", offset=offset)
        name, skip = raw_name, 0
        if raw_name.startswith("#1/"):  # BSD: the name follows the header
            length = int(raw_name[3:] or "0")
            name = blob.read(data_start, min(length, size)).rstrip(b"\0").decode("utf-8", "replace")
            skip = length
        elif raw_name == "//":
            long_names = blob.read(data_start, size)
        elif raw_name.startswith("/") and raw_name[1:].isdigit():  # GNU long name reference
            start = int(raw_name[1:])
            end = long_names.find(b"/\n", start)
            name = long_names[start : end if end >= 0 else None].decode("utf-8", "replace")
        else:
            name = raw_name.rstrip("/")
        if raw_name not in ("/", "//", "/SYM64/", "__.SYMDEF", "__.SYMDEF SORTED") and name:
            yield name, SubBlob(blob, data_start + skip, size - skip)
        offset = data_start + size + (size & 1)
