"""Build test images without a container engine: OCI image layouts and ``docker save`` archives, from Python.

Layers are real tars (gzip or zstd), blobs are content-addressed, configs carry diff_ids and history, so a
registry (through skopeo) and kaudit see exactly what a build tool would produce.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}


@dataclass
class Layer:
    """Entries of one layer; ``created_by`` becomes the config history entry."""

    files: dict[str, bytes] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)
    hardlinks: dict[str, str] = field(default_factory=dict)
    whiteouts: list[str] = field(default_factory=list)
    opaque_dirs: list[str] = field(default_factory=list)
    created_by: str = "COPY . /"
    compression: str = "gzip"
    raw_members: list[tuple[tarfile.TarInfo, bytes | None]] = field(default_factory=list)
    """Hand-made members (hostile names, odd types) appended as they are."""

    def add_tree(self, root: Path, prefix: str = "") -> Layer:
        """Add every file and symlink under ``root`` at ``prefix/<relative path>``."""
        for path in sorted(root.rglob("*")):
            name = f"{prefix.rstrip('/')}/{path.relative_to(root).as_posix()}".lstrip("/")
            if path.is_symlink():
                self.symlinks[name] = str(path.readlink())
            elif path.is_file():
                self.files[name] = path.read_bytes()
        return self

    def tar(self) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
            directories: set[str] = set()
            for name in sorted([*self.files, *self.symlinks, *self.hardlinks, *self.whiteouts, *self.opaque_dirs]):
                parts = name.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    directories.add("/".join(parts[:i]))
            for directory in sorted(directories | set(self.opaque_dirs)):
                info = tarfile.TarInfo(directory)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                archive.addfile(info)
            for directory in self.opaque_dirs:
                _add(archive, f"{directory}/.wh..wh..opq", b"")
            for name in self.whiteouts:
                parent, _, base = name.rpartition("/")
                _add(archive, f"{parent}/.wh.{base}".lstrip("/"), b"")
            for name, data in sorted(self.files.items()):
                _add(archive, name, data)
            for name, target in sorted(self.symlinks.items()):
                info = tarfile.TarInfo(name)
                info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, 0
                archive.addfile(info)
            for name, target in sorted(self.hardlinks.items()):
                info = tarfile.TarInfo(name)
                info.type, info.linkname, info.mode, info.mtime = tarfile.LNKTYPE, target, 0o755, 0
                archive.addfile(info)
            for info, data in self.raw_members:
                archive.addfile(info, io.BytesIO(data) if data is not None else None)
        return buffer.getvalue()


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o755, 0
    archive.addfile(info, io.BytesIO(data))


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def compress(data: bytes, method: str) -> bytes:
    if method == "gzip":
        return gzip.compress(data, mtime=0)
    if method == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


@dataclass
class BuiltImage:
    layout: Path
    manifest_digest: str
    config_digest: str
    layer_digests: list[str]
    diff_ids: list[str]
    tag: str


def build_layout(
    layout: Path,
    layers: list[Layer],
    *,
    tag: str = "v1",
    env: dict[str, str] | None = None,
    architecture: str = "amd64",
) -> BuiltImage:
    """Write an OCI image layout holding one image with ``layers`` (bottom first), tagged ``tag``."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        digest = _digest(data)
        (blobs / digest.split(":")[1]).write_bytes(data)
        return digest

    descriptors, diff_ids, history = [], [], []
    for layer in layers:
        tar = layer.tar()
        diff_ids.append(_digest(tar))
        blob = compress(tar, layer.compression)
        descriptors.append({"mediaType": LAYER_TYPES[layer.compression], "digest": put(blob), "size": len(blob)})
        history.append({"created": "1970-01-01T00:00:00Z", "created_by": layer.created_by})
    config = {
        "architecture": architecture,
        "os": "linux",
        "config": {"Env": [f"{k}={v}" for k, v in (env or {}).items()]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = put(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": descriptors,
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = put(manifest_bytes)
    index_path = layout / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"schemaVersion": 2, "manifests": []}
    index["manifests"] = [m for m in index["manifests"] if m.get("annotations", {}).get(
        "org.opencontainers.image.ref.name") != tag]  # fmt: skip
    index["manifests"].append({
        "mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest_bytes),
        "platform": {"os": "linux", "architecture": architecture},
        "annotations": {"org.opencontainers.image.ref.name": tag},
    })  # fmt: skip
    index_path.write_text(json.dumps(index, sort_keys=True))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return BuiltImage(layout, manifest_digest, config_digest, [d["digest"] for d in descriptors], diff_ids, tag)


def docker_archive(image: BuiltImage, path: Path, *, legacy: bool = False) -> Path:
    """A ``docker save`` tar of ``image``: an OCI layout plus manifest.json, or (legacy) ``<id>/layer.tar`` members."""
    blobs = image.layout / "blobs" / "sha256"
    manifest = json.loads((blobs / image.manifest_digest.split(":")[1]).read_bytes())
    with tarfile.open(path, "w") as archive:

        def add(name: str, data: bytes) -> None:
            _add(archive, name, data)

        config_name = f"blobs/sha256/{image.config_digest.split(':')[1]}"
        if legacy:
            config_name = f"{image.config_digest.split(':')[1]}.json"
            add(config_name, (blobs / image.config_digest.split(":")[1]).read_bytes())
            names = []
            for index, layer in enumerate(manifest["layers"]):
                blob = (blobs / layer["digest"].split(":")[1]).read_bytes()
                tar = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else zstandard.ZstdDecompressor().decompressobj(
                ).decompress(blob) if blob[:4] == b"\x28\xb5\x2f\xfd" else blob  # fmt: skip
                names.append(f"layer{index}/layer.tar")
                add(names[-1], tar)
            add("manifest.json", json.dumps([{"Config": config_name, "RepoTags": ["kaudit/test:v1"],
                                              "Layers": names}]).encode())  # fmt: skip
            return path
        for blob in sorted(blobs.iterdir()):
            add(f"blobs/sha256/{blob.name}", blob.read_bytes())
        index = {"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": image.manifest_digest,
                 "size": (blobs / image.manifest_digest.split(":")[1]).stat().st_size}]}  # fmt: skip
        add("index.json", json.dumps(index).encode())
        add("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        layers = [f"blobs/sha256/{layer['digest'].split(':')[1]}" for layer in manifest["layers"]]
        add("manifest.json", json.dumps([{"Config": config_name, "RepoTags": ["kaudit/test:v1"],
                                          "Layers": layers}]).encode())  # fmt: skip
    return path
