"""Hostile and broken images: one clear line and exit code 2, or a per-layer finding while the rest is scanned."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tests.conftest import fixture_path
from tests.imagebuild import Layer, build_layout
from tests.integration.test_image_scan import kaudit, scan_json
from tests.registry import Registry


def _gpu_layer(name: str = "opt/lib/libgood.so") -> Layer:
    layer = Layer(created_by="COPY good")
    layer.files[name] = fixture_path("libk_plain.so").read_bytes()
    return layer


def test_unknown_image_and_unknown_digest(registry: Registry) -> None:
    missing = kaudit("scan", "image", f"{registry.host}/kaudit/nothing:v1", "--insecure-registry", registry.host)
    assert missing.returncode == 2 and "no such image" in missing.stderr and "Traceback" not in missing.stderr
    digest = "sha256:" + "0" * 64
    by_digest = kaudit(
        "scan", "image", f"{registry.host}/kaudit/nothing@{digest}", "--insecure-registry", registry.host
    )
    assert by_digest.returncode == 2 and "no such image" in by_digest.stderr
    malformed = kaudit("scan", "image", f"{registry.host}/kaudit/x@sha256:abc", "--insecure-registry", registry.host)
    assert malformed.returncode == 2 and "not sha256:<64 hex digits>" in malformed.stderr
    unreachable = kaudit("scan", "image", "127.0.0.1:9/kaudit/x:v1", "--insecure-registry", "127.0.0.1:9")
    assert unreachable.returncode == 2 and "cannot connect" in unreachable.stderr


def test_bad_references_and_layouts(tmp_path: Path) -> None:
    for args, message in (
        (["oci:" + str(tmp_path)], "not an OCI image layout"),
        (["docker-archive:" + str(tmp_path / "none.tar")], "not a readable tar archive"),
        (["dir:" + str(tmp_path / "none")], "is not a directory"),
        (["docker:busybox"], "not supported"),
        (["oci:" + str(tmp_path), "--platform", "linux"], "is not os/arch"),
    ):
        result = kaudit("scan", "image", *args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, args
    layout = tmp_path / "layout"
    build_layout(layout, [_gpu_layer()], tag="v1")
    result = kaudit("scan", "image", f"oci:{layout}:nope")
    assert result.returncode == 2 and "no image tagged 'nope'" in result.stderr
    (layout / "index.json").write_text("{not json")
    result = kaudit("scan", "image", f"oci:{layout}:v1")
    assert result.returncode == 2 and "index.json is not valid JSON" in result.stderr


def test_truncated_layer_is_a_finding_and_the_rest_is_scanned(tmp_path: Path) -> None:
    layout = tmp_path / "oci"
    image = build_layout(layout, [_gpu_layer(), _gpu_layer("opt/lib/libsecond.so")], tag="v1")
    # republish layer 1 truncated, with digests that match its broken bytes: a broken image, not a tampered one
    import gzip
    import hashlib

    blob = layout / "blobs" / "sha256" / image.layer_digests[1].split(":")[1]
    full = gzip.decompress(blob.read_bytes())
    tar = full[: len(full) // 2]  # cut inside the library
    broken = gzip.compress(tar, mtime=0)
    digest = "sha256:" + hashlib.sha256(broken).hexdigest()
    (layout / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(broken)
    new_diff = "sha256:" + hashlib.sha256(tar).hexdigest()
    _rewrite(layout, image.layer_digests[1], digest, len(broken), image.diff_ids[1], new_diff)
    document = scan_json(f"oci:{layout}:v1", "--no-cache")
    assert [b["path"] for b in document["binaries"]] == ["opt/lib/libgood.so"]
    (finding,) = document["findings"]
    assert finding["kind"] == "malformed" and "truncated or corrupt" in finding["reason"]
    assert finding["location"].startswith("layer 1 ")


def _rewrite(layout: Path, old: str, new: str, size: int, old_diff: str, new_diff: str) -> None:
    """Point the image at a replacement layer blob (manifest, config and index rewritten, digests recomputed)."""
    import hashlib

    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    descriptor = index["manifests"][0]
    manifest = json.loads((blobs / descriptor["digest"].split(":")[1]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_bytes())
    config["rootfs"]["diff_ids"] = [new_diff if d == old_diff else d for d in config["rootfs"]["diff_ids"]]
    config_bytes = json.dumps(config).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    (blobs / config_digest.split(":")[1]).write_bytes(config_bytes)
    manifest["config"] = {**manifest["config"], "digest": config_digest, "size": len(config_bytes)}
    manifest["layers"] = [dict(layer, digest=new, size=size) if layer["digest"] == old else layer
                          for layer in manifest["layers"]]  # fmt: skip
    manifest_bytes = json.dumps(manifest).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    (blobs / manifest_digest.split(":")[1]).write_bytes(manifest_bytes)
    descriptor.update(digest=manifest_digest, size=len(manifest_bytes))
    (layout / "index.json").write_text(json.dumps(index))


def test_tar_bomb_is_stopped(tmp_path: Path) -> None:
    bomb = Layer(created_by="RUN dd if=/dev/zero")
    bomb.files["zeros.bin"] = b"\0" * (64 * 1024 * 1024)  # gzip makes this ~64 KiB
    layout = tmp_path / "oci"
    build_layout(layout, [_gpu_layer(), bomb], tag="v1")
    document = scan_json(f"oci:{layout}:v1", "--no-cache", "--max-layer-size", str(8 * 1024 * 1024))
    assert [b["path"] for b in document["binaries"]] == ["opt/lib/libgood.so"]
    assert any(f["kind"] == "limit-exceeded" and "tar bomb" in f["reason"] for f in document["findings"])


def test_hostile_paths_and_links(tmp_path: Path) -> None:
    layer = _gpu_layer()
    escape = tarfile.TarInfo("../../etc/evil.so")
    data = fixture_path("kern_sm_80.cubin").read_bytes()
    escape.size = len(data)
    layer.raw_members.append((escape, data))
    absolute = tarfile.TarInfo("/opt/abs/kern.cubin")
    absolute.size = len(data)
    layer.raw_members.append((absolute, data))
    layer.symlinks["opt/lib/escape"] = "../../../../../../etc/shadow"
    link = tarfile.TarInfo("opt/lib/hard")
    link.type, link.linkname = tarfile.LNKTYPE, "../../../etc/passwd"
    layer.raw_members.append((link, None))
    fifo = tarfile.TarInfo("opt/lib/fifo")
    fifo.type = tarfile.FIFOTYPE
    layer.raw_members.append((fifo, None))
    layout = tmp_path / "oci"
    build_layout(layout, [layer], tag="v1")
    document = scan_json(f"oci:{layout}:v1", "--no-cache")
    paths = sorted(b["path"] for b in document["binaries"])
    assert paths == ["opt/abs/kern.cubin", "opt/lib/libgood.so"]  # absolute names are taken inside the root
    reasons = {f["path"]: f["reason"] for f in document["findings"]}
    assert "climbs out of the image root" in reasons["../../etc/evil.so"]
    assert "climbs out of the image root" in reasons["opt/lib/hard"]


def test_progress_bars_per_layer(tmp_path: Path) -> None:
    layout = tmp_path / "oci"
    build_layout(layout, [_gpu_layer(), _gpu_layer("opt/lib/b.so")], tag="v1")
    shown = kaudit("scan", "image", f"oci:{layout}:v1", "--no-cache", "--progress", "always", "-o", "json=/dev/null")
    assert shown.returncode == 0 and "layer 0" in shown.stderr and "layer 1" in shown.stderr
    hidden = kaudit("scan", "image", f"oci:{layout}:v1", "--no-cache", "-o", "json=/dev/null")
    assert hidden.stderr == ""


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_layer_compressions(tmp_path: Path, compression: str) -> None:
    layer = _gpu_layer()
    layer.compression = compression
    layout = tmp_path / "oci"
    build_layout(layout, [layer], tag="v1")
    document = scan_json(f"oci:{layout}:v1", "--no-cache")
    assert [b["path"] for b in document["binaries"]] == ["opt/lib/libgood.so"]
    assert document["findings"] == []


def test_registry_serving_a_damaged_blob_is_refused(registry: Registry, tmp_path: Path) -> None:
    layer = _gpu_layer("opt/lib/unique-for-damage-test.so")
    layer.files["opt/lib/salt"] = tmp_path.name.encode()  # a blob no other test shares
    image = build_layout(tmp_path / "oci", [layer], tag="v1")
    registry.push(image.layout, "v1", "kaudit/damaged")
    hex_digest = image.layer_digests[0].split(":")[1]
    stored = registry.directory / "data/docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    result = kaudit("scan", "image", f"{registry.host}/kaudit/damaged:v1", "--insecure-registry", registry.host,
                    "--no-cache")  # fmt: skip
    assert result.returncode == 2 and "does not match" in result.stderr and "Traceback" not in result.stderr
