"""kaudit's own ELF reader against lief and pyelftools: section tables, dynamic sections and kernel symbols.

kaudit reads ELF with hand-written ``struct`` code on its hot path (docs/performance.md); lief and pyelftools are
the cross-check. lief keeps the raw ``st_other`` byte, where CUDA marks kernels (STO_CUDA_ENTRY, 0x10).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest

from kaudit.binfmt.bounded import BytesBlob
from kaudit.binfmt.elf import ELF_MAGIC, ElfFile
from tests.conftest import BIN, scan_one

pytestmark = pytest.mark.oracle
lief = pytest.importorskip("lief")
lief.logging.disable()

ELF_FIXTURES = sorted(p.name for p in BIN.iterdir() if p.read_bytes()[:4] == ELF_MAGIC)


def _ours(data: bytes) -> list[tuple[str, int, int]]:
    return [(s.name, s.offset, s.size) for s in ElfFile(BytesBlob(data)).sections()]


@pytest.mark.parametrize("name", ELF_FIXTURES)
def test_section_tables_agree_with_pyelftools_and_lief(name: str) -> None:
    from elftools.elf.elffile import ELFFile

    data = (BIN / name).read_bytes()
    ours = _ours(data)
    assert ours == [(s.name, s["sh_offset"], s["sh_size"]) for s in ELFFile(io.BytesIO(data)).iter_sections()]
    binary = lief.ELF.parse(list(data))  # keep a reference: lief's sections die with their binary
    assert ours == [(s.name, s.offset, s.size) for s in binary.sections]


@pytest.mark.parametrize("name", [n for n in ELF_FIXTURES if n.endswith(".cubin")])
def test_kernels_agree_with_lief_symbols(name: str) -> None:
    data = (BIN / name).read_bytes()
    binary = lief.ELF.parse(list(data))
    with warnings.catch_warnings():
        # lief warns about CUDA's STT_LOPROC (13) data symbols in relocatable cubins; those are not kernels
        warnings.simplefilter("ignore", RuntimeWarning)
        theirs = [s.name for s in binary.symtab_symbols if s.type == lief.ELF.Symbol.TYPE.FUNC and s.other & 0x10]
    (code,) = scan_one(BIN / name).device_code
    assert [k.name for k in code.kernels] == theirs
    assert code.elf_flags == binary.header.processor_flag


def test_dynamic_sections_agree_with_lief() -> None:
    for name in ("libk_plain.so", "libkhip19.so", "libkhip22.so", "kern_exe"):
        binary = lief.ELF.parse(str(BIN / name))
        theirs = [entry.name for entry in binary.dynamic_entries if entry.tag == lief.ELF.DynamicEntry.TAG.NEEDED]
        assert list(scan_one(BIN / name).needed) == theirs, name


@pytest.mark.network
def test_real_wheel_section_tables_agree(wheel_libs: Path) -> None:
    for path in sorted(wheel_libs.glob("*.so")):
        binary = lief.ELF.parse(str(path))
        assert _ours(path.read_bytes()) == [(s.name, s.offset, s.size) for s in binary.sections], path.name
