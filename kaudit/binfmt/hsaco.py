"""AMD HSA code objects (ELF EM_AMDGPU): target ID, code object version, kernels (gpu-binary-formats.md §4).

The target comes from ``e_flags`` (machine number + XNACK/SRAMECC settings, whose encoding depends on the
code object version); kernels and their register counts from the ``NT_AMDGPU_METADATA`` MessagePack note,
read with its exact ``descsz``; the ``<name>.kd`` kernel descriptors are the fallback.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass, field
from typing import Any

from kaudit.binfmt import tables as t
from kaudit.binfmt.bounded import BytesBlob
from kaudit.binfmt.elf import EM_AMDGPU, SHT_NOTE, STT_OBJECT, ElfFile
from kaudit.errors import MalformedBinary

_KERNEL_DESCRIPTOR_SIZE = 64
MAX_METADATA_BYTES = 64 * 1024 * 1024


@dataclass
class HsacoKernel:
    name: str
    vgprs: int | None = None
    sgprs: int | None = None
    lds_bytes: int | None = None
    private_bytes: int | None = None
    max_flat_workgroup_size: int | None = None


@dataclass
class HsacoInfo:
    processor: str
    target_id: str
    code_object_version: int
    abi_version: int
    elf_type: int
    e_flags: int
    metadata_target: str | None
    compiler: str | None = None
    kernels: list[HsacoKernel] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def target_features(e_flags: int, abi_version: int) -> tuple[str, ...]:
    """The explicit ``sramecc±``/``xnack±`` settings of a target ID, in the canonical order (sramecc first)."""
    if abi_version >= 2:  # code object v4+: two-bit "unsupported / any / off / on" fields
        sramecc = {0x800: "sramecc-", 0xC00: "sramecc+"}.get(e_flags & t.EF_AMDGPU_FEATURE_SRAMECC_V4)
        xnack = {0x200: "xnack-", 0x300: "xnack+"}.get(e_flags & t.EF_AMDGPU_FEATURE_XNACK_V4)
    elif abi_version == 1:  # v3: booleans
        sramecc = "sramecc+" if e_flags & 0x200 else None
        xnack = "xnack+" if e_flags & 0x100 else None
    else:  # v2
        sramecc, xnack = None, "xnack+" if e_flags & 0x01 else None
    return tuple(f for f in (sramecc, xnack) if f)


def processor_name(e_flags: int) -> str:
    mach = e_flags & t.EF_AMDGPU_MACH
    return t.AMDGPU_MACH.get(mach, f"mach 0x{mach:02x}")


def parse_hsaco(data: bytes) -> HsacoInfo:
    """Describe an AMDGPU code object held in memory."""
    elf = ElfFile(BytesBlob(data))
    if elf.machine != EM_AMDGPU:
        raise MalformedBinary(f"not an AMDGPU code object (e_machine {elf.machine})")
    processor = processor_name(elf.flags)
    target_id = ":".join((processor, *target_features(elf.flags, elf.abi_version)))
    info = HsacoInfo(
        processor=processor,
        target_id=target_id,
        code_object_version=t.amdgpu_code_object_version(elf.abi_version),
        abi_version=elf.abi_version,
        elf_type=elf.type,
        e_flags=elf.flags,
        metadata_target=None,
    )
    for section in elf.sections():
        if section.name == ".comment" and info.compiler is None:
            producers = [p.decode("utf-8", "replace").strip() for p in elf.section_data(section).split(b"\0")]
            # .comment lists every producer (compiler, linker); the compiler is the one to report
            compilers = [p for p in producers if "clang version" in p] or [p for p in producers if p]
            info.compiler = compilers[0] if compilers else None
        if section.type != SHT_NOTE:
            continue
        for note in elf.notes(section):
            if note.owner == t.AMDGPU_NOTE_OWNER and note.type == t.NT_AMDGPU_METADATA:
                _apply_metadata(info, note.desc)
    if not info.kernels:
        info.kernels = _kernels_from_descriptors(elf)
    return info


def _apply_metadata(info: HsacoInfo, desc: bytes) -> None:
    import msgpack

    if len(desc) > MAX_METADATA_BYTES:
        info.notes.append(f"AMDGPU metadata note of {len(desc)} bytes is over the limit; not decoded")
        return
    try:
        # raw strings, tuples: a third faster on real notes (megabytes of kernel argument lists); the few
        # strings kaudit keeps are decoded below
        metadata = msgpack.unpackb(desc, raw=True, use_list=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for corrupt input
        info.notes.append(f"AMDGPU metadata note is not valid MessagePack: {exc}")
        return
    if not isinstance(metadata, dict):
        info.notes.append("AMDGPU metadata note is not a map")
        return
    target = metadata.get(b"amdhsa.target")
    if isinstance(target, bytes):
        info.metadata_target = target.decode("utf-8", "replace")
    kernels = metadata.get(b"amdhsa.kernels")
    for raw in kernels if isinstance(kernels, tuple) else ():
        if not isinstance(raw, dict):
            continue
        name = raw.get(b".name")
        if isinstance(name, bytes):
            info.kernels.append(
                HsacoKernel(
                    name=sys.intern(name.decode("utf-8", "replace")),  # recurs in every target's object
                    vgprs=_int(raw.get(b".vgpr_count")),
                    sgprs=_int(raw.get(b".sgpr_count")),
                    lds_bytes=_int(raw.get(b".group_segment_fixed_size")),
                    private_bytes=_int(raw.get(b".private_segment_fixed_size")),
                    max_flat_workgroup_size=_int(raw.get(b".max_flat_workgroup_size")),
                )
            )


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def _kernels_from_descriptors(elf: ElfFile) -> list[HsacoKernel]:
    """Kernel names from ``<name>.kd`` descriptor symbols, LDS/scratch from the descriptor itself."""
    symtab = elf.symtab()
    if symtab is None:
        return []
    sections = elf.sections()
    kernels: dict[str, HsacoKernel] = {}
    for symbol in elf.symbols(symtab):
        if symbol.type != STT_OBJECT or not symbol.name.endswith(".kd") or symbol.name in kernels:
            continue
        kernel = HsacoKernel(symbol.name[:-3])
        if symbol.size == _KERNEL_DESCRIPTOR_SIZE and 0 < symbol.shndx < len(sections):
            section = sections[symbol.shndx]
            base = symbol.value - section.addr  # st_value is an address in ET_DYN, an offset in ET_REL
            data = elf.section_data(section)
            if base >= 0 and base + _KERNEL_DESCRIPTOR_SIZE <= len(data):
                kernel.lds_bytes, kernel.private_bytes = struct.unpack_from("<II", data, base)
        kernels[symbol.name] = kernel
    return list(kernels.values())
