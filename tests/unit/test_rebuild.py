"""Rebuild every fixture from tests/fixtures/src with the real toolchains and compare with the committed binaries.

nvcc output is not byte-reproducible (a temporary file name lands in the host symbol table), so the comparison is
on what kaudit reads: every property of every device code object except hashes and sizes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kaudit.inventory import GpuBinary
from tests.conftest import BIN, FIXTURES, scan_one

pytestmark = pytest.mark.toolchain

TOOLS = ("nvcc", "ptxas", "fatbinary", "clang-19", "clang-22", "ld.lld-22", "lld-link-19", "ld64.lld-19")


def signature(binary: GpuBinary) -> tuple[object, ...]:
    codes = tuple(
        (c.vendor, c.kind, c.arch, c.location, c.compression, c.relocatable, c.link_stub,
         c.elf_flags, c.elf_abi_version, c.code_object_version, c.ptx_isa, c.virtual_arch, c.toolkit, c.compiler,
         c.identifier, c.options, c.bundle_id, c.debug,
         tuple((k.name, k.registers, k.sgprs, k.shared_bytes, k.max_threads) for k in c.kernels))
        for c in binary.device_code
    )  # fmt: skip
    return binary.format, binary.loadable, binary.relocatable, binary.link_stub_count, binary.needed, codes


def test_rebuilt_fixtures_match_the_committed_ones(tmp_path: Path) -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"toolchain not installed: {', '.join(missing)}")
    out = tmp_path / "bin"
    env = {**os.environ, "KAUDIT_FIXTURE_WORKDIR": str(tmp_path / "work")}
    build = subprocess.run(["bash", str(FIXTURES / "build.sh"), str(out)], capture_output=True, text=True,
                           timeout=900, env=env)  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    committed = sorted(p.name for p in BIN.iterdir() if p.is_file())
    optional = {"kern_sm_90a_v1.cubin"}  # needs ptxas 12.6 from PyPI; build.sh skips it offline
    rebuilt = sorted(p.name for p in out.iterdir())
    assert set(committed) - set(rebuilt) <= optional, build.stderr[-3000:]
    for name in rebuilt:
        assert signature(scan_one(out / name)) == signature(scan_one(BIN / name)), name
