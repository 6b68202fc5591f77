"""NVIDIA cubins (device ELF, EM_CUDA): architecture, toolkit, kernels and their resources.

gpu-binary-formats.md §3: the SM number sits in different ``e_flags`` bits for ABI V1 (EI_ABIVERSION 7)
and V2 (8); CUDA 13 moved the ``a`` (accelerator) bit into ``.nv.compat`` attribute 9; ``f`` is not in
the cubin at all (only in the fatbin entry flags or the tkinfo ``-arch`` string). Kernels are symbols
with ``STO_CUDA_ENTRY`` in ``st_other`` — the raw byte, which pyelftools would drop.
"""

from __future__ import annotations

import re
import struct
import sys
from dataclasses import dataclass, field

from kaudit.binfmt import tables as t
from kaudit.binfmt.bounded import Buffer, BytesBlob, cstring
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
    extent: int
    """Bytes the cubin spans (fatbin entries pad their payload)."""
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


def eiattr_values(data: bytes, wanted: frozenset[int]) -> dict[int, list[bytes]]:
    """Values of the ``wanted`` attributes in a ``.nv.info``/``.nv.compat`` section, in record order (§3.7).

    Records are ``u8 format, u8 attribute`` then: NVAL/BVAL/HVAL two bytes, SVAL ``u16 size`` + ``size`` bytes.
    A tight loop: a large cubin has tens of thousands of records and only a few attributes matter.
    """
    found: dict[int, list[bytes]] = {}
    pos, end = 0, len(data)
    while pos + 4 <= end:
        fmt, attr = data[pos], data[pos + 1]
        if fmt == t.EIFMT_SVAL:
            stop = pos + 4 + (data[pos + 2] | data[pos + 3] << 8)
            if stop > end:
                raise MalformedBinary(f"EIATTR 0x{attr:02x} value runs past its section", offset=pos)
            if attr in wanted:
                found.setdefault(attr, []).append(data[pos + 4 : stop])
            pos = stop
        elif t.EIFMT_NVAL <= fmt <= t.EIFMT_HVAL:
            if attr in wanted:
                found.setdefault(attr, []).append(data[pos + 2 : pos + 4])
            pos += 4
        else:
            raise MalformedBinary(f"unknown EIATTR record format {fmt}", offset=pos)
    return found


_MODULE_ATTRS = frozenset({t.EIATTR_REGCOUNT, t.EIATTR_FRAME_SIZE, t.EIATTR_CUDA_API_VERSION})
_KERNEL_ATTRS = frozenset({t.EIATTR_MAX_THREADS, t.EIATTR_CUDA_API_VERSION})
_COMPAT_ATTRS = frozenset({t.EICOMPAT_ATTR_CUDA_ACCELERATOR_TARGET})
_PAIR = struct.Struct("<II")
# Record headers (format SVAL, attribute, u16 size) of the per-kernel attributes kaudit reads: a per-kernel
# section that contains neither byte string cannot hold them, so it is not walked (most kernels have no
# __launch_bounds__ and there are thousands of kernels in a large cubin).
_MAX_THREADS_RECORD = bytes([t.EIFMT_SVAL, t.EIATTR_MAX_THREADS, 12, 0])
_API_VERSION_RECORD = bytes([t.EIFMT_SVAL, t.EIATTR_CUDA_API_VERSION, 4, 0])


def _per_symbol(values: list[bytes]) -> dict[int, int]:
    """``{symbol index: value}`` from ``u32 index, u32 value`` records (REGCOUNT, FRAME_SIZE)."""
    return dict(_PAIR.unpack_from(v) for v in values if len(v) >= 8)


def parse_cubin(data: Buffer) -> CubinInfo:
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
    regcount: dict[int, int] = {}
    frame: dict[int, int] = {}
    max_threads_by_text: dict[int, int] = {}
    shared_by_name: dict[str, int] = {}
    has_code = False
    api_versions: list[bytes] = []
    for section in elf.sections():
        name = section.name
        if name.startswith(".text.") and section.size:
            has_code = True
        elif name.startswith(".nv.shared.") and not name.startswith(".nv.shared.reserved"):
            shared_by_name[name[len(".nv.shared.") :]] = section.size
        elif section.type == t.SHT_CUDA_INFO and name == ".nv.info":
            values = eiattr_values(elf.section_data(section), _MODULE_ATTRS)
            regcount = _per_symbol(values.get(t.EIATTR_REGCOUNT, []))
            frame = _per_symbol(values.get(t.EIATTR_FRAME_SIZE, []))
            api_versions += values.get(t.EIATTR_CUDA_API_VERSION, [])
        elif section.type == t.SHT_CUDA_INFO and name.startswith(".nv.info."):
            data = elf.section_data(section)
            if _MAX_THREADS_RECORD not in data and (api_versions or _API_VERSION_RECORD not in data):
                continue
            values = eiattr_values(data, _KERNEL_ATTRS)
            api_versions += values.get(t.EIATTR_CUDA_API_VERSION, [])
            bounds = values.get(t.EIATTR_MAX_THREADS)
            if bounds and len(bounds[0]) >= 12:
                x, y, z = struct.unpack_from("<III", bounds[0])
                max_threads_by_text[section.info] = x * y * z
        elif section.type == t.SHT_CUDA_COMPAT:
            target = eiattr_values(elf.section_data(section), _COMPAT_ATTRS).get(
                t.EICOMPAT_ATTR_CUDA_ACCELERATOR_TARGET
            )
            if target and target[0]:
                accelerator = bool(target[0][0])
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
    if toolkit is None and api_versions and len(api_versions[0]) >= 4:
        toolkit = t.cuda_toolkit_version(_U32.unpack_from(api_versions[0])[0])

    family = False
    if tool_options:
        match = _TKINFO_ARCH.search(tool_options)
        family = bool(match and match.group(1).endswith("f"))

    kernels: list[CubinKernel] = []
    symtab = elf.symtab()
    if symtab is not None:
        entries, strtab = elf.raw_symbols(symtab)
        for index, (name_off, info, other, shndx, _value, size) in enumerate(entries):
            if info & 0xF != STT_FUNC or not other & t.STO_CUDA_ENTRY:
                continue
            # interned: the same kernels recur in every arch's cubin; one string each keeps the inventory small
            name = sys.intern(cstring(strtab, name_off, 65536)) if name_off else ""
            kernel = CubinKernel(name, size, regcount.get(index), frame.get(index))
            kernel.shared_bytes = shared_by_name.get(name)
            kernel.max_threads = max_threads_by_text.get(shndx)
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
        extent=elf.extent(),
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
