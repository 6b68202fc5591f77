"""Property tests: mutated real fixtures give a result or kaudit's own typed error — never another exception, never
unbounded memory. Each parser gets inputs that pass its own magic check, so mutations reach the deep code."""

from __future__ import annotations

import contextlib
import os
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaudit.binfmt.bounded import BytesBlob
from kaudit.binfmt.bundle import iter_bundles, iter_offload_binaries, parse_bundle, parse_ccob
from kaudit.binfmt.cubin import parse_cubin
from kaudit.binfmt.elf import ElfFile
from kaudit.binfmt.hsaco import parse_hsaco
from kaudit.binfmt.ptx import parse_ptx
from kaudit.detectors import default_detectors
from kaudit.errors import Error
from kaudit.owners.rpm import parse_header
from kaudit.walk.embedded import carved_elves, computecache_entry, pickle_payloads
from kaudit.walk.files import Walker
from tests.conftest import FIXTURES, fixture_path

MEMORY_BOUND = 64 * 1024 * 1024
FUZZ_EXAMPLES = int(os.environ.get("KAUDIT_FUZZ_EXAMPLES", "150"))
"""Examples per parser; raise it for a long local fuzzing run."""


def _section(name: str, section: str) -> bytes:
    data = fixture_path(name).read_bytes()
    elf = ElfFile(BytesBlob(data))
    found = elf.section_by_name(section)
    assert found is not None
    return elf.section_data(found)


def _detect_all(data: bytes) -> None:
    for detector in default_detectors():
        if detector.name == "foreign-host":
            continue  # lief is covered by its own mutation test below (slower)
        if detector.matches(data[:4096]):
            detector.detect(BytesBlob(data), "fuzz")


def _walk_archive(data: bytes) -> None:
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "a")
        with open(path, "wb") as handle:
            handle.write(data)
        walker = Walker(sniff=lambda head: True)
        for candidate in walker.walk(path):
            with candidate.open_blob() as blob:
                blob.read(0, blob.size)


def _rpm_header_blob() -> bytes:
    import sqlite3

    path = str(FIXTURES / "rootfs/rpm/var/lib/rpm/rpmdb.sqlite")
    connection = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        (blob,) = connection.execute("SELECT blob FROM Packages LIMIT 1").fetchone()
    finally:
        connection.close()
    return bytes(blob)


def _walk_layer_tar(data: bytes) -> None:
    """A layer blob (an uncompressed tar) through the streaming layer walker."""
    import hashlib
    import io as _io
    from dataclasses import dataclass

    from kaudit.scan import Scanner, ScanOptions
    from kaudit.sources.interface import LayerDescriptor, LayerReader
    from kaudit.walk.layers import walk_layer

    @dataclass(frozen=True)
    class Reader(LayerReader):
        blob: bytes

        def open(self) -> _io.BytesIO:  # type: ignore[override]
            return _io.BytesIO(self.blob)

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    layer = LayerDescriptor(0, digest, "application/vnd.oci.image.layer.v1.tar", len(data), "")
    scanner = Scanner(ScanOptions(jobs=1))
    walk_layer(layer, Reader(data), scanner.examine, scanner.sniff)


def _layer_tar() -> bytes:
    from tests.imagebuild import Layer

    layer = Layer()
    layer.files["usr/lib/libk.so"] = fixture_path("libk_lz4all.so").read_bytes()
    layer.files["var/lib/dpkg/status"] = (FIXTURES / "rootfs/dpkg/var/lib/dpkg/status").read_bytes()
    layer.symlinks["lib"] = "usr/lib"
    layer.whiteouts.append("opt/gone")
    return layer.tar()


TARGETS: dict[str, tuple[Callable[[bytes], object], bytes]] = {
    "host-elf+fatbin": (_detect_all, fixture_path("libk_compall.so").read_bytes()),
    "host-elf+lz4": (_detect_all, fixture_path("libk_lz4all.so").read_bytes()),
    "host-elf+ccob": (_detect_all, fixture_path("kern_hip22_ccob3.o").read_bytes()),
    "fatbin-file": (_detect_all, fixture_path("ident.fatbin").read_bytes()),
    "cubin": (parse_cubin, fixture_path("kern_sm_90a.cubin").read_bytes()),
    "cubin-v1": (parse_cubin, fixture_path("kern_sm_90a_v1.cubin").read_bytes()),
    "hsaco": (parse_hsaco, fixture_path("co_gfx90a.hsaco").read_bytes()),
    "bundle": (parse_bundle, fixture_path("kern_hip19.hipfb").read_bytes()),
    "ccob": (parse_ccob, fixture_path("kern_hip22_ccob3.ccob").read_bytes()),
    "bundles-in-section": (lambda d: list(iter_bundles(d)), _section("libkhip19.so", ".hip_fatbin")),
    "offload-binary": (lambda d: list(iter_offload_binaries(d)), _section("kern_hip22_newdrv.o", ".llvm.offloading")),
    "ptx": (parse_ptx, fixture_path("kern80.ptx").read_bytes()),
    "ar-archive": (_walk_archive, fixture_path("libk_rdc.a").read_bytes()),
    "rpm-header": (parse_header, _rpm_header_blob()),
    "computecache-entry": (computecache_entry, (FIXTURES / "caches/computecache/9/9/1241c501244760").read_bytes()),
    "inductor-pickle": (
        lambda d: list(pickle_payloads(d)),
        next((FIXTURES / "caches/inductor/fxgraph").rglob("*/*/*")).read_bytes(),
    ),
    "compile-artifact": (lambda d: list(carved_elves(d)), (FIXTURES / "caches/standalone/artifact.bin").read_bytes()),
    "layer-tar": (_walk_layer_tar, _layer_tar()),
}


@st.composite
def mutations(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    action = draw(st.sampled_from(["flip", "overwrite", "truncate", "splice"]))
    if action == "truncate":
        return bytes(data[: draw(st.integers(0, len(data)))])
    for _ in range(draw(st.integers(1, 8))):
        # bias toward headers, where sizes and offsets live
        limit = draw(st.sampled_from([min(len(data), 256), min(len(data), 4096), len(data)]))
        pos = draw(st.integers(0, max(0, limit - 1)))
        if action == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif action == "overwrite":
            value = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80]))
            width = draw(st.sampled_from([1, 2, 4, 8]))
            data[pos : pos + width] = bytes([value]) * len(data[pos : pos + width])
        else:
            start = draw(st.integers(0, len(data) - 1))
            data[pos : pos + 8] = original[start : start + 8]
    return bytes(data)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_mutations_give_a_result_or_a_kaudit_error(target: str) -> None:
    parse, original = TARGETS[target]

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=mutations(original))
    def check(data: bytes) -> None:
        tracemalloc.start()
        try:
            parse(data)
        except Error:
            pass  # kaudit's own typed error: the scan turns it into a finding
        finally:
            _current, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert peak < MEMORY_BOUND

    check()


def test_foreign_host_mutations() -> None:
    pytest.importorskip("lief")
    original = fixture_path("kern_pe.dll").read_bytes()
    detector = next(d for d in default_detectors() if d.name == "foreign-host")

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=mutations(original))
    def check(data: bytes) -> None:
        if not detector.matches(data[:4096]):
            return
        with contextlib.suppress(Error):
            detector.detect(BytesBlob(data), "fuzz")

    check()


TEXT_PATHS = [
    "var/lib/dpkg/status",
    "var/lib/dpkg/info/pkg:amd64.list",
    "var/lib/dpkg/status.d/pkg.md5sums",
    "usr/lib/python3/site-packages/pkg-1.0.dist-info/RECORD",
    "usr/lib/python3/site-packages/pkg-1.0.dist-info/METADATA",
    "opt/conda/conda-meta/pkg-1.0-0.json",
    "etc/os-release",
    "root/.cache/huggingface/hub/kernels--o--n/refs/main",
    f"root/.cache/huggingface/hub/kernels--o--n/snapshots/{'a' * 40}/build/torch-cuda/metadata.json",
    "app/kernels.lock",
    "app/pyproject.toml",
    "root/.triton/cache/" + "A" * 52 + "/k.json",
    "root/.cache/vllm/torch_compile_cache/0123456789/rank_0_0/backbone/cache_key_factors.json",
]


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(st.tuples(st.sampled_from(TEXT_PATHS), st.text(max_size=400)), max_size=6))
def test_package_databases_and_cache_metadata_never_break_attribution(texts: list[tuple[str, str]]) -> None:
    """Whatever an image holds at the paths attribution and the catalogers read, they answer or ignore it."""
    from kaudit.caches import CacheView, catalog_view
    from kaudit.owners.index import build_index

    mapping = dict(texts)
    files = set(mapping) | {f"root/.cache/huggingface/hub/kernels--o--n/snapshots/{'a' * 40}/build/torch-cuda/x.so"}
    build_index(mapping, [], lambda path: path)
    catalog_view(CacheView(files=files, symlinks={}, texts=mapping, binaries={}))
