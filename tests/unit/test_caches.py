"""Cache catalogers on their own: Kernel Hub lock formats, arch spellings, first-use signals from the environment."""

from __future__ import annotations

import json

from kaudit.caches import CacheView, catalog_view
from kaudit.caches.hub import cuda_arch, lock_entries
from tests.conftest import FIXTURES


def test_both_lock_formats() -> None:
    current = lock_entries((FIXTURES / "caches/kernels-project/kernels.lock").read_text())
    legacy = lock_entries((FIXTURES / "caches/kernels-project-legacy/kernels.lock").read_text())
    commit = "68b1aec8171bcc79baa3a93071e44a2645bdef18"
    assert current == [("kaudit-test/saxpy", "1", commit, "current")]
    assert legacy == [("kaudit-test/saxpy", None, commit, "legacy")]
    assert lock_entries("not json") == [] and lock_entries(json.dumps({"a": 1})) == []


def test_metadata_arch_spellings() -> None:
    assert [cuda_arch(a) for a in ("8.0", "9.0a", "10.0f", "9.0+PTX", "gfx942")] == [
        "sm_80", "sm_90a", "sm_100f", "compute_90", "gfx942",
    ]  # fmt: skip


def _view(**kwargs: object) -> CacheView:
    base: dict[str, object] = {"files": set(), "symlinks": {}, "texts": {}, "binaries": {}}
    base.update(kwargs)
    return CacheView(**base)  # type: ignore[arg-type]


def test_environment_first_use_signals() -> None:
    env = {"TORCHINDUCTOR_FX_GRAPH_REMOTE_CACHE": "1", "CUDA_FORCE_PTX_JIT": "1", "LOCAL_KERNELS": "a/b=/k",
           "TRITON_ALWAYS_COMPILE": "0", "PATH": "/bin"}  # fmt: skip
    _entries, signals = catalog_view(_view(env=env))
    assert sorted((s.kind, s.evidence) for s in signals) == [
        ("inductor-remote-cache", "env:TORCHINDUCTOR_FX_GRAPH_REMOTE_CACHE"),
        ("kernels-local-override", "env:LOCAL_KERNELS"), ("ptx-jit", "env:CUDA_FORCE_PTX_JIT"),
    ]  # fmt: skip


def test_kernels_client_offline_and_flashinfer_wheels() -> None:
    record = "usr/lib/python3/site-packages/kernels-0.17.2.dist-info/RECORD"
    flashinfer = "usr/lib/python3/site-packages/flashinfer_python-0.7.4.dist-info/RECORD"
    cubin = "usr/lib/python3/site-packages/flashinfer_cubin-0.7.4.dist-info/RECORD"
    _e, signals = catalog_view(_view(texts={record: "", flashinfer: ""}, env={"HF_HUB_OFFLINE": "1"}))
    kinds = {s.kind: s.detail for s in signals}
    assert "HF_HUB_OFFLINE is set" in kinds["kernels-client"] and "flashinfer-cubin-download" in kinds
    _e, signals = catalog_view(_view(texts={flashinfer: "", cubin: ""}))
    assert not signals  # the pre-built cubin wheel is installed: nothing is downloaded


def test_refs_reveal_a_floating_pull_only_when_they_point_at_the_snapshot() -> None:
    repo = "hub/kernels--org--k"
    snapshot = f"{repo}/snapshots/{'a' * 40}/build/torch-cuda"
    files = {f"{snapshot}/__init__.py"}
    pinned, _s = catalog_view(_view(files=files, texts={f"{repo}/refs/main": "b" * 40}))
    floating, _s = catalog_view(_view(files=files, texts={f"{repo}/refs/main": "a" * 40}))
    assert pinned[0].notes == () and ("ref", "main") not in pinned[0].details
    assert ("ref", "main") in floating[0].details and floating[0].notes


def test_look_alike_texts_in_an_image_do_not_break_the_catalogers() -> None:
    texts = {
        "root/.nv/ComputeCache/1/2/345": '{"computecache": ',  # truncated
        "opt/miopen/x.json": '{"miopen_kernels": 5}',
        ".triton/cache/" + "A" * 52 + "/k.json": '{"target": "cuda"}',
        "hub/kernels--a--b/refs/main": "\x00\xff",
        "app/kernels.lock": '[1, 2, {"dependency": 3}]',
        "app/pyproject.toml": "[tool.kernels\nbroken",
    }
    entries, _signals = catalog_view(_view(texts=texts))
    assert [e.type for e in entries] == ["hf-kernel-lock"]  # the unreadable lock file is reported as such
    assert entries[0].notes == ("kernels.lock is not a lock file kaudit can read",)
