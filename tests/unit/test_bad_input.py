"""Hostile, truncated and gigantic input: every problem becomes a finding, the scan goes on, nothing is allocated
beyond the caps, nothing is written, nothing blocks."""

from __future__ import annotations

import hashlib
import os
import struct
import tracemalloc
import zipfile
from pathlib import Path

import pytest
import zstandard

from kaudit.binfmt import fatbin as fatbin_format
from kaudit.binfmt.bounded import BytesBlob, lz4_block, zstd_frame
from kaudit.binfmt.bundle import parse_bundle, parse_ccob
from kaudit.demangle import demangle
from kaudit.errors import LimitExceeded, MalformedBinary
from kaudit.inventory import CodeKind, FindingKind
from kaudit.walk import files as walk_files
from tests.conftest import BIN, fixture_path, scan

GIB = 1 << 30


def fatbin_entry(kind: int, arch: int, payload: bytes, *, flags: int = 0x11, uncompressed: int = 0,
                 compressed: int = 0, minor: int = 8, major: int = 1) -> bytes:  # fmt: skip
    """One fatbin entry (64-byte header + payload padded to 8), laid out as gpu-binary-formats.md §2.2."""
    padded = payload + b"\0" * (-len(payload) % 8)
    header = struct.pack("<HHIQIIHHIIIQQQ", kind, 0x0101, 64, len(padded), compressed, 0, minor, major, arch, 0, 0,
                         flags, 0, uncompressed)  # fmt: skip
    return header + padded


def fatbin_container(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", fatbin_format.FATBIN_MAGIC, 1, 16, len(body)) + body


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_entry_claiming_4_gib_is_refused_not_allocated(tmp_path: Path) -> None:
    frame = zstandard.ZstdCompressor().compress(b"x" * 1000)
    bomb = fatbin_container(fatbin_entry(2, 90, frame, flags=0x8011, compressed=len(frame), uncompressed=4 * GIB))
    path = write(tmp_path, "bomb.fatbin", bomb)
    tracemalloc.start()
    report = scan(path)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16 * 1024 * 1024
    (finding,) = report.findings
    assert finding.kind is FindingKind.LIMIT and "4294967296 bytes decompressed" in finding.reason
    assert finding.location == "container#0/entry#0"
    (code,) = report.binaries[0].device_code
    assert code.kind is CodeKind.SASS and code.arch == "sm_90" and code.notes  # kept, hashed by its stored bytes


def test_zstd_frame_larger_than_its_entry_claims_is_refused() -> None:
    frame = zstandard.ZstdCompressor().compress(b"\0" * (8 << 20))  # 8 MiB of zeros, a few hundred bytes
    with pytest.raises(LimitExceeded, match="zstd frame"):
        zstd_frame(frame, 100)
    with pytest.raises(LimitExceeded):
        zstd_frame(frame, None, cap=1 << 20)


def test_lz4_claim_over_the_cap_is_refused() -> None:
    with pytest.raises(LimitExceeded):
        lz4_block(b"\x00" * 16, 4 * GIB)
    with pytest.raises(MalformedBinary, match="LZ4"):
        lz4_block(b"\xff" * 16, 1000)


def test_ccob_claims_and_hash_are_checked() -> None:
    bundle = fixture_path("kern_hip22_ccob3.ccob").read_bytes()
    claim = bytearray(bundle)
    struct.pack_into("<Q", claim, 16, 4 * GIB)  # v3 uncompressed size
    with pytest.raises(LimitExceeded):
        parse_ccob(bytes(claim))
    wrong_hash = bytearray(bundle)
    wrong_hash[24] ^= 0xFF
    with pytest.raises(MalformedBinary, match="MD5"):
        parse_ccob(bytes(wrong_hash))
    short = bytearray(bundle)
    struct.pack_into("<Q", short, 8, len(bundle) + 100)  # total size past the data
    with pytest.raises(MalformedBinary, match="past the end"):
        parse_ccob(bytes(short))


def test_bundle_with_absurd_entry_count_is_refused() -> None:
    with pytest.raises(LimitExceeded):
        parse_bundle(b"__CLANG_OFFLOAD_BUNDLE__" + struct.pack("<Q", 1 << 40))


def test_entries_running_past_their_container(tmp_path: Path) -> None:
    entry = bytearray(fatbin_entry(1, 90, b".version 9.0\n.target sm_90\n"))
    struct.pack_into("<Q", entry, 8, 1 << 40)  # padded size
    report = scan(write(tmp_path, "x.fatbin", fatbin_container(bytes(entry))))
    (finding,) = report.findings
    assert finding.kind is FindingKind.MALFORMED and "runs past its container" in finding.reason


def test_unknown_entry_kinds_are_kept_opaque(tmp_path: Path) -> None:
    report = scan(write(tmp_path, "tile.fatbin", fatbin_container(fatbin_entry(0x40, 100, b"tile-ir?"))))
    (code,) = report.binaries[0].device_code
    assert code.kind is CodeKind.OPAQUE and "unknown fatbin entry kind 64" in code.notes[0]
    assert code.sha256 == hashlib.sha256(b"tile-ir?").hexdigest()


def test_elf_with_hostile_section_table(tmp_path: Path) -> None:
    good = fixture_path("libk_plain.so").read_bytes()
    past_eof = bytearray(good)
    struct.pack_into("<Q", past_eof, 0x28, len(good) * 4)  # e_shoff
    huge = bytearray(good)
    struct.pack_into("<H", huge, 0x3C, 0xFFFF)  # e_shnum
    report = scan(write(tmp_path, "a.so", bytes(past_eof)), write(tmp_path, "b.so", bytes(huge)))
    assert report.binaries == ()
    assert sorted(f.path.rsplit("/", 1)[-1] for f in report.findings) == ["a.so", "b.so"]
    assert all(f.kind is FindingKind.MALFORMED and "host-elf" in f.reason for f in report.findings)


@pytest.mark.parametrize("name", sorted(p.name for p in BIN.iterdir() if p.is_file()))
def test_truncated_fixtures_never_crash(tmp_path: Path, name: str) -> None:
    data = fixture_path(name).read_bytes()
    cuts = sorted({0, 1, 16, 63, 64, len(data) // 4, len(data) // 2, len(data) * 3 // 4, len(data) - 1})
    paths = [write(tmp_path, f"{name}.{cut}", data[:cut]) for cut in cuts if cut < len(data)]
    report = scan(tmp_path)
    seen = {b.path for b in report.binaries} | {f.path for f in report.findings}
    assert report.stats.files_seen >= len(paths)
    # every truncation that still looks like device code is either described or reported
    assert seen <= {str(p) for p in paths} | {f"{p}!/k_rdc.o" for p in paths}


def test_special_files_and_symlinks_are_not_followed(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    os.mkfifo(tree / "fifo")  # opening a FIFO for reading would block
    (tree / "loop").symlink_to(tree / "loop")
    (tree / "outside.so").symlink_to(fixture_path("libk_plain.so"))
    (tree / "dirlink").symlink_to(BIN, target_is_directory=True)
    (tree / "real.cubin").write_bytes(fixture_path("kern_sm_80.cubin").read_bytes())
    report = scan(tree)
    assert [Path(b.path).name for b in report.binaries] == ["real.cubin"]
    assert report.findings == ()


def test_scanning_writes_nothing_and_changes_nothing(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("libk_plain.so", "kern_hip22_ccob3.o", "libk_rdc.a"):
        (tree / name).write_bytes(fixture_path(name).read_bytes())
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tree.iterdir()}
    report = scan(tree)
    assert len(report.binaries) == 3
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tree.iterdir()} == before


def test_zip_problems_are_findings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("pkg/libk.so", fixture_path("libk_plain.so").read_bytes())
        archive.writestr("pkg/big.bin", b"\0" * 4096)
    corrupt = tmp_path / "broken.whl"
    corrupt.write_bytes(wheel.read_bytes()[:-30])  # the central directory's end is gone
    monkeypatch.setattr(walk_files, "MAX_MEMBER_BYTES", 4000)
    report = scan(tmp_path)
    assert [b.path for b in report.binaries] == []  # libk.so (72 KB) is over the lowered member limit too
    reasons = {(Path(f.path.split("!")[0]).name, f.kind) for f in report.findings}
    assert ("broken.whl", FindingKind.UNREADABLE) in reasons
    assert ("pkg-1.0-py3-none-any.whl", FindingKind.LIMIT) in reasons


def test_archives_nested_too_deep_are_not_opened(tmp_path: Path) -> None:
    inner = fixture_path("libk_rdc.a").read_bytes()
    for depth in range(4):
        path = tmp_path / f"layer{depth}.zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(f"inner{depth}", inner)
        inner = path.read_bytes()
        if depth < 3:
            path.unlink()
    report = scan(tmp_path)
    assert report.binaries == ()
    assert any(f.kind is FindingKind.LIMIT and "nested deeper" in f.reason for f in report.findings)


def test_hostile_symbol_names_do_not_break_demangling() -> None:
    assert demangle("_Z" + "P" * 100_000 + "i") is None
    assert demangle("_ZN" * 5000) is None
    assert demangle("saxpy") is None
    assert demangle("_Z9block_sumPKfPfi") == "block_sum(float const*, float*, int)"


def test_bytes_blob_reads_are_bounds_checked() -> None:
    blob = BytesBlob(b"abc")
    with pytest.raises(MalformedBinary, match="past the end"):
        blob.read(2, 2)
    with pytest.raises(MalformedBinary):
        blob.read(-1, 1)
