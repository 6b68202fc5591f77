"""NVIDIA fatbin containers: 16-byte container headers, 64+-byte entry headers, LZ4/ZSTD payloads.

gpu-binary-formats.md §2. A section holds several containers back to back, 8-byte aligned; each
container holds entries chained by ``header_size + padded_size``. Entry payloads are read one at a time
from the blob, so memory stays at the size of one payload.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from kaudit.binfmt import tables as t
from kaudit.binfmt.bounded import DEFAULT_MAX_PAYLOAD, Blob, Buffer, check_range, lz4_block, zstd_frame
from kaudit.errors import LimitExceeded, MalformedBinary

FATBIN_MAGIC = 0xBA55ED50
FATBIN_MAGIC_BYTES = struct.pack("<I", FATBIN_MAGIC)
_CONTAINER = struct.Struct("<IHHQ")  # magic, version, header size, size of the entries that follow
# kind, format version, header size, padded payload size, compressed size, options offset,
# minor, major, arch, identifier offset, identifier length, flags, reserved, uncompressed size
_ENTRY = struct.Struct("<HHIQIIHHIIIQQQ")
ENTRY_FORMAT_VERSION = 0x0101
MAX_ENTRIES_PER_CONTAINER = 100_000
_SCAN_CHUNK = 1 << 16


@dataclass(frozen=True)
class FatbinEntry:
    """One entry header, plus where its payload lies in the blob."""

    container: int
    index: int
    offset: int
    kind: int
    header_size: int
    padded_size: int
    compressed_size: int
    minor: int
    major: int
    arch: int
    flags: int
    uncompressed_size: int
    identifier: str | None
    options: str | None

    @property
    def payload_offset(self) -> int:
        return self.offset + self.header_size

    @property
    def compression(self) -> str:
        if self.flags & t.FLAG_LZ4:
            return "lz4"
        if self.flags & t.FLAG_ZSTD:
            return "zstd"
        return "none"

    @property
    def stored_size(self) -> int:
        return self.compressed_size if self.compression != "none" and self.compressed_size else self.padded_size

    @property
    def location(self) -> str:
        return f"container#{self.container}/entry#{self.index}"


def iter_containers(blob: Blob) -> Iterator[tuple[int, int, int]]:
    """``(index, offset, entries_size)`` of each container; scans 8-byte steps for the next magic."""
    offset = 0
    index = 0
    while offset + _CONTAINER.size <= blob.size:
        found = _find_magic(blob, offset)
        if found is None:
            return
        _magic, _version, header_size, entries_size = _CONTAINER.unpack(blob.read(found, _CONTAINER.size))
        if header_size < _CONTAINER.size:
            raise MalformedBinary(f"fatbin container header size {header_size} is below 16", offset=found)
        check_range(blob.size, found, header_size + entries_size, "fatbin container")
        yield index, found + header_size, entries_size
        index += 1
        offset = found + header_size + entries_size


def _find_magic(blob: Blob, start: int) -> int | None:
    """First 8-byte-aligned container magic at or after ``start`` (padding between containers is small)."""
    pos = (start + 7) & ~7
    while pos + 4 <= blob.size:
        chunk = blob.read(pos, min(_SCAN_CHUNK, blob.size - pos))
        hit = chunk.find(FATBIN_MAGIC_BYTES)
        while hit >= 0 and (pos + hit) % 8:
            hit = chunk.find(FATBIN_MAGIC_BYTES, hit + 1)
        if hit >= 0:
            return pos + hit
        if len(chunk) < 4:
            return None
        pos += ((len(chunk) - 4) // 8 + 1) * 8  # first aligned position this chunk could not check
    return None


def iter_entries(blob: Blob, container: int, start: int, size: int) -> Iterator[FatbinEntry]:
    """The entries of one container spanning ``[start, start+size)``."""
    offset, end, index = start, start + size, 0
    while offset + _ENTRY.size <= end:
        if index >= MAX_ENTRIES_PER_CONTAINER:
            raise LimitExceeded(f"fatbin container has over {MAX_ENTRIES_PER_CONTAINER} entries", offset=offset)
        header = blob.read(offset, _ENTRY.size)
        (kind, fmt, header_size, padded, compressed, options_off, minor, major, arch,
         ident_off, ident_len, flags, _reserved, uncompressed) = _ENTRY.unpack(header)  # fmt: skip
        if fmt != ENTRY_FORMAT_VERSION:
            raise MalformedBinary(f"fatbin entry format version {fmt:#06x} is not 0x0101", offset=offset)
        if header_size < _ENTRY.size:
            raise MalformedBinary(f"fatbin entry header size {header_size} is below 64", offset=offset)
        if offset + header_size + padded > end:
            raise MalformedBinary(f"fatbin entry ({header_size}+{padded} bytes) runs past its container", offset=offset)
        if compressed > padded:
            raise MalformedBinary(
                f"fatbin entry compressed size {compressed} exceeds its stored size {padded}", offset=offset
            )
        extra = blob.read(offset, header_size) if header_size > _ENTRY.size else header
        yield FatbinEntry(
            container=container,
            index=index,
            offset=offset,
            kind=kind,
            header_size=header_size,
            padded_size=padded,
            compressed_size=compressed,
            minor=minor,
            major=major,
            arch=arch,
            flags=flags,
            uncompressed_size=uncompressed,
            identifier=_region_string(extra, ident_off, ident_len),
            options=_options(extra, options_off),
        )
        offset += header_size + padded
        index += 1


def _region_string(header: bytes, offset: int, length: int) -> str | None:
    if not offset or not length or offset + length > len(header):
        return None
    return header[offset : offset + length].rstrip(b"\0").decode("utf-8", "replace")


def _options(header: bytes, descriptor_offset: int) -> str | None:
    """The ``{u32 offset, u32 length}`` options descriptor (ptxas/cicc options; §2.2)."""
    if not descriptor_offset or descriptor_offset + 8 > len(header):
        return None
    offset, length = struct.unpack_from("<II", header, descriptor_offset)
    text = _region_string(header, offset, length)
    # sm_100+ ELF entries put a NUL and a copy of .nv.compat here, not text.
    if text is None or not text.isprintable():
        return None
    return text.strip() or None


def read_payload(blob: Blob, entry: FatbinEntry, cap: int = DEFAULT_MAX_PAYLOAD) -> Buffer:
    """The entry's payload, decompressed by its flags, capped at ``cap`` bytes."""
    compression = entry.compression
    if compression == "none":
        return blob.read(entry.payload_offset, entry.padded_size)
    if not entry.compressed_size:
        raise MalformedBinary("compressed fatbin entry records no compressed size", offset=entry.offset)
    if entry.uncompressed_size > cap:
        raise LimitExceeded(
            f"fatbin entry claims {entry.uncompressed_size} bytes decompressed, over the {cap}-byte limit; "
            "not decompressed",
            offset=entry.offset,
        )
    raw = blob.read(entry.payload_offset, entry.compressed_size)
    if compression == "lz4":
        return lz4_block(raw, entry.uncompressed_size, cap)
    return zstd_frame(raw, entry.uncompressed_size or None, cap)
