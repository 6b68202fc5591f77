"""The kernel inventory: plain, frozen dataclasses with no I/O.

Everything kaudit finds is described here; detectors build these values, formats render them, rules
(later) judge them. "Could not read" is a value too (:class:`ScanFinding`), never an exception that
escapes a scan.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class Vendor(StrEnum):
    """Who defines the device code's instruction set."""

    NVIDIA = "nvidia"
    AMD = "amd"
    INTEL = "intel"


class CodeKind(StrEnum):
    """What a device code object is."""

    SASS = "sass"
    """An NVIDIA cubin: machine code for one real SM architecture."""
    PTX = "ptx"
    """NVIDIA virtual ISA text, JIT-compiled by the driver at load time."""
    LTO_IR = "lto-ir"
    """NVVM IR kept for link-time optimisation; never loaded directly."""
    HSACO = "hsaco"
    """An AMD code object (ELF EM_AMDGPU) for one gfx target."""
    LLVM_BITCODE = "llvm-bitcode"
    """LLVM bitcode for a device (``-fgpu-rdc`` objects); needs linking before it can run."""
    SPIRV = "spirv"
    """SPIR-V images (Intel SYCL bundles); recorded, not decoded."""
    OPAQUE = "opaque"
    """A device payload of a kind kaudit does not know; kept with its hash."""


class Compression(StrEnum):
    """How a payload was stored in its container."""

    NONE = "none"
    LZ4 = "lz4"
    ZSTD = "zstd"
    ZLIB = "zlib"


@dataclass(frozen=True, slots=True)
class Kernel:
    """One kernel entry point in a device code object."""

    name: str
    """The symbol name as stored (mangled for C++)."""
    demangled: str | None = None
    """The C++ demangled name; ``None`` when the name is not mangled or cannot be demangled."""
    registers: int | None = None
    """Registers per thread: CUDA ``EIATTR_REGCOUNT`` or AMD ``.vgpr_count``."""
    sgprs: int | None = None
    """AMD scalar registers (``.sgpr_count``)."""
    code_size: int | None = None
    """Bytes of machine code (the symbol size) where recorded."""
    shared_bytes: int | None = None
    """Static shared memory: CUDA ``.nv.shared.<kernel>`` section size, AMD LDS bytes."""
    stack_bytes: int | None = None
    """Per-thread stack/scratch: CUDA ``EIATTR_FRAME_SIZE``, AMD private segment size."""
    max_threads: int | None = None
    """Launch-bounds limit on threads per block/work-group, where recorded."""

    def __reduce__(self) -> tuple[Callable[..., Kernel], tuple[object, ...]]:
        # Scan workers send hundreds of thousands of kernels back: a plain argument tuple pickles 3x faster, and
        # names are interned on arrival (the same kernel recurs in every arch's object).
        return _interned_kernel, (self.name, self.demangled, self.registers, self.sgprs, self.code_size,
                                  self.shared_bytes, self.stack_bytes, self.max_threads)  # fmt: skip


def _interned_kernel(name: str, demangled: str | None, *rest: int | None) -> Kernel:
    return Kernel(sys.intern(name), sys.intern(demangled) if demangled else None, *rest)


@dataclass(frozen=True, slots=True)
class DeviceCode:
    """One device code object: a cubin, a PTX module, an HSACO code object, an opaque payload."""

    vendor: Vendor
    kind: CodeKind
    arch: str | None
    """``sm_90a`` for SASS, ``compute_90`` for PTX/LTO-IR, a gfx target ID such as ``gfx942:sramecc+:xnack-``."""
    location: str
    """Where in the file: section, container and entry index, e.g. ``.nv_fatbin#0/entry#2``."""
    sha256: str
    """sha256 of the payload after decompression (or of the stored bytes when it cannot be decompressed)."""
    size: int
    """Payload size after decompression."""
    stored_size: int
    """Bytes the payload occupies in the file."""
    compression: Compression = Compression.NONE
    relocatable: bool = False
    """Relocatable code (``__nv_relfatbin``, ET_REL cubins, rdc bitcode): input to a device link, not loaded."""
    link_stub: bool = False
    """An nvlink device-link stub: an ELF image with no code and zero kernels."""
    elf_flags: int | None = None
    """``e_flags`` of a cubin or HSACO (where the SM or gfx machine and its features are encoded)."""
    elf_abi_version: int | None = None
    """EI_ABIVERSION of a cubin (7 = old ABI, 8 = new ABI) or of an HSACO."""
    code_object_version: int | None = None
    """AMD code object version (v2…v6)."""
    ptx_isa: str | None = None
    """PTX ISA version (the ``.version`` directive), for PTX."""
    virtual_arch: str | None = None
    """The ``compute_XX`` a cubin was compiled from, where recorded."""
    toolkit: str | None = None
    """CUDA toolkit version (``13.0``) recorded in the object."""
    compiler: str | None = None
    """The producing tool and its version string (``ptxas``/``nvlink`` tkinfo, clang producer)."""
    identifier: str | None = None
    """The fatbin entry identifier (usually the source file name)."""
    options: str | None = None
    """Compiler options recorded with the entry (ptxas options for PTX, cicc options for LTO-IR)."""
    bundle_id: str | None = None
    """The clang offload bundle entry ID, for AMD code from bundles."""
    debug: bool = False
    """Built with device debug information (``-G``)."""
    kernels: tuple[Kernel, ...] = ()
    notes: tuple[str, ...] = ()
    """Things kaudit noticed while reading this object (e.g. why it is opaque)."""

    @property
    def loadable(self) -> bool:
        """True when a runtime would load this object as is (what cuobjdump's default listing counts)."""
        return not (self.relocatable or self.link_stub) and self.kind in (
            CodeKind.SASS,
            CodeKind.PTX,
            CodeKind.HSACO,
        )


@dataclass(frozen=True, slots=True)
class ArchSummary:
    """Architecture coverage and kernel count over a set of device code objects."""

    sass_archs: tuple[str, ...] = ()
    ptx_archs: tuple[str, ...] = ()
    gfx_targets: tuple[str, ...] = ()
    kernel_count: int = 0
    """Kernels in machine code (SASS and HSACO objects), summed over objects."""
    ptx_kernel_count: int = 0
    """Kernel entry points in PTX modules (JIT-compiled when no SASS fits), summed over modules."""
    object_count: int = 0


@dataclass(frozen=True, slots=True)
class LayerRef:
    """The image layer a file came from."""

    index: int
    """Position in the manifest, 0 = the base layer."""
    digest: str
    """The manifest's (compressed) layer digest."""
    diff_id: str
    """The uncompressed layer's digest (config ``rootfs.diff_ids``)."""
    created_by: str | None = None
    """The config history entry that added the layer (a Dockerfile step)."""


@dataclass(frozen=True, slots=True)
class Owner:
    """The package that installed a file, from the package manager's own database."""

    type: str
    """``pypi``, ``deb``, ``rpm`` or ``conda`` (the purl type)."""
    name: str
    version: str | None
    purl: str
    database: str
    """The database file that records the ownership (a RECORD, dpkg .list, rpmdb.sqlite, conda-meta JSON)."""


class FileStatus(StrEnum):
    """Whether a file is in the image's final filesystem."""

    PRESENT = "present"
    DELETED = "deleted"
    """Removed by a whiteout in a later layer; it still shipped to every node (``--all-layers``)."""
    REPLACED = "replaced"
    """Overwritten by a later layer's file at the same path (``--all-layers``)."""


@dataclass(frozen=True, slots=True)
class GpuBinary:
    """A file (or archive member) that holds GPU device code."""

    path: str
    """Path as scanned; members of wheels and archives are written ``archive!/member``."""
    size: int
    sha256: str
    format: str
    """The container format: ``elf-shared-object``, ``elf-executable``, ``elf-relocatable``, ``cubin``, ``ptx``,
    ``fatbin``, ``hsaco``, ``offload-bundle``, ``ccob``, ``pe``, ``macho``, ``offload-binary``."""
    device_code: tuple[DeviceCode, ...]
    loadable: ArchSummary
    """Counts over loadable code only, as cuobjdump's default listing."""
    relocatable: ArchSummary
    """Counts over relocatable code (``__nv_relfatbin``, rdc objects), reported separately."""
    link_stub_count: int = 0
    soname: str | None = None
    needed: tuple[str, ...] = ()
    gpu_runtimes: tuple[str, ...] = ()
    """NEEDED entries that are GPU runtimes (libcudart, libamdhip64, …)."""
    notes: tuple[str, ...] = ()
    layer: LayerRef | None = None
    """For image scans: the layer that holds this file."""
    owner: Owner | None = None
    """The package that installed the file; ``None`` when no package database claims it."""
    status: FileStatus = FileStatus.PRESENT
    removed_in_layer: int | None = None
    """For deleted or replaced files: the index of the layer that removed them."""


class FindingKind(StrEnum):
    """Why a file or object could not be (fully) read."""

    MALFORMED = "malformed"
    LIMIT = "limit-exceeded"
    UNSUPPORTED = "unsupported"
    UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class ScanFinding:
    """A problem met while scanning; the scan went on."""

    path: str
    kind: FindingKind
    reason: str
    location: str | None = None
    """Where inside the file, when the problem is in one object of it."""


@dataclass(frozen=True, slots=True)
class ScanStats:
    """What the scan looked at."""

    files_seen: int = 0
    files_parsed: int = 0
    bytes_seen: int = 0
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """The image an image scan resolved."""

    reference: str
    manifest_digest: str
    platform: str
    layers: tuple[LayerRef, ...]
    index_digest: str | None = None
    repo_tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One entry of a runtime kernel cache (Kernel Hub, Triton, Inductor, CUDA ComputeCache, …)."""

    type: str
    """``hf-kernel-hub``, ``triton``, ``inductor``, ``vllm-torch-compile``, ``cuda-computecache``,
    ``flashinfer-jit``, ``deepgemm-jit``, ``miopen``."""
    path: str
    """The entry's directory or file."""
    key: str
    """The cache key: a hash directory name, a ``org/name@commit`` hub reference, a database key."""
    archs: tuple[str, ...] = ()
    """Target architectures the entry was built for (``sm_90a``, ``gfx942``)."""
    binaries: tuple[str, ...] = ()
    """Paths of the entry's files that hold device code (they are in ``binaries`` too)."""
    details: tuple[tuple[str, str], ...] = ()
    """Type-specific facts, e.g. ``("revision", "main")``, ``("variant", "torch27-cxx11-cu128-x86_64-linux")``."""
    layer: LayerRef | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FirstUseSignal:
    """Software or configuration that fetches or compiles kernels when a pod first runs."""

    kind: str
    """``kernels-client``, ``flashinfer-cubin-download``, ``triton-remote-cache``, ``inductor-remote-cache``, …"""
    evidence: str
    """Where it was seen: a path in the image, or ``env:NAME``."""
    detail: str


@dataclass(frozen=True, slots=True)
class ScanReport:
    """The result of ``kaudit scan``."""

    subject: str
    """What was scanned (a path or an image reference)."""
    binaries: tuple[GpuBinary, ...]
    findings: tuple[ScanFinding, ...] = ()
    stats: ScanStats = field(default_factory=ScanStats)
    tool_version: str = ""
    image: ImageInfo | None = None
    caches: tuple[CacheEntry, ...] = ()
    first_use: tuple[FirstUseSignal, ...] = ()
