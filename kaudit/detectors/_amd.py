"""Turn clang offload bundles, CCOBs, OffloadBinaries and HSACO into inventory values (AMD detectors)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from kaudit.binfmt.bounded import DEFAULT_MAX_PAYLOAD, zstd_frame
from kaudit.binfmt.bundle import (
    OFFLOAD_IMAGE_KINDS,
    iter_bundles,
    iter_offload_binaries,
    parse_bundle,
    parse_ccob,
)
from kaudit.binfmt.elf import ELF_MAGIC, EM_AMDGPU, EM_CUDA, ET_REL
from kaudit.binfmt.hsaco import parse_hsaco
from kaudit.demangle import demangle
from kaudit.detectors.interface import Detection, Problem
from kaudit.errors import LimitExceeded, MalformedBinary
from kaudit.inventory import CodeKind, Compression, DeviceCode, FindingKind, Kernel, PackedKernels, Vendor

BITCODE_MAGICS = (b"BC\xc0\xde", b"\xde\xc0\x17\x0b")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SPIRV_MAGICS = (b"\x03\x02\x23\x07", b"\x07\x23\x02\x03")


def _vendor_of(triple: str) -> Vendor | None:
    arch = triple.split("-", 1)[0]
    if arch.startswith("amdgcn"):
        return Vendor.AMD
    if arch.startswith("nvptx"):
        return Vendor.NVIDIA
    if arch.startswith("spir"):
        return Vendor.INTEL
    return None


def _kind(exc: MalformedBinary) -> FindingKind:
    return FindingKind.LIMIT if isinstance(exc, LimitExceeded) else FindingKind.MALFORMED


def hsaco_code(
    data: bytes,
    location: str,
    *,
    bundle_id: str | None = None,
    compression: Compression = Compression.NONE,
    relocatable: bool = False,
) -> DeviceCode:
    """An HSACO :class:`DeviceCode` for the code object in ``data`` (raises :class:`MalformedBinary`)."""
    info = parse_hsaco(data)
    notes = list(info.notes)
    if bundle_id and not bundle_id.endswith("-" + info.target_id) and info.target_id.split(":")[0] in bundle_id:
        notes.append(f"bundle ID {bundle_id!r} and code object target {info.target_id!r} differ in features")
    if info.metadata_target and not info.metadata_target.endswith("-" + info.target_id):
        notes.append(f"metadata target {info.metadata_target!r} differs from the ELF header's {info.target_id!r}")
    return DeviceCode(
        vendor=Vendor.AMD,
        kind=CodeKind.HSACO,
        arch=info.target_id,
        location=location,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        stored_size=len(data),
        compression=compression,
        relocatable=relocatable or info.elf_type == ET_REL,
        elf_flags=info.e_flags,
        elf_abi_version=info.abi_version,
        code_object_version=info.code_object_version,
        compiler=info.compiler,
        bundle_id=bundle_id,
        kernels=PackedKernels.of(
            Kernel(
                name=k.name,
                demangled=demangle(k.name),
                registers=k.vgprs,
                sgprs=k.sgprs,
                shared_bytes=k.lds_bytes,
                stack_bytes=k.private_bytes,
                max_threads=k.max_flat_workgroup_size,
            )
            for k in info.kernels
        ),
        notes=tuple(notes),
    )


def code_object(
    data: bytes,
    location: str,
    detection: Detection,
    *,
    bundle_id: str | None,
    triple: str = "",
    target: str | None = None,
    compression: Compression = Compression.NONE,
    relocatable: bool = False,
) -> DeviceCode | None:
    """Describe one device image of a bundle or OffloadBinary by its content; ``None`` for host stubs."""
    if not data:
        return None
    if data.startswith(ZSTD_MAGIC) and compression is Compression.NONE:
        # SYCL toolchains zstd-compress their images inside __CLANG_OFFLOAD_BUNDLE__ sections
        try:
            inner = zstd_frame(data, None, DEFAULT_MAX_PAYLOAD)
        except MalformedBinary as exc:
            detection.problems.append(Problem(_kind(exc), f"compressed device image unreadable: {exc}", location))
        else:
            return code_object(inner, location, detection, bundle_id=bundle_id, triple=triple, target=target,
                               compression=Compression.ZSTD, relocatable=relocatable)  # fmt: skip
    if data.startswith(ELF_MAGIC) and len(data) > 20 and int.from_bytes(data[18:20], "little") == EM_AMDGPU:
        try:
            return hsaco_code(data, location, bundle_id=bundle_id, compression=compression, relocatable=relocatable)
        except MalformedBinary as exc:
            detection.problems.append(Problem(_kind(exc), f"AMD code object unreadable: {exc}", location))
            return _opaque(data, location, Vendor.AMD, CodeKind.HSACO, target, bundle_id, compression, str(exc))
    vendor = _vendor_of(triple)
    if data.startswith(BITCODE_MAGICS):
        kind = CodeKind.LLVM_BITCODE
        relocatable = True
    elif data.startswith(SPIRV_MAGICS):
        kind, vendor = CodeKind.SPIRV, vendor or Vendor.INTEL
    elif data.startswith(ELF_MAGIC) and int.from_bytes(data[18:20], "little") == EM_CUDA:
        from kaudit.detectors._nvidia import Stored, cubin_code

        try:
            return cubin_code(data, Stored(location, relocatable=relocatable, compression=compression))
        except MalformedBinary as exc:
            detection.problems.append(Problem(_kind(exc), f"cubin unreadable: {exc}", location))
            kind = CodeKind.SASS
    else:
        kind = CodeKind.OPAQUE
    if vendor is None:
        return None  # a host object or something not GPU code
    return _opaque(data, location, vendor, kind, target, bundle_id, compression, None, relocatable)


def _opaque(
    data: bytes,
    location: str,
    vendor: Vendor,
    kind: CodeKind,
    arch: str | None,
    bundle_id: str | None,
    compression: Compression,
    note: str | None,
    relocatable: bool = False,
) -> DeviceCode:
    return DeviceCode(
        vendor=vendor,
        kind=kind,
        arch=arch or None,
        location=location,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        stored_size=len(data),
        compression=compression,
        relocatable=relocatable,
        bundle_id=bundle_id,
        notes=(f"not decoded: {note}",) if note else (),
    )


def describe_bundle(
    data: bytes, location: str, detection: Detection, compression: Compression = Compression.NONE
) -> None:
    """Add the device entries of the plain bundle ``data`` (host entries are skipped)."""
    entries, _extent = parse_bundle(data)
    for entry in entries:
        if entry.kind == "host":
            continue
        code = code_object(
            bytes(entry.data),  # one code object at a time is copied out of the bundle
            f"{location}/{entry.bundle_id}",
            detection,
            bundle_id=entry.bundle_id,
            triple=entry.triple,
            target=entry.target_id,
            compression=compression,
        )
        if code is not None:
            detection.device_code.append(code)


def describe_bundles(data: bytes, section: str, detection: Detection, cap: int = DEFAULT_MAX_PAYLOAD) -> None:
    """Add every bundle (plain or CCOB) found in ``data`` — a ``.hip_fatbin`` section or a bundle file."""
    prefix = f"{section}/" if section else ""
    index = 0
    try:
        for _offset, form, blob, _extent in iter_bundles(data):
            location = f"{prefix}bundle#{index}"
            try:
                if form == "ccob":
                    ccob = parse_ccob(blob, cap)
                    describe_bundle(ccob.payload, location, detection, Compression(ccob.method))
                else:
                    describe_bundle(blob, location, detection)
            except MalformedBinary as exc:
                detection.problems.append(Problem(_kind(exc), f"offload bundle unreadable: {exc}", location))
            index += 1
    except MalformedBinary as exc:
        detection.problems.append(Problem(_kind(exc), f"offload bundles unreadable: {exc}", section or None))
    if index == 0:
        detection.notes.append(f"{section or 'file'}: no offload bundle found")


def describe_offload_binaries(data: bytes, section: str, detection: Detection) -> None:
    """Add the images of LLVM OffloadBinaries (``.llvm.offloading``, new offload driver; relocatable)."""
    prefix = f"{section}/" if section else ""
    try:
        for index, image in enumerate(iter_offload_binaries(data)):
            triple = image.strings.get("triple", "")
            arch = image.strings.get("arch") or None
            location = f"{prefix}image#{index}"
            code = code_object(
                image.data, location, detection, bundle_id=None, triple=triple, target=arch, relocatable=True
            )
            if code is not None:
                kind_name = OFFLOAD_IMAGE_KINDS.get(image.image_kind, f"kind {image.image_kind}")
                detection.device_code.append(
                    code if code.kind is not CodeKind.OPAQUE else _with_note(code, f"OffloadBinary image {kind_name}")
                )
    except MalformedBinary as exc:
        detection.problems.append(Problem(_kind(exc), f"OffloadBinary unreadable: {exc}", section or None))


def _with_note(code: DeviceCode, note: str) -> DeviceCode:
    return replace(code, notes=(*code.notes, note))
