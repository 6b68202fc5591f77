"""The other runtime caches, laid out as the libraries write them, around real device code: vLLM's
torch_compile_cache (with a real standalone_compile artifact), FlashInfer's JIT ops and cubins, DeepGEMM's JIT
cache, an MIOpen kernel database (SQLite ``kern_db``), the legacy ``models--`` hub layout, and a ``kernels.lock``
that ``kernels lock`` wrote into a dist-info."""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path

from tests.conftest import FIXTURES, fixture_path
from tests.imagebuild import Layer, build_layout
from tests.integration.test_image_scan import scan_json

COMMIT = "68b1aec8171bcc79baa3a93071e44a2645bdef18"


def _miopen_db(path: Path) -> bytes:
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE kern_db (id INTEGER PRIMARY KEY ASC, kernel_name TEXT NOT NULL, kernel_args TEXT NOT NULL, "
        "kernel_blob BLOB NOT NULL, kernel_hash TEXT NOT NULL, uncompressed_size INT NOT NULL)"
    )
    code = fixture_path("co_gfx90a.hsaco").read_bytes()
    for name in ("MIOpenBatchNormFwdTrainSpatial.cl.o", "naive_conv.cpp.o"):
        connection.execute(
            "INSERT INTO kern_db (kernel_name, kernel_args, kernel_blob, kernel_hash, uncompressed_size) "
            "VALUES (?, ?, ?, ?, ?)",
            (name, "-DMIO_BN_N=16 -mcpu=gfx90a", zlib.compress(code), "0" * 32, len(code)),
        )
    connection.commit()
    connection.close()
    return path.read_bytes()


def test_other_caches(tmp_path: Path) -> None:
    layer = Layer(created_by="RUN warm-up")
    vllm = "root/.cache/vllm/torch_compile_cache/1a2b3c4d5e/rank_0_0/backbone"
    layer.files[f"{vllm}/artifact_compile_range_1_8192_subgraph_0"] = (
        FIXTURES / "caches/standalone/artifact.bin"
    ).read_bytes()
    layer.files[f"{vllm}/cache_key_factors.json"] = json.dumps(
        {"code_hash": "c0de", "compiler_hash": "c0a1", "config_hash": "cf9", "env": {}}
    ).encode()
    layer.files["root/.cache/flashinfer/0.7.4/90a/cached_ops/batch_decode/batch_decode.so"] = fixture_path(
        "libk_plain.so"
    ).read_bytes()
    layer.files["root/.cache/flashinfer/cubins/3f2e/fmha/trtllm-gen/kernel.cubin"] = fixture_path(
        "kern_sm_100a.cubin"
    ).read_bytes()
    layer.files["root/.deep_gemm/cache/kernel.fp8_gemm.0123456789abcdef0123/kernel.cubin"] = fixture_path(
        "kern_sm_90a.cubin"
    ).read_bytes()
    layer.files["root/.cache/miopen/3.4.0/gfx90a_104.ukdb"] = _miopen_db(tmp_path / "db.ukdb")
    legacy = f"root/.cache/huggingface/hub/models--kernels-community--activation/snapshots/{COMMIT}/build/torch-cuda"
    layer.files[f"{legacy}/_ops.so"] = fixture_path("libk_speed.so").read_bytes()
    dist_info = "usr/local/lib/python3.11/site-packages/myapp-1.0.dist-info"
    layer.files[f"{dist_info}/kernels.lock"] = json.dumps(
        [{"dependency": {"repo-id": "kernels-community/activation", "revision": "main"}, "lock": {"commit": COMMIT}}]
    ).encode()
    layer.files[f"{dist_info}/RECORD"] = b"myapp-1.0.dist-info/RECORD,,\n"
    build_layout(tmp_path / "oci", [layer], tag="v1", env={"FLASHINFER_CUBINS_REPOSITORY": "https://mirror/"})
    document = scan_json(f"oci:{tmp_path / 'oci'}:v1", "--no-cache")
    caches = {c["type"]: c for c in document["caches"]}

    vllm_entry = caches["vllm-torch-compile"]
    assert vllm_entry["key"] == "1a2b3c4d5e" and ["code_hash", "c0de"] in vllm_entry["details"]
    assert len(vllm_entry["binaries"]) == 4 and vllm_entry["archs"] == ["sm_90a"]  # cubins carved from the artifact

    ops = caches["flashinfer-jit"]
    assert ops["archs"] == ["sm_90a"] and ["module", "batch_decode"] in ops["details"] and len(ops["binaries"]) == 1
    assert caches["flashinfer-cubins"]["archs"] == ["sm_100a"]
    gemm = caches["deepgemm-jit"]
    assert gemm["key"] == "0123456789abcdef0123" and gemm["archs"] == ["sm_90a"]
    miopen = caches["miopen"]
    assert miopen["archs"] == ["gfx90a"] and ["kernels", "2"] in miopen["details"]
    assert ["compute_units", "104"] in miopen["details"]
    hub = caches["hf-kernel-hub"]
    assert ["layout", "models"] in hub["details"] and hub["key"] == f"kernels-community/activation@{COMMIT}"
    lock = caches["hf-kernel-lock"]
    assert lock["path"].endswith("myapp-1.0.dist-info/kernels.lock") and ["requested", "main"] in lock["details"]
    signals = {s["kind"] for s in document["first_use"]}
    assert "flashinfer-cubin-download" in signals
