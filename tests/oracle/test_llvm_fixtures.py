"""kaudit against clang-22's clang-offload-bundler and llvm-readelf on the committed AMD fixtures."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from kaudit.inventory import CodeKind
from tests.conftest import BIN, fixture_path, scan_one

pytestmark = pytest.mark.oracle

HSACO_FIXTURES = [*sorted(p.name for p in BIN.glob("tiny_*.o")), "co_gfx90a.hsaco"]


def _run(tool: str, *args: str) -> str:
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.mark.parametrize("name", ["kern_hip19.hipfb", "kern_hip22_ccob3.ccob", "kern_hip22_rdc.o"])
def test_bundle_ids_match_clang_offload_bundler(llvm22: dict[str, str], name: str) -> None:
    listed = _run(llvm22["clang-offload-bundler"], "--list", "--type=o", f"--input={fixture_path(name)}").split()
    binary = scan_one(fixture_path(name))
    assert sorted(c.bundle_id for c in binary.device_code) == sorted(i for i in listed if not i.startswith("host-"))


@pytest.mark.parametrize("name", HSACO_FIXTURES)
def test_code_object_header_matches_llvm_readelf(llvm22: dict[str, str], name: str) -> None:
    header = _run(llvm22["llvm-readelf"], "-h", str(fixture_path(name)))
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in header.splitlines() if ":" in line)}
    flags, processor, *_features = (part.strip() for part in fields["Flags"].split(","))
    code = scan_one(fixture_path(name)).device_code[0]
    assert code.kind is CodeKind.HSACO
    assert code.elf_flags == int(flags, 16)
    assert code.arch is not None and code.arch.split(":")[0] == processor
    assert code.elf_abi_version == int(fields["ABI Version"])
    assert code.relocatable == fields["Type"].startswith("REL")


@pytest.mark.parametrize("name", ["co_gfx90a.hsaco", "tiny_gfx942_cov5.o", "tiny_gfx1201.o"])
def test_metadata_matches_llvm_readelf_notes(llvm22: dict[str, str], name: str) -> None:
    text = _run(llvm22["llvm-readelf"], "--notes", str(fixture_path(name)))
    metadata = yaml.safe_load(text[text.index("---") : text.index("\n...") + 4])
    code = scan_one(fixture_path(name)).device_code[0]
    theirs = {
        k[".name"]: (k[".vgpr_count"], k[".sgpr_count"], k[".group_segment_fixed_size"])
        for k in metadata["amdhsa.kernels"]
    }
    assert {k.name: (k.registers, k.sgprs, k.shared_bytes) for k in code.kernels} == theirs
    assert metadata["amdhsa.target"] == "amdgcn-amd-amdhsa--" + (code.arch or "")


def test_bundled_code_objects_equal_unbundled_ones(llvm22: dict[str, str], tmp_path: Path) -> None:
    """The sha256 kaudit gives a bundled code object is that of the file clang-offload-bundler extracts."""
    bundle = fixture_path("kern_hip19.hipfb")
    binary = scan_one(bundle)
    for code in binary.device_code:
        out = tmp_path / "co"
        _run(llvm22["clang-offload-bundler"], "--unbundle", "--type=o", f"--input={bundle}",
             f"--targets={code.bundle_id}", f"--output={out}")  # fmt: skip
        import hashlib

        assert hashlib.sha256(out.read_bytes()).hexdigest() == code.sha256
