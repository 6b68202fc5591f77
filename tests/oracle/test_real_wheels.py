"""kaudit against third-party tools on real wheels from PyPI: bitsandbytes 0.50.2 and jax-cuda13-plugin 0.10.2.

NVIDIA: every ``.so`` of both wheels, entry by entry, against ``cuobjdump -symbols`` (arch, code version,
compression, kernel names) — kaudit reads the wheel in place, cuobjdump an extracted copy. Where cuobjdump
itself fails (``libbitsandbytes_cuda121.so``: "Invalid ELF"), kaudit must still succeed and the structure is
checked directly. AMD: each bundle of the ROCm libraries against ``clang-offload-bundler-22 --list`` and each
code object's metadata against ``llvm-readelf-22 --notes``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from kaudit.binfmt.bounded import BytesBlob
from kaudit.binfmt.bundle import iter_bundles, parse_bundle, parse_ccob
from kaudit.binfmt.elf import ElfFile
from kaudit.inventory import CodeKind, GpuBinary, ScanReport
from tests.conftest import scan
from tests.oracle.cuobjdump_view import as_entry, cuobjdump_selection, run_symbols

pytestmark = [pytest.mark.network, pytest.mark.oracle]


@pytest.fixture(scope="session")
def wheel_reports(bitsandbytes_wheel: Path, jax_cuda_wheel: Path) -> dict[str, GpuBinary]:
    """kaudit's report for every GPU library of both wheels, read in place, keyed by member file name."""
    report: ScanReport = scan(bitsandbytes_wheel, jax_cuda_wheel)
    assert report.findings == (), report.findings
    return {b.path.rsplit("/", 1)[-1]: b for b in report.binaries}


def _nvidia_names(wheel_reports: dict[str, GpuBinary]) -> list[str]:
    return sorted(n for n, b in wheel_reports.items() if any(c.vendor.value == "nvidia" for c in b.device_code))


def test_wheels_hold_the_expected_gpu_libraries(wheel_reports: dict[str, GpuBinary]) -> None:
    names = set(wheel_reports)
    cuda = {f"libbitsandbytes_cuda{v}.so" for v in (118, 121, 124, 126, 128, 130, 132)}
    rocm = {f"libbitsandbytes_rocm{v}.so" for v in (64, 70, 71, 72, 714, 715)}
    jax = {"_linalg.so", "_prng.so", "_solver.so"}
    assert cuda | rocm | jax <= names
    # the SYCL builds carry SPIR-V bundles (recorded, not decoded)
    assert any(c.kind is CodeKind.SPIRV for n in names if "xpu" in n for c in wheel_reports[n].device_code)


def test_every_nvidia_library_matches_cuobjdump(
    cuobjdump: str, wheel_reports: dict[str, GpuBinary], wheel_libs: Path
) -> None:
    compared = 0
    for name in _nvidia_names(wheel_reports):
        oracle = run_symbols(cuobjdump, str(wheel_libs / name))
        if name == "libbitsandbytes_cuda121.so":
            continue  # cuobjdump fails on this one; see the next test
        assert oracle.returncode == 0, (name, oracle.stderr)
        binary = wheel_reports[name]
        ours = [as_entry(c) for c in cuobjdump_selection(binary)]
        assert ours == oracle.entries, name
        assert set(binary.loadable.sass_archs) == {e.arch for e in oracle.entries if e.kind == "elf"}
        assert {a.replace("compute_", "sm_") for a in binary.loadable.ptx_archs} == {
            e.arch for e in oracle.entries if e.kind == "ptx"
        }
        compared += 1
    assert compared == 9  # 6 bitsandbytes CUDA builds + 3 jax libraries


def test_kaudit_reads_the_library_cuobjdump_rejects(
    cuobjdump: str, wheel_reports: dict[str, GpuBinary], wheel_libs: Path
) -> None:
    name = "libbitsandbytes_cuda121.so"
    oracle = run_symbols(cuobjdump, str(wheel_libs / name))
    assert oracle.returncode != 0 and "Invalid ELF" in oracle.stderr
    binary = wheel_reports[name]
    loadable = [c for c in binary.device_code if c.location.startswith(".nv_fatbin/")]
    assert [c.arch for c in loadable] == ["sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_89", "sm_90"]
    assert all(c.kind is CodeKind.SASS and c.elf_abi_version == 7 and len(c.kernels) == 202 for c in loadable)
    assert all(c.toolkit == "12.1" for c in loadable)
    assert binary.loadable.kernel_count == 7 * 202
    relocatable = [c for c in binary.device_code if c.location.startswith("__nv_relfatbin/")]
    assert sum(c.kind is CodeKind.SASS for c in relocatable) == 42
    assert sum(c.kind is CodeKind.PTX for c in relocatable) == 6
    assert all(c.relocatable and c.compression.value == "lz4" for c in relocatable)
    assert {c.ptx_isa for c in relocatable if c.kind is CodeKind.PTX} == {"8.1"}
    # what cuobjdump printed before it stopped agrees with kaudit
    complete = oracle.entries[:-1]
    assert complete and [as_entry(c) for c in loadable[: len(complete)]] == complete


def _hip_section_bundles(path: Path) -> list[bytes]:
    data = path.read_bytes()
    elf = ElfFile(BytesBlob(data))
    section = elf.section_by_name(".hip_fatbin")
    assert section is not None
    return [blob for _offset, _form, blob, _extent in iter_bundles(elf.section_data(section))]


def test_rocm_bundles_match_clang_offload_bundler(
    llvm22: dict[str, str], wheel_reports: dict[str, GpuBinary], wheel_libs: Path, tmp_path: Path
) -> None:
    rocm = sorted(n for n in wheel_reports if n.startswith("libbitsandbytes_rocm"))
    assert len(rocm) == 6
    for name in rocm:
        binary = wheel_reports[name]
        for index, bundle in enumerate(_hip_section_bundles(wheel_libs / name)):
            single = tmp_path / f"{name}.{index}.ccob"
            single.write_bytes(bundle)
            listed = subprocess.run(
                [llvm22["clang-offload-bundler"], "--list", "--type=o", f"--input={single}"],
                capture_output=True, text=True, timeout=120, check=True,
            ).stdout.split()  # fmt: skip
            ours = [c.bundle_id for c in binary.device_code if c.location.startswith(f".hip_fatbin/bundle#{index}/")]
            assert sorted(ours) == sorted(i for i in listed if not i.startswith("host-")), (name, index)
            # the CCOB version is what the reference survey says for each ROCm release
            version = int.from_bytes(bundle[4:6], "little")
            assert version == (2 if name in ("libbitsandbytes_rocm64.so", "libbitsandbytes_rocm70.so") else 3)


def test_code_object_metadata_matches_llvm_readelf(
    llvm22: dict[str, str], wheel_reports: dict[str, GpuBinary], wheel_libs: Path, tmp_path: Path
) -> None:
    name = "libbitsandbytes_rocm64.so"
    bundle = _hip_section_bundles(wheel_libs / name)[0]
    entries, _extent = parse_bundle(parse_ccob(bundle).payload)
    by_id = {c.bundle_id: c for c in wheel_reports[name].device_code if c.location.startswith(".hip_fatbin/bundle#0/")}
    checked = 0
    for entry in entries:
        if entry.kind == "host":
            continue
        hsaco = tmp_path / "co.hsaco"
        hsaco.write_bytes(entry.data)
        text = subprocess.run(
            [llvm22["llvm-readelf"], "--notes", str(hsaco)], capture_output=True, text=True, timeout=120, check=True
        ).stdout
        metadata = yaml.safe_load(text[text.index("---") : text.index("\n...") + 4])
        code = by_id[entry.bundle_id]
        assert metadata["amdhsa.target"].endswith("--" + code.arch)
        theirs = {k[".name"]: k[".vgpr_count"] for k in metadata["amdhsa.kernels"]}
        assert {k.name: k.registers for k in code.kernels} == theirs
        assert code.code_object_version == 6
        checked += 1
    assert checked >= 14
