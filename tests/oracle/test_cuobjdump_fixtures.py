"""kaudit against cuobjdump (PyPI nvidia-cuda-cuobjdump) on every committed NVIDIA fixture.

For each fatbin entry cuobjdump reads, in order: the kind (ELF/PTX/LTO-IR), the arch with its a/f suffix,
the code version (cubin ELF ABI or PTX ISA), whether it is stored compressed, and the kernel names.
"""

from __future__ import annotations

import pytest

from tests.conftest import fixture_path, scan_one
from tests.oracle.cuobjdump_view import as_entry, cuobjdump_selection, run_elf_headers, run_symbols

pytestmark = pytest.mark.oracle

NVIDIA_FIXTURES = [
    "libk_plain.so", "libk_compall.so", "libk_speed.so", "libk_lz4all.so", "libk_nocomp.so", "libk_debug.so",
    "libk_ptxonly.so", "kern_exe", "k_af.o", "k_rdc.o", "k_lto.o", "kern.fatbin", "ident.fatbin",
    "kern_sm_80.cubin", "kern_sm_90a.cubin", "kern_sm_100a.cubin", "kern_sm_120.cubin", "kern_sm_80_rel.cubin",
    "kern_sm_90a_v1.cubin",
]  # fmt: skip


@pytest.mark.parametrize("name", NVIDIA_FIXTURES)
def test_entries_match_cuobjdump(cuobjdump: str, name: str) -> None:
    path = fixture_path(name)
    oracle = run_symbols(cuobjdump, str(path))
    assert oracle.returncode == 0, oracle.stderr
    assert oracle.entries, "cuobjdump saw no entries"
    binary = scan_one(path)
    ours = [as_entry(code) for code in cuobjdump_selection(binary)]
    assert ours == oracle.entries


@pytest.mark.parametrize("name", ["libk_plain.so", "k_af.o", "kern.fatbin", "libk_ptxonly.so"])
def test_summary_arch_sets_match_cuobjdump(cuobjdump: str, name: str) -> None:
    path = fixture_path(name)
    oracle = run_symbols(cuobjdump, str(path))
    binary = scan_one(path)
    assert set(binary.loadable.sass_archs) == {e.arch for e in oracle.entries if e.kind == "elf"}
    assert {a.replace("compute_", "sm_") for a in binary.loadable.ptx_archs} == {
        e.arch for e in oracle.entries if e.kind == "ptx"
    }
    stubs_and_code = [c for c in binary.device_code if c.kind.value == "sass"]
    assert binary.loadable.kernel_count == sum(len(c.kernels) for c in stubs_and_code if c.loadable)
    assert binary.loadable.kernel_count == sum(len(e.kernels) for e in oracle.entries if e.kind == "elf")


def test_archive_member_matches_cuobjdump(cuobjdump: str) -> None:
    path = fixture_path("libk_rdc.a")
    oracle = run_symbols(cuobjdump, str(path))
    assert oracle.returncode == 0, oracle.stderr
    binary = scan_one(path)
    assert binary.path.endswith("libk_rdc.a!/k_rdc.o")
    assert [as_entry(c) for c in cuobjdump_selection(binary)] == oracle.entries


@pytest.mark.parametrize("name", NVIDIA_FIXTURES)
def test_cubin_headers_match_cuobjdump_elf(cuobjdump: str, name: str) -> None:
    """ELF type (relocatable or not), ELF ABI, arch and toolkit version of every cubin, per ``cuobjdump -elf``."""
    path = fixture_path(name)
    headers = run_elf_headers(cuobjdump, str(path))
    cubins = [c for c in cuobjdump_selection(scan_one(path)) if c.kind.value == "sass"]
    assert len(headers) == len(cubins)
    assert cubins or name == "libk_ptxonly.so"
    for header, code in zip(headers, cubins, strict=True):
        assert code.elf_abi_version == header.abi
        assert code.relocatable == (header.type == "ET_REL") or code.location.startswith("__nv_relfatbin/")
        assert (code.toolkit or "unknown") == header.toolkit
        # cuobjdump -elf knows only what the cubin records: the 'f' of a family target is in the fatbin flags.
        assert code.arch is not None and code.arch.removesuffix("f") == header.sm
