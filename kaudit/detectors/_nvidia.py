"""Turn NVIDIA fatbin entries, cubins and PTX into inventory values (shared by the NVIDIA detectors)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from kaudit.binfmt import tables as t
from kaudit.binfmt.bounded import DEFAULT_MAX_PAYLOAD, Blob, Buffer
from kaudit.binfmt.cubin import CubinInfo, parse_cubin
from kaudit.binfmt.fatbin import FatbinEntry, iter_containers, iter_entries, read_payload
from kaudit.binfmt.ptx import PtxInfo, parse_ptx, text_length
from kaudit.demangle import demangle
from kaudit.detectors.interface import Detection, Problem
from kaudit.errors import LimitExceeded, MalformedBinary
from kaudit.inventory import CodeKind, Compression, DeviceCode, FindingKind, Kernel, PackedKernels, Vendor


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _entry_suffix(flags: int) -> str:
    if flags & t.FLAG_ARCH_SPECIFIC:
        return "a"
    if flags & t.FLAG_FAMILY_SPECIFIC:
        return "f"
    return ""


@dataclass(frozen=True)
class Stored:
    """Where and how a payload was stored: a fatbin entry's header, or just a location for a plain file."""

    location: str
    entry_flags: int = 0
    relocatable: bool = False
    compression: Compression = Compression.NONE
    stored_size: int | None = None
    identifier: str | None = None
    options: str | None = None


def cubin_code(data: Buffer, stored: Stored) -> DeviceCode:
    """A SASS :class:`DeviceCode` for the cubin in ``data`` (raises :class:`MalformedBinary`)."""
    entry_flags = stored.entry_flags
    info: CubinInfo = parse_cubin(data)
    image = memoryview(data)[: info.extent]  # a view: payloads can be tens of MB, no copy
    accelerator = info.accelerator or bool(entry_flags & t.FLAG_ARCH_SPECIFIC)
    family = not accelerator and (info.family or bool(entry_flags & t.FLAG_FAMILY_SPECIFIC))
    arch = f"sm_{info.sm}{'a' if accelerator else 'f' if family else ''}"
    kernels = PackedKernels.of(
        Kernel(
            name=k.name,
            demangled=demangle(k.name),
            registers=k.registers,
            code_size=k.code_size,
            shared_bytes=k.shared_bytes,
            stack_bytes=k.frame_bytes,
            max_threads=k.max_threads,
        )
        for k in info.kernels
    )
    return DeviceCode(
        vendor=Vendor.NVIDIA,
        kind=CodeKind.SASS,
        arch=arch,
        location=stored.location,
        sha256=_sha256(image),
        size=len(image),
        stored_size=len(image) if stored.stored_size is None else stored.stored_size,
        compression=stored.compression,
        relocatable=stored.relocatable or info.relocatable,
        link_stub=info.is_link_stub,
        elf_flags=info.e_flags,
        elf_abi_version=info.abi_version,
        virtual_arch=f"compute_{info.virtual_sm}" if info.virtual_sm else None,
        toolkit=info.toolkit,
        compiler=info.tool,
        identifier=stored.identifier,
        debug=bool(entry_flags & t.FLAG_DEBUG),
        kernels=kernels,
    )


def ptx_code(data: Buffer, stored: Stored) -> DeviceCode:
    """A PTX :class:`DeviceCode` for the text in ``data`` (raises :class:`MalformedBinary`)."""
    text = memoryview(data)[: text_length(data)]  # a view: PTX modules can be tens of MB, no copy
    info: PtxInfo = parse_ptx(text)
    arch = info.arch
    suffix = _entry_suffix(stored.entry_flags)
    if suffix and not arch.endswith(suffix):
        arch += suffix
    return DeviceCode(
        vendor=Vendor.NVIDIA,
        kind=CodeKind.PTX,
        arch=arch,
        location=stored.location,
        sha256=_sha256(text),
        size=len(text),
        stored_size=len(text) if stored.stored_size is None else stored.stored_size,
        compression=stored.compression,
        relocatable=stored.relocatable,
        ptx_isa=info.isa_version,
        toolkit=info.toolkit,
        identifier=stored.identifier,
        options=stored.options,
        debug=bool(stored.entry_flags & t.FLAG_DEBUG),
        kernels=PackedKernels.of(Kernel(name=k, demangled=demangle(k)) for k in info.kernels),
    )


def describe_fatbin(
    blob: Blob,
    section: str,
    detection: Detection,
    *,
    relocatable: bool = False,
    cap: int = DEFAULT_MAX_PAYLOAD,
) -> None:
    """Add every entry of every container in ``blob`` (a section or a whole fatbin file) to ``detection``."""
    prefix = f"{section}/" if section else ""
    try:
        for container, start, size in iter_containers(blob):
            try:
                for entry in iter_entries(blob, container, start, size):
                    detection.device_code.append(_entry_code(blob, entry, prefix, relocatable, detection, cap))
            except MalformedBinary as exc:
                detection.problems.append(
                    Problem(_kind(exc), f"fatbin container unreadable: {exc}", f"{prefix}container#{container}")
                )
    except MalformedBinary as exc:
        detection.problems.append(Problem(_kind(exc), f"fatbin containers unreadable: {exc}", section or None))


def _kind(exc: MalformedBinary) -> FindingKind:
    return FindingKind.LIMIT if isinstance(exc, LimitExceeded) else FindingKind.MALFORMED


def _entry_code(
    blob: Blob, entry: FatbinEntry, prefix: str, relocatable: bool, detection: Detection, cap: int
) -> DeviceCode:
    location = prefix + entry.location
    compression = Compression(entry.compression)
    suffix = _entry_suffix(entry.flags)
    if entry.kind in (t.FATBIN_KIND_ELF, t.FATBIN_KIND_PTX):
        stored = Stored(location, entry.flags, relocatable, compression, entry.stored_size, entry.identifier,
                        entry.options if entry.kind == t.FATBIN_KIND_PTX else None)  # fmt: skip
        try:
            payload = read_payload(blob, entry, cap)
            return (cubin_code if entry.kind == t.FATBIN_KIND_ELF else ptx_code)(payload, stored)
        except MalformedBinary as exc:
            detection.problems.append(Problem(_kind(exc), f"fatbin entry unreadable: {exc}", location))
            kind = CodeKind.SASS if entry.kind == t.FATBIN_KIND_ELF else CodeKind.PTX
            arch = f"{'sm' if kind is CodeKind.SASS else 'compute'}_{entry.arch}{suffix}"
            return _opaque(blob, entry, location, kind, arch, relocatable, f"not decoded: {exc}")
    if entry.kind == t.FATBIN_KIND_LTO_IR:
        return _opaque(
            blob, entry, location, CodeKind.LTO_IR, f"compute_{entry.arch}{suffix}", True, None, entry.options
        )
    return _opaque(blob, entry, location, CodeKind.OPAQUE, None, relocatable, f"unknown fatbin entry kind {entry.kind}")


def _opaque(
    blob: Blob,
    entry: FatbinEntry,
    location: str,
    kind: CodeKind,
    arch: str | None,
    relocatable: bool,
    note: str | None,
    options: str | None = None,
) -> DeviceCode:
    """An entry kept by its stored bytes' hash (LTO-IR, unknown kinds, undecodable payloads)."""
    stored = blob.read(entry.payload_offset, entry.stored_size)
    return DeviceCode(
        vendor=Vendor.NVIDIA,
        kind=kind,
        arch=arch,
        location=location,
        sha256=_sha256(stored),
        size=entry.uncompressed_size or entry.stored_size,
        stored_size=entry.stored_size,
        compression=Compression(entry.compression),
        relocatable=relocatable,
        identifier=entry.identifier,
        options=options,
        debug=bool(entry.flags & t.FLAG_DEBUG),
        notes=(note,) if note else (),
    )
