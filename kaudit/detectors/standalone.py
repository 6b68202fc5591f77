"""Detectors for device code stored as files of its own: cubins, HSACO, fatbins, bundles, CCOBs, PTX."""

from __future__ import annotations

import struct

from kaudit.binfmt.bounded import Blob
from kaudit.binfmt.bundle import BUNDLE_MAGIC, CCOB_MAGIC, OFFLOAD_BINARY_MAGIC
from kaudit.binfmt.elf import ELF_MAGIC, EM_AMDGPU, EM_CUDA
from kaudit.binfmt.fatbin import FATBIN_MAGIC_BYTES
from kaudit.binfmt.ptx import looks_like_ptx
from kaudit.detectors._amd import describe_bundles, describe_offload_binaries, hsaco_code
from kaudit.detectors._nvidia import Stored, cubin_code, describe_fatbin, ptx_code
from kaudit.detectors.interface import Detection, Detector

MAX_STANDALONE_BYTES = 1 << 30
"""Standalone device objects are read whole; a larger one is refused (the biggest real cubins are ~100 MB)."""


def _machine(head: bytes) -> int | None:
    if len(head) < 20 or not head.startswith(ELF_MAGIC) or head[5] != 1:
        return None
    return int(struct.unpack_from("<H", head, 18)[0])


def _read_all(blob: Blob) -> bytes:
    from kaudit.errors import LimitExceeded

    if blob.size > MAX_STANDALONE_BYTES:
        raise LimitExceeded(f"{blob.size}-byte device object is over the {MAX_STANDALONE_BYTES}-byte limit")
    return blob.read(0, blob.size)


class CubinDetector(Detector):
    """A bare cubin (ELF, EM_CUDA), as ptxas writes it or a JIT cache stores it."""

    name = "cubin"

    def matches(self, head: bytes) -> bool:
        return _machine(head) == EM_CUDA

    def detect(self, blob: Blob, path: str) -> Detection:
        return Detection("cubin", device_code=[cubin_code(_read_all(blob), Stored("cubin"))])


class HsacoDetector(Detector):
    """A bare AMD code object (ELF, EM_AMDGPU)."""

    name = "hsaco"

    def matches(self, head: bytes) -> bool:
        return _machine(head) == EM_AMDGPU

    def detect(self, blob: Blob, path: str) -> Detection:
        return Detection("hsaco", device_code=[hsaco_code(_read_all(blob), "hsaco")])


class FatbinDetector(Detector):
    """A fatbin file (``nvcc -fatbin``, ``fatbinary --create``)."""

    name = "fatbin"

    def matches(self, head: bytes) -> bool:
        return head.startswith(FATBIN_MAGIC_BYTES)

    def detect(self, blob: Blob, path: str) -> Detection:
        detection = Detection("fatbin")
        describe_fatbin(blob, "", detection)
        return detection


class BundleDetector(Detector):
    """A clang offload bundle file, plain or compressed (CCOB)."""

    name = "offload-bundle"

    def matches(self, head: bytes) -> bool:
        return head.startswith(BUNDLE_MAGIC) or (head.startswith(CCOB_MAGIC) and len(head) >= 8)

    def detect(self, blob: Blob, path: str) -> Detection:
        data = _read_all(blob)
        detection = Detection("ccob" if data.startswith(CCOB_MAGIC) else "offload-bundle")
        describe_bundles(data, "", detection)
        return detection


class OffloadBinaryDetector(Detector):
    """An LLVM OffloadBinary file (``clang-offload-packager`` output)."""

    name = "offload-binary"

    def matches(self, head: bytes) -> bool:
        return head.startswith(OFFLOAD_BINARY_MAGIC)

    def detect(self, blob: Blob, path: str) -> Detection:
        detection = Detection("offload-binary")
        describe_offload_binaries(_read_all(blob), "", detection)
        return detection


class PtxDetector(Detector):
    """A PTX text file (``nvcc -ptx``, Triton and JIT caches)."""

    name = "ptx"

    def matches(self, head: bytes) -> bool:
        return looks_like_ptx(head)

    def detect(self, blob: Blob, path: str) -> Detection:
        return Detection("ptx", device_code=[ptx_code(_read_all(blob), Stored("ptx"))])
