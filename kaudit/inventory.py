"""The kernel inventory: plain, frozen dataclasses with no I/O.

Everything kaudit finds is described here; detectors build these values, formats render them, rules
(later) judge them. "Could not read" is a value too (:class:`ScanFinding`), never an exception that
escapes a scan.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from itertools import islice
from operator import attrgetter
from typing import TYPE_CHECKING, overload

if TYPE_CHECKING:
    import zstandard


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


KERNEL_FIELDS = ("name", "demangled", "registers", "sgprs", "code_size", "shared_bytes", "stack_bytes", "max_threads")
_kernel_values = attrgetter(*KERNEL_FIELDS)


@cache
def _compressor() -> zstandard.ZstdCompressor:
    import zstandard  # imported on first use: the CLI starts without it

    return zstandard.ZstdCompressor(level=3)


@cache
def _decompressor() -> zstandard.ZstdDecompressor:
    import zstandard

    return zstandard.ZstdDecompressor()


class PackedKernels(Sequence[Kernel]):
    """The kernels of one device code object, held as the JSON report's text for them, zstd-compressed.

    An image of several GB holds hundreds of thousands of kernels: as objects they were most of a warm rescan's
    time and of the scan's memory. Packed, they are written into reports and the layer cache as they are, and
    decoded only when a kernel is looked at."""

    __slots__ = ("kernel_count", "packed")

    def __init__(self, packed: bytes, kernel_count: int) -> None:
        self.packed = packed
        self.kernel_count = kernel_count

    @classmethod
    def of(cls, kernels: Iterable[Kernel]) -> Sequence[Kernel]:
        """``kernels`` packed; an empty tuple when there are none. Encoded a thousand at a time: one cubin can
        hold tens of thousands of kernels, and their text whole is tens of MB."""
        stream = _compressor().compressobj()
        parts: list[bytes] = []
        count = 0
        iterator = iter(kernels)
        while rows := [dict(zip(KERNEL_FIELDS, _kernel_values(k), strict=True)) for k in islice(iterator, 1024)]:
            parts.append(stream.compress((", " if count else "[").encode() + json.dumps(rows)[1:-1].encode()))
            count += len(rows)
        if not count:
            return ()
        parts += [stream.compress(b"]"), stream.flush()]
        return cls(b"".join(parts), count)

    def json_text(self) -> str:
        """The kernels as the report writes them: a JSON array of objects in :class:`Kernel` field order."""
        return _decompressor().decompressobj().decompress(self.packed).decode()

    def _decoded(self) -> tuple[Kernel, ...]:
        rows = json.loads(self.json_text())
        if not isinstance(rows, list) or len(rows) != self.kernel_count:
            raise ValueError("packed kernels: not a list of the recorded length")
        kernels = []
        for row in rows:
            if not isinstance(row, dict) or tuple(row) != KERNEL_FIELDS:
                raise ValueError(f"packed kernels: {row!r:.80} is not a kernel record")
            name, demangled, *counts = row.values()
            if type(name) is not str or not (demangled is None or type(demangled) is str):
                raise ValueError(f"packed kernels: {row!r:.80} has a name that is not text")
            if not all(v is None or type(v) is int for v in counts):
                raise ValueError(f"packed kernels: {row!r:.80} has counts that are not integers")
            kernels.append(Kernel(**row))
        return tuple(kernels)

    def __len__(self) -> int:
        return self.kernel_count

    @overload
    def __getitem__(self, index: int) -> Kernel: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Kernel, ...]: ...
    def __getitem__(self, index: int | slice) -> Kernel | tuple[Kernel, ...]:
        return self._decoded()[index]

    def __iter__(self) -> Iterator[Kernel]:
        return iter(self._decoded())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedKernels):
            return self.kernel_count == other.kernel_count and self.json_text() == other.json_text()
        return isinstance(other, Sequence) and self._decoded() == tuple(other)

    def __hash__(self) -> int:
        return hash(self._decoded())

    def __repr__(self) -> str:
        return f"PackedKernels({self.kernel_count} kernels, {len(self.packed)} bytes)"

    def __reduce__(self) -> tuple[type[PackedKernels], tuple[bytes, int]]:
        return PackedKernels, (self.packed, self.kernel_count)


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
    kernels: Sequence[Kernel] = ()
    """A tuple, or :class:`PackedKernels` as the detectors and the layer cache produce them."""
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
    offline: bool = False
    """The image configures it offline (``HF_HUB_OFFLINE=1`` for the kernels client): it serves what the image
    carries instead of downloading."""


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
