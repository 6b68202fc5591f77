"""NVIDIA cubins (device ELF, EM_CUDA): architecture, toolkit, kernels and their resources.

gpu-binary-formats.md §3: the SM number sits in different ``e_flags`` bits for ABI V1 (EI_ABIVERSION 7)
and V2 (8); CUDA 13 moved the ``a`` (accelerator) bit into ``.nv.compat`` attribute 9; ``f`` is not in
the cubin at all (only in the fatbin entry flags or the tkinfo ``-arch`` string). Kernels are symbols
with ``STO_CUDA_ENTRY`` in ``st_other`` — the raw byte, which pyelftools would drop.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from kaudit.binfmt import tables as t
from kaudit.binfmt.bounded import BytesBlob, cstring
from kaudit.binfmt.elf import EM_CUDA, ET_REL, SHT_NOTE, STT_FUNC, ElfFile
from kaudit.errors import MalformedBinary

_U32 = struct.Struct("<I")
_TKINFO_ARCH = re.compile(r"-arch[= ](sm_\d+[af]?)")


@dataclass
class CubinKernel:
    name: str
    code_size: int
    registers: int | None = None
    frame_bytes: int | None = None
    shared_bytes: int | None = None
    max_threads: int | None = None


@dataclass
class CubinInfo:
    """What a cubin says about itself."""

    abi_version: int
    elf_type: int
    e_flags: int
    sm: int
    accelerator: bool
    family: bool
    virtual_sm: int | None
    toolkit: str | None
    tool: str | None
    tool_options: str | None
    kernels: list[CubinKernel] = field(default_factory=list)
    has_code: bool = False

    @property
    def arch(self) -> str:
        suffix = "a" if self.accelerator else "f" if self.family else ""
        return f"sm_{self.sm}{suffix}"

    @property
    def is_link_stub(self) -> bool:
        """nvlink's ``--register-link-binaries`` output: an image with no code and no kernels (§1.2)."""
        return not self.kernels and not self.has_code and self.elf_type != ET_REL

    @property
    def relocatable(self) -> bool:
        return self.elf_type == ET_REL


def eiattr_records(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """``(format, attribute, value)`` for each record of a ``.nv.info``/``.nv.compat`` section (§3.7)."""
    pos = 0
    while pos + 2 <= len(data):
        fmt, attr = data[pos], data[pos + 1]
        if fmt == t.EIFMT_SVAL:
            if pos + 4 > len(data):
                raise MalformedBinary("EIATTR record header is truncated", offset=pos)
            (size,) = struct.unpack_from("<H", data, pos + 2)
            value = data[pos + 4 : pos + 4 + size]
            if len(value) != size:
                raise MalformedBinary(f"EIATTR 0x{attr:02x} value runs past its section", offset=pos)
            pos += 4 + size
        elif fmt in (t.EIFMT_NVAL, t.EIFMT_BVAL, t.EIFMT_HVAL):
            value = data[pos + 2 : pos + 4]
            pos += 4
        else:
            raise MalformedBinary(f"unknown EIATTR record format {fmt}", offset=pos)
        yield fmt, attr, value


def _pairs(value: bytes) -> tuple[int, int] | None:
    if len(value) < 8:
        return None
    a, b = struct.unpack_from("<II", value)
    return a, b


def parse_cubin(data: bytes) -> CubinInfo:
    """Describe a cubin held in memory."""
    elf = ElfFile(BytesBlob(data))
    if elf.machine != EM_CUDA:
        raise MalformedBinary(f"not a cubin (e_machine {elf.machine})")
    flags = elf.flags
    if elf.abi_version >= t.CUDA_ABI_V2:
        sm, accelerator, virtual_sm = (flags >> 8) & 0xFFFF, bool(flags & 0x8), None
    else:
        sm, accelerator, virtual_sm = flags & 0xFF, bool(flags & 0x800), (flags >> 16) & 0xFF or None

    toolkit: str | None = None
    tool: str | None = None
    tool_options: str | None = None
    sections = elf.sections()
    regcount: dict[int, int] = {}
    frame: dict[int, int] = {}
    per_kernel_info: dict[int, dict[int, bytes]] = {}
    shared_by_name: dict[str, int] = {}
    has_code = False
    for section in sections:
        if section.name.startswith(".text.") and section.size:
            has_code = True
        if section.name.startswith(".nv.shared.") and not section.name.startswith(".nv.shared.reserved"):
            shared_by_name[section.name[len(".nv.shared.") :]] = section.size
        if section.type == t.SHT_CUDA_INFO and section.name == ".nv.info":
            for _fmt, attr, value in eiattr_records(elf.section_data(section)):
                pair = _pairs(value)
                if attr == t.EIATTR_REGCOUNT and pair:
                    regcount[pair[0]] = pair[1]
                elif attr == t.EIATTR_FRAME_SIZE and pair:
                    frame[pair[0]] = pair[1]
                elif attr == t.EIATTR_CUDA_API_VERSION and len(value) >= 4 and toolkit is None:
                    toolkit = t.cuda_toolkit_version(_U32.unpack_from(value)[0])
        elif section.type == t.SHT_CUDA_INFO and section.name.startswith(".nv.info."):
            attrs = per_kernel_info.setdefault(section.info, {})
            for _fmt, attr, value in eiattr_records(elf.section_data(section)):
                attrs.setdefault(attr, value)
                if attr == t.EIATTR_CUDA_API_VERSION and len(value) >= 4 and toolkit is None:
                    toolkit = t.cuda_toolkit_version(_U32.unpack_from(value)[0])
        elif section.type == t.SHT_CUDA_COMPAT:
            for _fmt, attr, value in eiattr_records(elf.section_data(section)):
                if attr == t.EICOMPAT_ATTR_CUDA_ACCELERATOR_TARGET and value:
                    accelerator = bool(value[0])
        elif section.type == SHT_NOTE:
            for note in elf.notes(section):
                if note.owner != t.NVIDIA_NOTE_OWNER:
                    continue
                if note.type == t.NT_NV_CUINFO and len(note.desc) >= 4:
                    fmt_version, vsm = struct.unpack_from("<HH", note.desc)
                    virtual_sm = vsm or virtual_sm
                    if fmt_version >= 2 and len(note.desc) >= 8:
                        toolkit = t.cuda_toolkit_version(_U32.unpack_from(note.desc, 4)[0])
                elif note.type == t.NT_NV_TKINFO and len(note.desc) >= 24:
                    tool, tool_options = _tkinfo(note.desc)

    family = False
    if tool_options:
        match = _TKINFO_ARCH.search(tool_options)
        if match and match.group(1).endswith("f"):
            family = True

    kernels: list[CubinKernel] = []
    symtab = elf.symtab()
    if symtab is not None:
        for index, symbol in enumerate(elf.symbols(symtab)):
            if symbol.type != STT_FUNC or not symbol.other & t.STO_CUDA_ENTRY:
                continue
            kernel = CubinKernel(symbol.name, symbol.size, regcount.get(index), frame.get(index))
            kernel.shared_bytes = shared_by_name.get(symbol.name)
            attrs = per_kernel_info.get(symbol.shndx, {})
            max_threads = attrs.get(t.EIATTR_MAX_THREADS)
            if max_threads and len(max_threads) >= 12:
                x, y, z = struct.unpack_from("<III", max_threads)
                kernel.max_threads = x * y * z
            kernels.append(kernel)

    return CubinInfo(
        abi_version=elf.abi_version,
        elf_type=elf.type,
        e_flags=flags,
        sm=sm,
        accelerator=accelerator,
        family=family,
        virtual_sm=virtual_sm,
        toolkit=toolkit,
        tool=tool,
        tool_options=tool_options,
        kernels=kernels,
        has_code=has_code,
    )


def _tkinfo(desc: bytes) -> tuple[str | None, str | None]:
    """Tool name + version, and its options, from ``.note.nv.tkinfo`` (six u32 then a string table)."""
    _fmt, _obj, tool_off, version_off, _branch_off, options_off = struct.unpack_from("<6I", desc)
    strings = desc[24:]
    try:
        name = cstring(strings, tool_off)
        version = cstring(strings, version_off)
        options = cstring(strings, options_off).strip()
    except MalformedBinary:
        return None, None
    tool = f"{name} {version}".strip() or None
    return tool, options or None
