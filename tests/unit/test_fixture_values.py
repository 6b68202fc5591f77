"""Expected properties of the committed fixtures (fixtures.md §3, as observed when they were built)."""

from __future__ import annotations

import hashlib

import pytest

from kaudit.binfmt.bounded import BytesBlob
from kaudit.binfmt.elf import ElfFile
from kaudit.inventory import CodeKind, Compression, DeviceCode, GpuBinary, Vendor
from tests.conftest import fixture_path, scan, scan_one

MAIN = ".nv_fatbin/container#1/"
STUB = ".nv_fatbin/container#0/"


def codes(binary: GpuBinary, prefix: str = "") -> list[DeviceCode]:
    return [c for c in binary.device_code if c.location.startswith(prefix)]


def test_libk_plain_has_a_link_stub_container_and_the_main_one() -> None:
    binary = scan_one(fixture_path("libk_plain.so"))
    assert binary.format == "elf-shared-object"
    stubs = codes(binary, STUB)
    assert [c.arch for c in stubs] == ["sm_80", "sm_90", "sm_90a", "sm_100", "sm_120"]
    assert all(c.link_stub and not c.kernels and not c.loadable for c in stubs)
    assert all(c.compiler and c.compiler.startswith("nvlink ") for c in stubs)
    assert all(c.elf_flags is not None and c.elf_flags >> 24 == 0x05 for c in stubs)
    main = codes(binary, MAIN)
    assert [(c.kind.value, c.arch) for c in main] == [
        ("sass", "sm_80"), ("ptx", "compute_90"), ("sass", "sm_90"), ("sass", "sm_90a"),
        ("sass", "sm_100"), ("sass", "sm_120"),
    ]  # fmt: skip
    flags = {c.arch: c.elf_flags for c in main if c.kind is CodeKind.SASS}
    assert flags == {"sm_80": 0x06005004, "sm_90": 0x06005A04, "sm_90a": 0x06005A04, "sm_100": 0x06006402,
                     "sm_120": 0x06007802}  # fmt: skip
    assert binary.loadable.sass_archs == ("sm_80", "sm_90", "sm_90a", "sm_100", "sm_120")
    assert binary.loadable.ptx_archs == ("compute_90",)
    assert binary.loadable.kernel_count == 10
    assert binary.link_stub_count == 5
    assert binary.relocatable.object_count == 0
    assert binary.needed[0] == "libcudart.so.13" and binary.gpu_runtimes == ("libcudart.so.13",)


def test_cubin_details_in_libk_plain() -> None:
    binary = scan_one(fixture_path("libk_plain.so"))
    by_arch = {c.arch: c for c in codes(binary, MAIN) if c.kind is CodeKind.SASS}
    for arch, code in by_arch.items():
        assert code.elf_abi_version == 8 and code.toolkit == "13.0"
        assert code.virtual_arch == "compute_" + arch.removeprefix("sm_").removesuffix("a")
        assert code.compiler == "ptxas Cuda compilation tools, release 13.0, V13.0.88"
        kernels = {k.name: k for k in code.kernels}
        assert set(kernels) == {"saxpy", "_Z9block_sumPKfPfi"}
        assert kernels["_Z9block_sumPKfPfi"].demangled == "block_sum(float const*, float*, int)"
        assert kernels["saxpy"].demangled is None
        assert kernels["_Z9block_sumPKfPfi"].max_threads == 256
        assert kernels["_Z9block_sumPKfPfi"].registers == 10
        assert kernels["saxpy"].registers == (9 if arch == "sm_80" else 10)
        # static shared section size: 1024 on sm_80, 2048 on sm_90+ (gpu-binary-formats.md §3.4)
        assert kernels["_Z9block_sumPKfPfi"].shared_bytes == (1024 if arch == "sm_80" else 2048)
        assert code.compression is Compression.NONE
    ptx = next(c for c in codes(binary, MAIN) if c.kind is CodeKind.PTX)
    assert ptx.ptx_isa == "9.0" and ptx.compression is Compression.ZSTD
    assert [k.name for k in ptx.kernels] == ["saxpy", "_Z9block_sumPKfPfi"]


@pytest.mark.parametrize(
    ("name", "sass", "ptx"),
    [
        ("libk_compall.so", Compression.ZSTD, Compression.ZSTD),
        ("libk_speed.so", Compression.NONE, Compression.LZ4),
        ("libk_lz4all.so", Compression.LZ4, Compression.LZ4),
        ("libk_nocomp.so", Compression.NONE, Compression.NONE),
        ("libk_debug.so", Compression.ZSTD, Compression.ZSTD),
    ],
)
def test_compression_modes(name: str, sass: Compression, ptx: Compression) -> None:
    binary = scan_one(fixture_path(name))
    main = codes(binary, MAIN)
    assert {c.compression for c in main if c.kind is CodeKind.SASS} == {sass}
    assert {c.compression for c in main if c.kind is CodeKind.PTX} == {ptx}
    assert all(c.debug == (name == "libk_debug.so") for c in main)
    # the same source gives the same kernels whatever the compression
    assert binary.loadable.kernel_count == 2 * len(binary.loadable.sass_archs)
    assert binary.loadable.ptx_archs == ("compute_90",)


def test_compressed_and_uncompressed_payloads_hash_alike() -> None:
    """sha256 is over the decompressed payload: the zstd sm_80 cubin equals the stored-raw one."""
    raw = codes(scan_one(fixture_path("libk_plain.so")), MAIN)[0]
    zstd = codes(scan_one(fixture_path("libk_compall.so")), MAIN)[0]
    assert zstd.compression is Compression.ZSTD and raw.compression is Compression.NONE
    assert zstd.stored_size < zstd.size
    assert (zstd.sha256, zstd.size) == (raw.sha256, raw.size)


def test_arch_and_family_specific_targets() -> None:
    binary = scan_one(fixture_path("k_af.o"))
    assert binary.format == "elf-relocatable"
    assert [(c.kind.value, c.arch) for c in binary.device_code] == [
        ("sass", "sm_90a"), ("sass", "sm_100a"), ("sass", "sm_100f"), ("ptx", "compute_120f"),
    ]  # fmt: skip
    # sm_100f's cubin is byte-identical to a plain sm_100 one but for the tkinfo -arch string
    assert binary.device_code[2].elf_flags == 0x06006402


def test_relocatable_code_is_counted_apart() -> None:
    binary = scan_one(fixture_path("k_rdc.o"))
    assert all(c.relocatable and c.location.startswith("__nv_relfatbin/") for c in binary.device_code)
    assert binary.loadable.object_count == 0 and binary.loadable.kernel_count == 0
    assert binary.relocatable.sass_archs == ("sm_80",) and binary.relocatable.ptx_archs == ("compute_90",)
    assert binary.relocatable.kernel_count == 2


def test_lto_ir_is_kept_opaque() -> None:
    binary = scan_one(fixture_path("k_lto.o"))
    lto = binary.device_code[0]
    assert (lto.kind, lto.arch, lto.compression) == (CodeKind.LTO_IR, "compute_90", Compression.ZSTD)
    assert lto.relocatable and lto.options == "-ftz=0 -prec_div=1 -prec_sqrt=1 -fmad=1"
    assert not lto.kernels and len(lto.sha256) == 64


def test_fatbin_identifier_and_ptxas_options() -> None:
    binary = scan_one(fixture_path("ident.fatbin"))
    assert binary.format == "fatbin"
    assert {c.identifier for c in binary.device_code} == {"my_source.cu"}
    ptx = next(c for c in binary.device_code if c.kind is CodeKind.PTX)
    assert ptx.options == "-O3 --maxrregcount=64" and ptx.arch == "compute_80"
    assert [c.arch for c in binary.device_code if c.kind is CodeKind.SASS] == ["sm_80", "sm_100a"]


def test_bare_cubins() -> None:
    sm80 = scan_one(fixture_path("kern_sm_80.cubin"))
    assert sm80.format == "cubin" and sm80.device_code[0].arch == "sm_80"
    # the payload hash of a bare cubin is the file's hash
    assert sm80.device_code[0].sha256 == sm80.sha256
    rel = scan_one(fixture_path("kern_sm_80_rel.cubin")).device_code[0]
    assert rel.relocatable and not rel.loadable
    v1 = scan_one(fixture_path("kern_sm_90a_v1.cubin")).device_code[0]
    # old ABI: SM in bits 0-7, 'a' in 0x800, the virtual SM (compute_80 PTX input) in bits 16-23
    assert (v1.elf_abi_version, v1.elf_flags, v1.arch) == (7, 0x00500D5A, "sm_90a")
    assert v1.virtual_arch == "compute_80" and v1.toolkit == "12.6"


def test_ptx_file_and_ptx_only_library() -> None:
    ptx = scan_one(fixture_path("kern80.ptx"))
    code = ptx.device_code[0]
    assert (ptx.format, code.arch, code.ptx_isa, code.toolkit) == ("ptx", "compute_80", "9.0", "13.0")
    only = scan_one(fixture_path("libk_ptxonly.so"))
    assert only.loadable.sass_archs == () and only.loadable.ptx_archs == ("compute_90",)


def test_executable_is_reported_as_such() -> None:
    binary = scan_one(fixture_path("kern_exe"))
    assert binary.format == "elf-executable" and binary.loadable.sass_archs == ("sm_80",)


def test_static_archive_member() -> None:
    binary = scan_one(fixture_path("libk_rdc.a"))
    assert binary.path.endswith("libk_rdc.a!/k_rdc.o")
    assert binary.sha256 == hashlib.sha256(fixture_path("k_rdc.o").read_bytes()).hexdigest()


AMD_BUNDLE_19 = {
    "gfx1100": 0x041,
    "gfx906:xnack+": 0x72F,
    "gfx90a": 0x53F,
    "gfx942:sramecc+:xnack-": 0xE4C,
}


@pytest.mark.parametrize("name", ["kern_hip19.o", "libkhip19.so", "kern_hip19.hipfb"])
def test_plain_bundle_from_clang_19(name: str) -> None:
    binary = scan_one(fixture_path(name))
    assert {c.arch: c.elf_flags for c in binary.device_code} == AMD_BUNDLE_19
    for code in binary.device_code:
        assert code.vendor is Vendor.AMD and code.kind is CodeKind.HSACO and code.loadable
        assert code.code_object_version == 5 and code.compression is Compression.NONE
        assert code.bundle_id == f"hipv4-amdgcn-amd-amdhsa--{code.arch}"
        kernels = {k.name: k for k in code.kernels}
        assert set(kernels) == {"saxpy", "_Z9block_sumPKfPfi"}
        assert kernels["_Z9block_sumPKfPfi"].shared_bytes == 1024
        assert kernels["_Z9block_sumPKfPfi"].max_threads == 256
        assert code.compiler is not None and "clang version 19" in code.compiler
    assert binary.loadable.gfx_targets == ("gfx90a", "gfx906:xnack+", "gfx942:sramecc+:xnack-", "gfx1100")


@pytest.mark.parametrize("name", ["kern_hip22_ccob3.o", "libkhip22.so", "kern_hip22_ccob3.ccob"])
def test_ccob_v3_from_clang_22(name: str) -> None:
    binary = scan_one(fixture_path(name))
    assert {c.arch: c.elf_flags for c in binary.device_code} == {
        "gfx90a:xnack-": 0x63F, "gfx950": 0x54F, "gfx1201": 0x04E, "gfx9-4-generic": 0x100055F,
    }  # fmt: skip
    assert all(c.compression is Compression.ZSTD and c.code_object_version == 6 for c in binary.device_code)


def test_ccob_headers() -> None:
    for name, version in (("kern_hip19_ccob2.o", 2), ("kern_hip22_ccob2.o", 2), ("kern_hip22_ccob3.o", 3)):
        data = fixture_path(name).read_bytes()
        elf = ElfFile(BytesBlob(data))
        section = elf.section_by_name(".hip_fatbin")
        assert section is not None
        payload = elf.section_data(section)
        assert payload[:4] == b"CCOB" and int.from_bytes(payload[4:6], "little") == version
        binary = scan_one(fixture_path(name))
        assert binary.device_code and all(c.compression is Compression.ZSTD for c in binary.device_code)


def test_rdc_and_new_driver_objects_hold_bitcode() -> None:
    rdc = scan_one(fixture_path("kern_hip22_rdc.o"))
    assert [(c.kind, c.arch, c.bundle_id) for c in rdc.device_code] == [
        (CodeKind.LLVM_BITCODE, "gfx90a", "hip-amdgcn-amd-amdhsa--gfx90a")
    ]
    new = scan_one(fixture_path("kern_hip22_newdrv.o"))
    assert [(c.kind, c.arch, c.relocatable) for c in new.device_code] == [(CodeKind.LLVM_BITCODE, "gfx90a", True)]


@pytest.mark.parametrize(
    ("name", "arch", "abi"),
    [
        ("tiny_gfx942_cov4.o", "gfx942", 2), ("tiny_gfx942_cov5.o", "gfx942", 3), ("tiny_gfx942_cov6.o", "gfx942", 4),
        ("tiny_gfx906.o", "gfx906", 4), ("tiny_gfx90a.o", "gfx90a", 4), ("tiny_gfx950.o", "gfx950", 4),
        ("tiny_gfx1100.o", "gfx1100", 4), ("tiny_gfx1201.o", "gfx1201", 4), ("tiny_gfx1250.o", "gfx1250", 4),
        ("tiny_gfx9-generic.o", "gfx9-generic", 4),
    ],
)  # fmt: skip
def test_code_object_targets(name: str, arch: str, abi: int) -> None:
    code = scan_one(fixture_path(name)).device_code[0]
    assert (code.arch, code.elf_abi_version, code.code_object_version) == (arch, abi, abi + 2)
    assert code.relocatable and [k.name for k in code.kernels] == ["k"]


def test_pe_and_macho_hosts() -> None:
    pe = scan_one(fixture_path("kern_pe.dll"))
    assert pe.format == "pe"
    assert pe.loadable.sass_archs == ("sm_80", "sm_90a") and pe.loadable.ptx_archs == ("compute_90",)
    assert pe.loadable.gfx_targets == ("gfx9-4-generic", "gfx90a:xnack-", "gfx950", "gfx1201")
    macho = scan_one(fixture_path("libkern_macho.dylib"))
    assert macho.format == "macho" and macho.soname == "@rpath/libkern_macho.dylib"
    assert macho.loadable.sass_archs == ("sm_80", "sm_90a")
    # the embedded fatbin is the same bytes as the standalone one
    fatbin = scan_one(fixture_path("kern.fatbin"))
    assert [c.sha256 for c in macho.device_code] == [c.sha256 for c in fatbin.device_code]


def test_whole_fixture_tree_scans_without_problems() -> None:
    report = scan(fixture_path("libk_plain.so").parent)
    assert report.findings == ()
    assert len(report.binaries) == 45
    assert report.stats.files_seen == 46  # 45 files + the member of libk_rdc.a
