"""Host ELF files (shared objects, executables, relocatable objects) that embed device code.

The section table decides (gpu-binary-formats.md §1.1, §9): ``.nv_fatbin`` (loadable) and
``__nv_relfatbin`` (relocatable, for a later device link) hold fatbin containers; ``.hip_fatbin`` holds
offload bundles; ``__CLANG_OFFLOAD_BUNDLE__<id>`` sections (``-fgpu-rdc`` objects) hold one device
image each; ``.llvm.offloading`` holds OffloadBinaries. The dynamic section (SONAME, NEEDED) is read with
pyelftools, only for files that carry device code.
"""

from __future__ import annotations

from typing import IO, cast

from kaudit.binfmt.bounded import Blob, BlobReader
from kaudit.binfmt.elf import ELF_MAGIC, EM_AMDGPU, EM_CUDA, ET_DYN, ET_EXEC, ET_REL, SHT_DYNAMIC, ElfFile, Section
from kaudit.binfmt.tables import GPU_RUNTIME_PREFIXES
from kaudit.detectors._amd import code_object, describe_bundles, describe_offload_binaries
from kaudit.detectors._nvidia import describe_fatbin
from kaudit.detectors.interface import Detection, Detector, Problem
from kaudit.inventory import FindingKind

NV_FATBIN = ".nv_fatbin"
NV_RELFATBIN = "__nv_relfatbin"
HIP_FATBIN = ".hip_fatbin"
LLVM_OFFLOADING = ".llvm.offloading"
BUNDLE_SECTION_PREFIX = "__CLANG_OFFLOAD_BUNDLE__"
MAX_SECTION_IN_MEMORY = 1 << 30


def is_gpu_section(name: str) -> bool:
    return name in (NV_FATBIN, NV_RELFATBIN, HIP_FATBIN, LLVM_OFFLOADING) or name.startswith(BUNDLE_SECTION_PREFIX)


class HostElfDetector(Detector):
    """Any ELF that is not itself a device object."""

    name = "host-elf"

    def matches(self, head: bytes) -> bool:
        if len(head) < 20 or not head.startswith(ELF_MAGIC):
            return False
        machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
        return machine not in (EM_CUDA, EM_AMDGPU)

    def detect(self, blob: Blob, path: str) -> Detection | None:
        elf = ElfFile(blob)
        gpu_sections = [s for s in elf.sections() if is_gpu_section(s.name) and s.has_file_data]
        if not gpu_sections:
            return None
        detection = Detection(_format(elf))
        for section in gpu_sections:
            _describe_section(elf, section, detection)
        dynamic = next((s for s in elf.sections() if s.type == SHT_DYNAMIC), None)
        if dynamic is not None:
            detection.soname, detection.needed = _dynamic(blob, dynamic.number, detection)
        return detection


def _format(elf: ElfFile) -> str:
    if elf.type == ET_REL:
        return "elf-relocatable"
    if elf.type == ET_EXEC or (elf.type == ET_DYN and elf.section_by_name(".interp") is not None):
        return "elf-executable"
    return "elf-shared-object"


def _describe_section(elf: ElfFile, section: Section, detection: Detection) -> None:
    name = section.name
    if name in (NV_FATBIN, NV_RELFATBIN):
        describe_fatbin(elf.section_blob(section), name, detection, relocatable=name == NV_RELFATBIN)
        return
    if section.size > MAX_SECTION_IN_MEMORY:
        detection.problems.append(
            Problem(FindingKind.LIMIT, f"section of {section.size} bytes is over the in-memory limit", name)
        )
        return
    data = elf.section_data(section)
    if name == HIP_FATBIN:
        describe_bundles(data, name, detection)
    elif name == LLVM_OFFLOADING:
        describe_offload_binaries(data, name, detection)
    else:
        bundle_id = name[len(BUNDLE_SECTION_PREFIX) :]
        parts = bundle_id.split("-", 5)
        if bundle_id.startswith("host-"):
            return
        code = code_object(
            data,
            name,
            detection,
            bundle_id=bundle_id,
            triple="-".join(parts[1:5]),
            target=parts[5] if len(parts) == 6 else None,
            relocatable=True,
        )
        if code is not None:
            detection.device_code.append(code)


def _dynamic(blob: Blob, index: int, detection: Detection) -> tuple[str | None, tuple[str, ...]]:
    """SONAME and NEEDED through pyelftools, only for files with device code.

    pyelftools parses the dynamic section and its string table; it is pointed at the section's index so
    it does not build every other section header of a large library (that cost 20 ms per file).
    """
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    stream = cast(IO[bytes], BlobReader(blob))
    soname: str | None = None
    needed: list[str] = []
    try:
        section = ELFFile(stream).get_section(index)
        if isinstance(section, DynamicSection):
            for tag in section.iter_tags():
                if tag.entry.d_tag == "DT_NEEDED":
                    needed.append(str(vars(tag)["needed"]))  # pyelftools sets these per tag
                elif tag.entry.d_tag == "DT_SONAME":
                    soname = str(vars(tag)["soname"])
    except Exception as exc:  # pyelftools raises ELFError, struct and construct errors on corrupt input
        detection.problems.append(Problem(FindingKind.MALFORMED, f"dynamic section unreadable: {exc}", ".dynamic"))
    return soname, tuple(needed)


def gpu_runtimes(needed: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for n in needed if n.startswith(GPU_RUNTIME_PREFIXES))
