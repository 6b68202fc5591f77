"""Clang offload bundles, their compressed form CCOB (v1-v3), and LLVM OffloadBinary headers.

gpu-binary-formats.md §5. A ``.hip_fatbin`` section holds several bundles (one per translation unit),
each plain (``__CLANG_OFFLOAD_BUNDLE__``) or compressed (``CCOB``), padded apart: scanning continues after
the end of each. A CCOB's ``total_file_size`` (v2+) bounds it; its hash is the first 8 bytes of the MD5
of the uncompressed bundle, checked after decompression.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from kaudit.binfmt.bounded import DEFAULT_MAX_PAYLOAD, check_range, zlib_stream, zstd_frame
from kaudit.errors import LimitExceeded, MalformedBinary

BUNDLE_MAGIC = b"__CLANG_OFFLOAD_BUNDLE__"
CCOB_MAGIC = b"CCOB"
OFFLOAD_BINARY_MAGIC = b"\x10\xff\x10\xad"
MAX_BUNDLE_ENTRIES = 4096
MAX_ID_LENGTH = 4096
CCOB_METHOD_ZLIB, CCOB_METHOD_ZSTD = 0, 1
_CCOB_LAYOUTS = {
    # version: (layout after magic+version+method, field names)
    1: struct.Struct("<IQ"),  # uncompressed size, hash
    2: struct.Struct("<IIQ"),  # total file size, uncompressed size, hash
    3: struct.Struct("<QQQ"),  # total file size, uncompressed size, hash
}


@dataclass(frozen=True)
class BundleEntry:
    """One entry of an uncompressed bundle; ``data`` views the code object (empty for the host entry)."""

    index: int
    bundle_id: str
    offset: int
    data: memoryview

    @property
    def kind(self) -> str:
        return self.bundle_id.split("-", 1)[0]

    @property
    def triple(self) -> str:
        parts = self.bundle_id.split("-", 5)
        return "-".join(parts[1:5]) if len(parts) >= 5 else ""

    @property
    def target_id(self) -> str:
        """``hipv4-amdgcn-amd-amdhsa--gfx942:sramecc+:xnack-`` → ``gfx942:sramecc+:xnack-``."""
        parts = self.bundle_id.split("-", 5)
        return parts[5] if len(parts) == 6 else ""


@dataclass(frozen=True)
class Ccob:
    """A compressed bundle header; ``payload`` is the decompressed (plain) bundle."""

    version: int
    method: str
    total_size: int
    uncompressed_size: int
    payload: bytes


def parse_bundle(data: bytes) -> tuple[list[BundleEntry], int]:
    """Entries of the plain bundle at the start of ``data`` and the bundle's extent in bytes."""
    if not data.startswith(BUNDLE_MAGIC):
        raise MalformedBinary("not a clang offload bundle (bad magic)")
    check_range(len(data), 24, 8, "bundle entry count")
    (count,) = struct.unpack_from("<Q", data, 24)
    if count > MAX_BUNDLE_ENTRIES:
        raise LimitExceeded(f"offload bundle claims {count} entries, over the limit of {MAX_BUNDLE_ENTRIES}")
    pos, extent = 32, 32
    entries = []
    view = memoryview(data)  # entries view the bundle: a decompressed bundle can be 20 MB
    for index in range(count):
        check_range(len(data), pos, 24, f"bundle entry #{index} header")
        offset, size, id_len = struct.unpack_from("<QQQ", data, pos)
        if id_len > MAX_ID_LENGTH:
            raise MalformedBinary(f"bundle entry #{index} ID length {id_len} is implausible", offset=pos)
        check_range(len(data), pos + 24, id_len, f"bundle entry #{index} ID")
        bundle_id = data[pos + 24 : pos + 24 + id_len].decode("ascii", "replace")
        pos += 24 + id_len
        check_range(len(data), offset, size, f"bundle entry {bundle_id!r} code object")
        entries.append(BundleEntry(index, bundle_id, offset, view[offset : offset + size]))
        extent = max(extent, pos, offset + size)
    return entries, extent


def parse_ccob(data: bytes, cap: int = DEFAULT_MAX_PAYLOAD) -> Ccob:
    """Decompress the CCOB at the start of ``data`` (``data`` may run on past it)."""
    if not data.startswith(CCOB_MAGIC):
        raise MalformedBinary("not a compressed offload bundle (bad magic)")
    check_range(len(data), 4, 4, "CCOB header")
    version, method_code = struct.unpack_from("<HH", data, 4)
    layout = _CCOB_LAYOUTS.get(version)
    if layout is None:
        raise MalformedBinary(f"CCOB version {version} is not one of 1, 2, 3")
    check_range(len(data), 8, layout.size, f"CCOB v{version} header")
    header_size = 8 + layout.size
    if version == 1:
        uncompressed, digest = layout.unpack_from(data, 8)
        total = len(data)  # v1 records no size: it runs to the end of its section
    else:
        total, uncompressed, digest = layout.unpack_from(data, 8)
        if total < header_size:
            raise MalformedBinary(f"CCOB total size {total} is smaller than its header")
        check_range(len(data), 0, total, "CCOB")
    raw = data[header_size:total]
    if method_code == CCOB_METHOD_ZSTD:
        method, payload = "zstd", zstd_frame(raw, uncompressed, cap)
    elif method_code == CCOB_METHOD_ZLIB:
        method, payload = "zlib", zlib_stream(raw, uncompressed, cap)
    else:
        raise MalformedBinary(f"CCOB compression method {method_code} is unknown (0 = zlib, 1 = zstd)")
    if struct.unpack("<Q", hashlib.md5(payload).digest()[:8])[0] != digest:
        raise MalformedBinary("CCOB hash does not match the MD5 of its decompressed bundle")
    return Ccob(version, method, total, uncompressed, payload)


def iter_bundles(data: bytes) -> Iterator[tuple[int, str, bytes, int]]:
    """``(offset, "plain"|"ccob", bytes, extent)`` for each bundle in a section, in order."""
    pos = 0
    while pos < len(data):
        plain = data.find(BUNDLE_MAGIC, pos)
        compressed = data.find(CCOB_MAGIC, pos)
        hits = [h for h in (plain, compressed) if h >= 0]
        if not hits:
            return
        start = min(hits)
        if start == plain:
            _entries, extent = parse_bundle(data[start:])
            yield start, "plain", data[start : start + extent], extent
        else:
            check_range(len(data), start, 8, "CCOB header")
            (version,) = struct.unpack_from("<H", data, start + 4)
            if version == 1:
                extent = len(data) - start
            else:
                layout = _CCOB_LAYOUTS.get(version)
                if layout is None:
                    raise MalformedBinary(f"CCOB version {version} is not one of 1, 2, 3", offset=start)
                check_range(len(data), start + 8, layout.size, "CCOB header")
                extent = int(layout.unpack_from(data, start + 8)[0])
                if extent < 8 + layout.size:
                    raise MalformedBinary(f"CCOB total size {extent} is smaller than its header", offset=start)
                check_range(len(data), start, extent, "CCOB")
            yield start, "ccob", data[start : start + extent], extent
        pos = start + extent


@dataclass(frozen=True)
class OffloadImage:
    """One image of an LLVM OffloadBinary (``.llvm.offloading``, new offload driver)."""

    image_kind: int
    offload_kind: int
    strings: dict[str, str]
    data: bytes


_OFFLOAD_HEADER = struct.Struct("<4sIQQQ")
_OFFLOAD_ENTRY = struct.Struct("<HHIQQQQ")
OFFLOAD_IMAGE_KINDS = {1: "object", 2: "bitcode", 3: "cubin", 4: "fatbinary", 5: "ptx", 6: "spirv"}


def iter_offload_binaries(data: bytes) -> Iterator[OffloadImage]:
    """Images of the OffloadBinaries concatenated in ``data``."""
    pos = 0
    while pos + _OFFLOAD_HEADER.size <= len(data):
        magic, _version, total, entry_offset, entry_size = _OFFLOAD_HEADER.unpack_from(data, pos)
        if magic != OFFLOAD_BINARY_MAGIC:
            return
        check_range(len(data), pos, total, "OffloadBinary")
        blob = data[pos : pos + total]
        check_range(len(blob), entry_offset, max(entry_size, _OFFLOAD_ENTRY.size), "OffloadBinary entry")
        image_kind, offload_kind, _flags, str_off, str_count, image_off, image_size = _OFFLOAD_ENTRY.unpack_from(
            blob, entry_offset
        )
        if str_count > MAX_BUNDLE_ENTRIES:
            raise LimitExceeded(f"OffloadBinary claims {str_count} strings")
        strings: dict[str, str] = {}
        for i in range(str_count):
            check_range(len(blob), str_off + 16 * i, 16, "OffloadBinary string entry")
            key_off, value_off = struct.unpack_from("<QQ", blob, str_off + 16 * i)
            strings[_cstr(blob, key_off)] = _cstr(blob, value_off)
        check_range(len(blob), image_off, image_size, "OffloadBinary image")
        yield OffloadImage(image_kind, offload_kind, strings, blob[image_off : image_off + image_size])
        pos += max(total, _OFFLOAD_HEADER.size)
        pos = (pos + 7) & ~7


def _cstr(data: bytes, offset: int) -> str:
    if offset >= len(data):
        raise MalformedBinary(f"OffloadBinary string offset {offset:#x} is outside the binary")
    end = data.find(b"\0", offset)
    return data[offset : end if end >= 0 else len(data)].decode("utf-8", "replace")
