"""Windows PE and Mach-O hosts, read with lief (imported only when such a file is met: ~235 ms).

CUDA for Windows names the section ``.nv_fatb`` (PE section names are cut to 8 bytes), HIP for Windows
``.hip_fat``; CUDA for macOS used ``__NV_CUDA,__nv_fatbin``. Section contents go to the same fatbin and
bundle walkers as ELF sections.
"""

from __future__ import annotations

import struct
from typing import Any

from kaudit.binfmt.bounded import Blob, Buffer, BytesBlob
from kaudit.detectors._amd import describe_bundles
from kaudit.detectors._nvidia import describe_fatbin
from kaudit.detectors.interface import Detection, Detector, Problem
from kaudit.errors import LimitExceeded, UnsupportedFormat
from kaudit.inventory import FindingKind

MACHO_MAGICS = (b"\xfe\xed\xfa\xce", b"\xce\xfa\xed\xfe", b"\xfe\xed\xfa\xcf", b"\xcf\xfa\xed\xfe")
MACHO_FAT_MAGIC = b"\xca\xfe\xba\xbe"
MAX_FOREIGN_BYTES = 1 << 30


def is_pe(head: bytes) -> bool:
    if len(head) < 0x40 or not head.startswith(b"MZ"):
        return False
    (pe_offset,) = struct.unpack_from("<I", head, 0x3C)
    return pe_offset + 4 <= len(head) and head[pe_offset : pe_offset + 4] == b"PE\0\0"


def is_macho(head: bytes) -> bool:
    if head[:4] in MACHO_MAGICS:
        return True
    # 0xCAFEBABE is also a Java class file; there the next word is the class version (>= 45), not an arch count.
    return head.startswith(MACHO_FAT_MAGIC) and len(head) >= 8 and 0 < struct.unpack_from(">I", head, 4)[0] < 45


def _kind_of_section(name: str) -> str | None:
    short = name.lstrip("_.").lower()
    if short.startswith(("nv_fat", "nvfatbin")):
        return "fatbin"
    if short.startswith("nv_rel"):
        return "relfatbin"
    if short.startswith("hip_fat"):
        return "bundle"
    return None


def _load_lief() -> Any:
    try:
        import lief
    except ImportError as exc:
        raise UnsupportedFormat(
            "unsupported host format: reading PE and Mach-O files needs lief (pip install lief)"
        ) from exc
    lief.logging.disable()
    return lief


class ForeignHostDetector(Detector):
    """PE (Windows DLL/EXE) and Mach-O hosts."""

    name = "foreign-host"

    def matches(self, head: bytes) -> bool:
        return is_pe(head) or is_macho(head)

    def detect(self, blob: Blob, path: str) -> Detection | None:
        if blob.size > MAX_FOREIGN_BYTES:
            raise LimitExceeded(f"{blob.size}-byte PE/Mach-O file is over the {MAX_FOREIGN_BYTES}-byte limit")
        head = blob.read(0, min(blob.size, 4096))
        fmt = "pe" if is_pe(head) else "macho"
        lief = _load_lief()
        data = blob.data if isinstance(blob, BytesBlob) else blob.read(0, blob.size)
        binary = lief.PE.parse(data) if fmt == "pe" else _first_macho(lief, data)
        if binary is None:
            return Detection(
                fmt,
                problems=[Problem(FindingKind.UNSUPPORTED, f"unsupported host format: lief cannot parse this {fmt}")],
            )
        detection = Detection(fmt)
        found = False
        for section in binary.sections:
            kind = _kind_of_section(str(section.name))
            if kind is None:
                continue
            found = True
            content = bytes(section.content)
            name = str(section.name)
            if kind == "bundle":
                describe_bundles(content, name, detection)
            else:
                describe_fatbin(BytesBlob(content), name, detection, relocatable=kind == "relfatbin")
        if not found:
            return None
        needed = []
        for library in getattr(binary, "libraries", ()):
            name = str(getattr(library, "name", library))
            if str(getattr(library, "command", "")).endswith("ID_DYLIB"):  # a Mach-O dylib's own name
                detection.soname = name
            else:
                needed.append(name)
        detection.needed = tuple(needed)
        return detection


def _first_macho(lief: Any, data: Buffer) -> Any:
    fat = lief.MachO.parse(data)
    if fat is None or len(fat) == 0:
        return None
    return fat.at(0)
