"""Bounds-checked random access to bytes, and decompression under an output cap.

Parsers never index raw buffers directly: they ask a :class:`Blob` for ``(offset, length)`` and get
:class:`~kaudit.errors.MalformedBinary` when the range leaves the data. A :class:`FileBlob` reads with
``os.pread`` so a 170 MB library is never held in memory at once; a :class:`BytesBlob` serves nested
objects that were decompressed.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from typing import Protocol

from kaudit.errors import LimitExceeded, MalformedBinary

DEFAULT_MAX_PAYLOAD = 512 * 1024 * 1024
"""Largest decompressed payload kaudit will allocate (a real cubin is at most tens of MB)."""


class Blob(Protocol):
    """Random-access, read-only bytes of a known size."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``, or :class:`MalformedBinary` if the range is outside."""
        ...


Buffer = bytes | bytearray
"""Payload bytes: ``bytes`` as read from a file, ``bytearray`` as decompressed in place."""


def check_range(size: int, offset: int, length: int, what: str) -> None:
    """Raise :class:`MalformedBinary` unless ``[offset, offset+length)`` lies within ``size`` bytes."""
    if offset < 0 or length < 0 or offset + length > size:
        raise MalformedBinary(
            f"{what} ({length} bytes at {offset:#x}) extends past the end of the data ({size} bytes)",
            offset=offset,
        )


class BytesBlob:
    """A blob over bytes already in memory."""

    def __init__(self, data: Buffer) -> None:
        self._data = data

    @property
    def size(self) -> int:
        return len(self._data)

    @property
    def data(self) -> Buffer:
        return self._data

    def read(self, offset: int, length: int) -> bytes:
        check_range(len(self._data), offset, length, "read")
        return bytes(self._data[offset : offset + length])


class FileBlob:
    """A blob over an open file descriptor; reads with ``os.pread`` and never loads the whole file."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        check_range(self._size, offset, length, "read")
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise MalformedBinary(f"file shrank while reading: wanted {length} bytes at {offset:#x}", offset=offset)
        return data


class SubBlob:
    """A window ``[base, base+size)`` of another blob (an ELF section, a bundle inside a section)."""

    def __init__(self, parent: Blob, base: int, size: int) -> None:
        check_range(parent.size, base, size, "window")
        self._parent = parent
        self._base = base
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    @property
    def base(self) -> int:
        return self._base

    def read(self, offset: int, length: int) -> bytes:
        check_range(self._size, offset, length, "read")
        return self._parent.read(self._base + offset, length)


class BlobReader(io.RawIOBase):
    """A seekable read-only file object over a blob, for libraries that want one (zipfile, pyelftools)."""

    def __init__(self, blob: Blob) -> None:
        self._blob = blob
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._blob.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        # the blob's own bytes, without RawIOBase's intermediate buffer: zip members are read whole
        end = self._blob.size if size is None or size < 0 else min(self._blob.size, self._pos + size)
        data = self._blob.read(self._pos, end - self._pos) if end > self._pos else b""
        self._pos += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def unpack_from(layout: struct.Struct, data: bytes, offset: int, what: str) -> tuple[int, ...]:
    """``layout.unpack_from`` with a bounds check that names what was being read."""
    check_range(len(data), offset, layout.size, what)
    return layout.unpack_from(data, offset)


def cstring(data: bytes, offset: int, limit: int = 4096) -> str:
    """The NUL-terminated string at ``offset`` (at most ``limit`` bytes), decoded leniently."""
    if offset < 0 or offset >= len(data):
        raise MalformedBinary(f"string offset {offset:#x} outside its table ({len(data)} bytes)", offset=offset)
    end = data.find(b"\0", offset, offset + limit)
    if end < 0:
        end = min(len(data), offset + limit)
    return data[offset:end].decode("utf-8", "replace")


def _check_claim(claimed: int, cap: int, what: str) -> None:
    if claimed > cap:
        raise LimitExceeded(f"{what} claims {claimed} bytes decompressed, over the {cap}-byte limit; not decompressed")


def lz4_block(raw: bytes, expected_size: int, cap: int = DEFAULT_MAX_PAYLOAD) -> bytearray:
    """Decompress a raw LZ4 block (no frame) that must inflate to exactly ``expected_size`` bytes.

    cramjam decompresses into a buffer of the expected size: the lz4 package allocates its output twice
    (2x the payload at peak) and was 7x slower on a 2.8 MB PTX module (docs/performance.md).
    """
    import cramjam

    _check_claim(expected_size, cap, "LZ4 payload")
    out = bytearray(expected_size)
    try:
        written = cramjam.lz4.decompress_block_into(raw, out)
    except cramjam.DecompressionError as exc:
        raise MalformedBinary(f"LZ4 payload does not decompress: {exc}") from exc
    if written != expected_size:
        raise MalformedBinary(f"LZ4 payload inflated to {written} bytes, header says {expected_size}")
    return out


def zstd_frame(raw: bytes, expected_size: int | None, cap: int = DEFAULT_MAX_PAYLOAD) -> bytes:
    """Decompress a zstd frame under ``cap``; when ``expected_size`` is given the result must match it."""
    import zstandard

    limit = cap if expected_size is None else expected_size
    _check_claim(limit, cap, "zstd payload")
    try:
        params = zstandard.get_frame_parameters(raw)
    except zstandard.ZstdError as exc:
        raise MalformedBinary(f"zstd payload has no valid frame header: {exc}") from exc
    if params.content_size and params.content_size != zstandard.CONTENTSIZE_UNKNOWN:
        _check_claim(params.content_size, limit, "zstd frame")
    try:
        out: bytes = zstandard.ZstdDecompressor().decompress(raw, max_output_size=max(limit, 1))
    except zstandard.ZstdError as exc:
        raise MalformedBinary(f"zstd payload does not decompress: {exc}") from exc
    if expected_size is not None and len(out) != expected_size:
        raise MalformedBinary(f"zstd payload inflated to {len(out)} bytes, header says {expected_size}")
    return out


def zlib_stream(raw: bytes, expected_size: int, cap: int = DEFAULT_MAX_PAYLOAD) -> bytes:
    """Decompress a zlib stream that must inflate to exactly ``expected_size`` bytes."""
    _check_claim(expected_size, cap, "zlib payload")
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(raw, expected_size + 1)
    except zlib.error as exc:
        raise MalformedBinary(f"zlib payload does not decompress: {exc}") from exc
    if len(out) != expected_size:
        raise MalformedBinary(f"zlib payload inflated to {len(out)}+ bytes, header says {expected_size}")
    return out
