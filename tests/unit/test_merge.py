"""Whiteouts, opaque directories and replacements across layers (OCI image-spec layer.md)."""

from __future__ import annotations

from kaudit.inventory import ArchSummary, FileStatus, GpuBinary, LayerRef
from kaudit.walk.layers import LayerFile, LayerResult
from kaudit.walk.merge import merge


def _binary(path: str) -> GpuBinary:
    return GpuBinary(path, 1, "0" * 64, "cubin", (), ArchSummary(), ArchSummary())


def _layer(digest: str, files: list[str], **kwargs: object) -> LayerResult:
    binaries = tuple(_binary(p) for p in files if p.endswith(".so"))
    return LayerResult(digest, digest, binaries, files={p: LayerFile(1) for p in files}, **kwargs)  # type: ignore[arg-type]


REFS = [LayerRef(i, f"sha256:{i}", f"sha256:{i}") for i in range(4)]


def test_whiteout_hides_lower_file_and_directory_subtree() -> None:
    results = [
        _layer("a", ["opt/a.so", "opt/dir/b.so", "opt/dir/sub/c.so", "opt/keep.so"]),
        _layer("b", [], whiteouts=("opt/a.so", "opt/dir")),
    ]
    view = merge(results, REFS[:2], keep_removed=True)
    assert [b.path for b in view.binaries] == ["opt/keep.so"]
    assert {(b.path, b.status, b.removed_in_layer) for b in view.removed_binaries} == {
        ("opt/a.so", FileStatus.DELETED, 1), ("opt/dir/b.so", FileStatus.DELETED, 1),
        ("opt/dir/sub/c.so", FileStatus.DELETED, 1),
    }  # fmt: skip


def test_opaque_directory_hides_lower_children_but_not_its_own_layer() -> None:
    results = [
        _layer("a", ["opt/x/old.so", "opt/y.so"]),
        _layer("b", ["opt/x/new.so"], opaque_dirs=("opt/x",)),
    ]
    view = merge(results, REFS[:2], keep_removed=False)
    assert [b.path for b in view.binaries] == ["opt/x/new.so", "opt/y.so"]
    assert view.removed_binaries == []


def test_whiteout_applies_to_lower_layers_only() -> None:
    results = [_layer("a", ["opt/z.so"], whiteouts=("opt/z.so",))]
    assert [b.path for b in merge(results, REFS[:1], keep_removed=False).binaries] == ["opt/z.so"]


def test_replaced_file_and_readding_after_delete() -> None:
    results = [
        _layer("a", ["opt/r.so", "opt/d.so"]),
        _layer("b", ["opt/r.so"], whiteouts=("opt/d.so",)),
        _layer("c", ["opt/d.so"]),
    ]
    view = merge(results, REFS[:3], keep_removed=True)
    assert [(b.path, b.layer.index if b.layer else None) for b in view.binaries] == [("opt/d.so", 2), ("opt/r.so", 1)]
    assert {(b.path, b.status) for b in view.removed_binaries} == {
        ("opt/r.so", FileStatus.REPLACED), ("opt/d.so", FileStatus.DELETED),
    }  # fmt: skip


def test_symlinks_resolve_inside_the_image_only() -> None:
    results = [_layer("a", ["usr/lib/x.so"], symlinks={"lib": "usr/lib", "loop": "loop", "up": "../../../etc"})]
    view = merge(results, REFS[:1], keep_removed=False)
    assert view.resolve("lib/x.so") == "usr/lib/x.so"
    assert view.resolve("up/passwd") == "etc/passwd"  # ".." stops at the image root
    assert view.resolve("loop/x") == "loop"  # a loop ends instead of spinning
