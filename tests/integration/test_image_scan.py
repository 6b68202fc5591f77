"""``kaudit scan image`` end to end: images built from the real fixtures, pushed with skopeo to a real
docker-registry on 127.0.0.1, and the same image as an OCI layout and as ``docker save`` archives.

The image has a dpkg base (usrmerge symlink), a pip-installed package (RECORD), a GPU library no package owns, a
Kernel Hub cache pulled by a floating revision with its lock file, Triton / Inductor / ComputeCache caches made on
an H200, a hardlink, an opaque directory and a whiteout that deletes a GPU library.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.conftest import FIXTURES, ROOT, fixture_path
from tests.imagebuild import BuiltImage, Layer, build_layout, docker_archive
from tests.registry import PASSWORD, USER, Registry

SCHEMA = json.loads((ROOT / "docs" / "schema" / "scan-report-v1.json").read_text())
ROOTFS = FIXTURES / "rootfs"
CACHES = FIXTURES / "caches"
ENV = {"TRITON_REMOTE_CACHE_BACKEND": "triton.runtime.cache:RedisRemoteCacheBackend", "PATH": "/usr/bin"}


def _kernels_client_dist_info() -> Layer:
    """What ``pip install kernels==0.17.2`` leaves in site-packages (dist-info only; no code is needed)."""
    site = "usr/local/lib/python3.11/site-packages/kernels-0.17.2.dist-info"
    layer = Layer(created_by="RUN pip install kernels==0.17.2")
    layer.files[f"{site}/METADATA"] = b"Metadata-Version: 2.4\nName: kernels\nVersion: 0.17.2\n"
    layer.files[f"{site}/RECORD"] = (
        b"kernels-0.17.2.dist-info/METADATA,,\nkernels-0.17.2.dist-info/RECORD,,\nkernels/__init__.py,,\n"
    )
    layer.files["usr/local/lib/python3.11/site-packages/kernels/__init__.py"] = b""
    return layer


def gpu_image_layers() -> list[Layer]:
    base = Layer(created_by="FROM debian:bookworm").add_tree(ROOTFS / "dpkg")
    base.files["etc/os-release"] = b'ID=debian\nVERSION_ID="12"\n'
    base.files["opt/old/libold.so"] = fixture_path("libk_speed.so").read_bytes()
    python = Layer(created_by="RUN pip install kdemo-ops", compression="zstd").add_tree(ROOTFS / "python")
    app = Layer(created_by="COPY app /opt/app")
    app.files["opt/app/libmystery.so"] = fixture_path("libk_nocomp.so").read_bytes()
    app.files["opt/app/libdeleted.so"] = fixture_path("libk_plain.so").read_bytes()
    app.hardlinks["opt/app/libmystery-link.so"] = "opt/app/libmystery.so"
    app.add_tree(CACHES / "kernels-project", "opt/app")
    caches = Layer(created_by="RUN python warm_caches.py")
    caches.add_tree(CACHES / "hub", "root/.cache/huggingface/hub")
    caches.add_tree(CACHES / "triton", "root/.triton/cache")
    caches.add_tree(CACHES / "inductor", "tmp/torchinductor_root")
    caches.add_tree(CACHES / "computecache", "root/.nv/ComputeCache")
    cleanup = Layer(created_by="RUN rm /opt/app/libdeleted.so && rm -rf /opt/old/*")
    cleanup.whiteouts.append("opt/app/libdeleted.so")
    cleanup.opaque_dirs.append("opt/old")
    return [base, python, _kernels_client_dist_info(), app, caches, cleanup]


@pytest.fixture(scope="module")
def gpu_image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    return build_layout(tmp_path_factory.mktemp("layout") / "oci", gpu_image_layers(), tag="v1", env=ENV)


@pytest.fixture(scope="module")
def pushed(registry: Registry, gpu_image: BuiltImage) -> str:
    registry.push(gpu_image.layout, "v1", "kaudit/gpu")
    return f"{registry.host}/kaudit/gpu"


def kaudit(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kaudit", *args], capture_output=True, text=True, timeout=300,
                          input=stdin, env={**os.environ, **(env or {})})  # fmt: skip


def scan_json(*args: str, **kwargs: Any) -> dict[str, Any]:
    result = kaudit("scan", "image", *args, "-o", "json", "--progress", "never", **kwargs)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    jsonschema.validate(document, SCHEMA)
    return document


def by_path(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["path"]: b for b in document["binaries"]}


EXPECTED_PRESENT = {
    "opt/app/libmystery.so": None,
    "opt/app/libmystery-link.so": None,
    "usr/lib/x86_64-linux-gnu/libkdemo_cuda.so": "pkg:deb/debian/kdemo-cuda@1.0.0-1?arch=amd64",
    "usr/lib/x86_64-linux-gnu/kdemo/kdemo_gfx90a.hsaco": "pkg:deb/debian/kdemo-compat@0.9-2?arch=amd64",
    "usr/local/lib/python3.11/site-packages/kdemo_ops/_C.so": "pkg:pypi/kdemo-ops@1.0.0",
}


def test_registry_image_by_tag(pushed: str, gpu_image: BuiltImage, registry: Registry, tmp_path: Path) -> None:
    document = scan_json(f"{pushed}:v1", "--insecure-registry", registry.host, "--cache-dir", str(tmp_path))
    image = document["image"]
    assert image["manifest_digest"] == gpu_image.manifest_digest
    assert [layer["digest"] for layer in image["layers"]] == gpu_image.layer_digests
    assert [layer["diff_id"] for layer in image["layers"]] == gpu_image.diff_ids
    assert image["layers"][1]["created_by"] == "RUN pip install kdemo-ops"
    binaries = by_path(document)
    owners = {p: (b["owner"] or {}).get("purl") for p, b in binaries.items() if not p.startswith(("root/", "tmp/"))}
    assert owners == EXPECTED_PRESENT
    assert "opt/app/libdeleted.so" not in binaries and "opt/old/libold.so" not in binaries
    mystery = binaries["opt/app/libmystery.so"]
    assert mystery["layer"]["index"] == 3 and mystery["layer"]["digest"] == gpu_image.layer_digests[3]
    assert any("owned by no package" in note for note in mystery["notes"])
    assert mystery["sha256"] == hashlib.sha256(fixture_path("libk_nocomp.so").read_bytes()).hexdigest()
    assert binaries["opt/app/libmystery-link.so"]["sha256"] == mystery["sha256"]
    python = binaries["usr/local/lib/python3.11/site-packages/kdemo_ops/_C.so"]
    assert python["layer"]["created_by"] == "RUN pip install kdemo-ops"
    assert python["loadable"]["sass_archs"] == ["sm_80"]


def test_caches_and_first_use_signals(pushed: str, registry: Registry, tmp_path: Path) -> None:
    document = scan_json(f"{pushed}:v1", "--insecure-registry", registry.host, "--cache-dir", str(tmp_path))
    caches = {(c["type"], c["key"]): c for c in document["caches"]}
    hub = caches[("hf-kernel-hub", "kaudit-test/saxpy@68b1aec8171bcc79baa3a93071e44a2645bdef18")]
    details = dict(map(tuple, hub["details"]))
    assert hub["path"].startswith("root/.cache/huggingface/hub/kernels--kaudit-test--saxpy/snapshots/")
    assert details["variant"] == "torch211-cxx11-cu130-x86_64-linux" and details["signature"] == "absent"
    assert ["ref", "main"] in hub["details"] and "floating revision" in hub["notes"][0]
    assert {"sm_80", "sm_90a", "sm_120", "compute_90"} <= set(hub["archs"])
    assert hub["binaries"] and hub["binaries"][0].startswith(
        "root/.cache/huggingface/hub/kernels--kaudit-test--saxpy/blobs/"
    )
    assert hub["layer"]["index"] == 4
    assert ("hf-kernel-lock", "kaudit-test/saxpy@68b1aec8171bcc79baa3a93071e44a2645bdef18") in caches
    assert ("hf-kernel-dependency", "kaudit-test/saxpy") in caches
    triton = [c for c in document["caches"] if c["type"] == "triton"]
    assert {c["path"].split("/")[0] for c in triton} == {"root", "tmp"}  # ~/.triton and Inductor's triton/
    assert all(c["archs"] == ["compute_90a", "sm_90a"] for c in triton)
    assert sum(c["type"] == "triton-launcher" for c in document["caches"]) == 2
    inductor = [c for c in document["caches"] if c["type"] == "inductor"]
    assert any(len(c["binaries"]) == 2 for c in inductor)  # the two cubins inside the FX-graph pickle
    computecache = next(c for c in document["caches"] if c["type"] == "cuda-computecache")
    assert ["target", "sm_90"] in computecache["details"] and computecache["key"] == "9/9/1241c501244760"
    kinds = {s["kind"]: s for s in document["first_use"]}
    assert "HF_HUB_OFFLINE is not set" in kinds["kernels-client"]["detail"]
    assert kinds["triton-remote-cache"]["evidence"] == "env:TRITON_REMOTE_CACHE_BACKEND"


def test_registry_image_by_digest_and_all_layers(
    pushed: str, gpu_image: BuiltImage, registry: Registry, tmp_path: Path
) -> None:
    document = scan_json(f"{pushed}@{gpu_image.manifest_digest}", "--insecure-registry", registry.host,
                         "--all-layers", "--no-cache")  # fmt: skip
    binaries = by_path(document)
    deleted = binaries["opt/app/libdeleted.so"]
    assert deleted["status"] == "deleted" and deleted["removed_in_layer"] == 5 and deleted["layer"]["index"] == 3
    old = binaries["opt/old/libold.so"]
    assert old["status"] == "deleted" and old["removed_in_layer"] == 5
    assert binaries["opt/app/libmystery.so"]["status"] == "present"


def test_same_inventory_from_every_source(
    pushed: str, gpu_image: BuiltImage, registry: Registry, tmp_path: Path
) -> None:
    reference = scan_json(f"{pushed}:v1", "--insecure-registry", registry.host, "--no-cache")
    expected = sorted((b["path"], b["sha256"], (b["owner"] or {}).get("purl")) for b in reference["binaries"])
    archive = docker_archive(gpu_image, tmp_path / "image.tar")
    legacy = docker_archive(gpu_image, tmp_path / "legacy.tar", legacy=True)
    for ref in (f"oci:{gpu_image.layout}:v1", f"docker-archive:{archive}", f"docker-archive:{legacy}"):
        document = scan_json(ref, "--no-cache")
        got = sorted((b["path"], b["sha256"], (b["owner"] or {}).get("purl")) for b in document["binaries"])
        assert got == expected, ref
    assert scan_json(f"docker-archive:{legacy}", "--no-cache")["image"]["repo_tags"] == ["kaudit/test:v1"]


def test_layer_cache_is_used_and_never_trusted_when_corrupt(gpu_image: BuiltImage, tmp_path: Path) -> None:
    layout = tmp_path / "oci"
    shutil.copytree(gpu_image.layout, layout)
    cache = tmp_path / "cache"
    first = scan_json(f"oci:{layout}:v1", "--cache-dir", str(cache))
    entries = sorted(cache.glob("sha256-*.layer"))
    assert len(entries) == len(gpu_image.layer_digests)
    # damage a layer blob: a cached layer is not read again, an uncached scan refuses the blob
    blob = layout / "blobs" / "sha256" / gpu_image.layer_digests[3].split(":")[1]
    data = bytearray(blob.read_bytes())
    data[-100] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert by_path(scan_json(f"oci:{layout}:v1", "--cache-dir", str(cache))) == by_path(first)
    refused = kaudit("scan", "image", f"oci:{layout}:v1", "--no-cache", "-o", "json")
    assert refused.returncode == 2 and "does not match" in refused.stderr and "Traceback" not in refused.stderr
    # a corrupt cache entry is ignored: the layer is walked again (and refused here, since the blob is damaged)
    entry = cache / f"sha256-{gpu_image.layer_digests[3].split(':')[1]}.layer"
    entry.write_bytes(entry.read_bytes()[:-50] + b"garbage")
    again = kaudit("scan", "image", f"oci:{layout}:v1", "--cache-dir", str(cache), "-o", "json")
    assert again.returncode == 2 and "does not match" in again.stderr


def test_concurrent_scans_share_the_cache(gpu_image: BuiltImage, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "kaudit", "scan", "image", f"oci:{gpu_image.layout}:v1", "--cache-dir",
               str(tmp_path), "-o", "json", "-j", "1"]  # fmt: skip
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err for _out, err in outputs]
    inventories = [sorted(b["sha256"] for b in json.loads(out)["binaries"]) for out, _err in outputs]
    assert inventories[0] == inventories[1] == inventories[2]
    assert not list(tmp_path.glob(".tmp-*"))


def test_basic_auth_registry(auth_registry: Registry, gpu_image: BuiltImage, tmp_path: Path) -> None:
    auth_registry.push(gpu_image.layout, "v1", "kaudit/private")
    ref = f"{auth_registry.host}/kaudit/private:v1"
    denied = kaudit("scan", "image", ref, "--insecure-registry", auth_registry.host, "--no-cache", "-o", "json",
                    env={"HOME": str(tmp_path), "REGISTRY_AUTH_FILE": ""})  # fmt: skip
    assert denied.returncode == 2 and "requires credentials" in denied.stderr
    wrong = kaudit("scan", "image", ref, "--insecure-registry", auth_registry.host, "--no-cache", "--username",
                   USER, "--password-stdin", stdin="wrong\n", env={"HOME": str(tmp_path)})  # fmt: skip
    assert wrong.returncode == 2 and "authentication failed" in wrong.stderr
    with_stdin = scan_json(ref, "--insecure-registry", auth_registry.host, "--no-cache", "--username", USER,
                           "--password-stdin", stdin=PASSWORD + "\n")  # fmt: skip
    auth_file = tmp_path / "auth.json"
    import base64

    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    auth_file.write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))
    with_file = scan_json(ref, "--insecure-registry", auth_registry.host, "--no-cache",
                          env={"REGISTRY_AUTH_FILE": str(auth_file)})  # fmt: skip
    docker_config = tmp_path / "home" / ".docker"
    docker_config.mkdir(parents=True)
    (docker_config / "config.json").write_text(auth_file.read_text())
    with_docker = scan_json(ref, "--insecure-registry", auth_registry.host, "--no-cache",
                            env={"HOME": str(tmp_path / "home"), "REGISTRY_AUTH_FILE": ""})  # fmt: skip
    assert by_path(with_stdin).keys() == by_path(with_file).keys() == by_path(with_docker).keys()


def test_bearer_token_registry(token_registry: Registry, gpu_image: BuiltImage) -> None:
    token_registry.push(gpu_image.layout, "v1", "kaudit/tokened")
    ref = f"{token_registry.host}/kaudit/tokened:v1"
    anonymous = scan_json(ref, "--insecure-registry", token_registry.host, "--no-cache")  # anonymous pull token
    authenticated = scan_json(ref, "--insecure-registry", token_registry.host, "--no-cache", "--username", USER,
                              "--password-stdin", stdin=PASSWORD + "\n")  # fmt: skip
    assert by_path(anonymous).keys() == by_path(authenticated).keys()
    assert anonymous["image"]["manifest_digest"] == gpu_image.manifest_digest


def test_https_is_the_default(pushed: str) -> None:
    result = kaudit("scan", "image", f"{pushed}:v1", "--no-cache")
    assert result.returncode == 2 and "--insecure-registry" in result.stderr and "Traceback" not in result.stderr


def test_platform_selection_from_an_index(registry: Registry, tmp_path: Path) -> None:
    layout = tmp_path / "multi"
    amd = Layer(created_by="amd64 layer")
    amd.files["opt/lib/amd64.so"] = fixture_path("libk_plain.so").read_bytes()
    arm = Layer(created_by="arm64 layer")
    arm.files["opt/lib/arm64.cubin"] = fixture_path("kern_sm_90a.cubin").read_bytes()
    build_layout(layout, [amd], tag="amd64")
    build_layout(layout, [arm], tag="arm64", architecture="arm64")
    index = json.loads((layout / "index.json").read_text())
    manifests = [dict(m, annotations={}) for m in index["manifests"]]
    nested = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                         "manifests": manifests}).encode()  # fmt: skip
    import hashlib

    digest = "sha256:" + hashlib.sha256(nested).hexdigest()
    (layout / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(nested)
    index["manifests"].append(
        {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest,
            "size": len(nested),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }
    )
    (layout / "index.json").write_text(json.dumps(index))
    registry.push(layout, "multi", "kaudit/multi", all_platforms=True)
    ref = f"{registry.host}/kaudit/multi:multi"
    amd64 = scan_json(ref, "--insecure-registry", registry.host, "--no-cache")
    arm64 = scan_json(ref, "--insecure-registry", registry.host, "--no-cache", "--platform", "linux/arm64")
    assert list(by_path(amd64)) == ["opt/lib/amd64.so"] and list(by_path(arm64)) == ["opt/lib/arm64.cubin"]
    assert amd64["image"]["index_digest"] == arm64["image"]["index_digest"]
    missing = kaudit("scan", "image", ref, "--insecure-registry", registry.host, "--platform", "linux/s390x")
    assert missing.returncode == 2 and "no image for platform linux/s390x" in missing.stderr
