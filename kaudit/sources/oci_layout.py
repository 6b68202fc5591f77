"""OCI image layouts (``oci:DIR[:TAG]``) and ``docker save`` archives (``docker-archive:FILE``).

``docker save`` writes an OCI layout inside a tar since Engine 25 (plus a legacy ``manifest.json``); older
archives have only ``manifest.json`` with ``<id>/layer.tar`` members. Both are read in place.
"""

from __future__ import annotations

import os
import tarfile
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from kaudit.sources.interface import (
    INDEX_TYPES,
    MAX_MANIFEST_BYTES,
    ImageSource,
    LayerDescriptor,
    LayerReader,
    Platform,
    ResolvedImage,
    SourceError,
    check_digest,
    image_from_manifest,
    parse_json,
    pick_manifest,
    sha256_digest,
)

REF_NAME = "org.opencontainers.image.ref.name"


def _blob_path(digest: str) -> str:
    algorithm, _, hex_digest = digest.partition(":")
    if algorithm != "sha256" or len(hex_digest) != 64 or not all(c in "0123456789abcdef" for c in hex_digest):
        raise SourceError(f"malformed blob digest {digest!r}")
    return f"blobs/sha256/{hex_digest}"


class _LayoutReader:
    """Resolves manifests in an OCI layout, whatever holds its files (a directory or a tar)."""

    def __init__(self, read: Callable[[str], bytes], label: str) -> None:
        self._read = read
        self._label = label

    def blob(self, digest: str, what: str) -> bytes:
        data = self._read(_blob_path(digest))
        check_digest(digest, data, f"{self._label}: {what}")
        return data

    def resolve(self, tag: str | None, platform: Platform) -> ResolvedImage:
        index = parse_json(self._read("index.json"), f"{self._label}: index.json")
        manifests = [m for m in index.get("manifests") or [] if isinstance(m, dict)]
        if tag is not None:
            manifests = [m for m in manifests if (m.get("annotations") or {}).get(REF_NAME) == tag]
            if not manifests:
                raise SourceError(f"{self._label}: no image tagged {tag!r} in index.json")
        if not manifests:
            raise SourceError(f"{self._label}: index.json lists no images")
        descriptor = manifests[0]
        if len(manifests) > 1:
            descriptor = pick_manifest({"manifests": manifests}, platform, f"{self._label}: index.json")
        index_digest = None
        if descriptor.get("mediaType") in INDEX_TYPES:
            index_digest = str(descriptor["digest"])
            nested = parse_json(self.blob(index_digest, "image index"), f"{self._label}: image index")
            descriptor = pick_manifest(nested, platform, f"{self._label}: image index")
        digest = str(descriptor.get("digest", ""))
        manifest = parse_json(self.blob(digest, "manifest"), f"{self._label}: manifest")
        config_digest = str((manifest.get("config") or {}).get("digest", ""))
        config = parse_json(self.blob(config_digest, "config"), f"{self._label}: config")
        label = self._label if tag is None else f"{self._label}:{tag}"
        return image_from_manifest(label, digest, manifest, config, _platform_of(config, platform), index_digest)


def _platform_of(config: dict[str, Any], fallback: Platform) -> str:
    os_name, arch = config.get("os"), config.get("architecture")
    if isinstance(os_name, str) and isinstance(arch, str):
        variant = config.get("variant")
        return "/".join(p for p in (os_name, arch, variant if isinstance(variant, str) else None) if p)
    return str(fallback)


@dataclass(frozen=True)
class FileLayerReader(LayerReader):
    """A layer blob that is a plain file."""

    path: str

    def open(self) -> BinaryIO:
        try:
            return open(self.path, "rb")
        except OSError as exc:
            raise SourceError(f"cannot read layer blob {self.path}: {exc.strerror}") from exc


class OciLayoutSource(ImageSource):
    """``oci:DIR[:TAG]``."""

    def __init__(self, directory: str, tag: str | None) -> None:
        if not os.path.isfile(os.path.join(directory, "oci-layout")):
            raise SourceError(f"{directory} is not an OCI image layout (no oci-layout file)")
        self._directory = directory
        self._tag = tag
        self._layout = _LayoutReader(self._read, f"oci:{directory}")

    def _read(self, relative: str) -> bytes:
        path = os.path.join(self._directory, relative)
        try:
            if os.path.getsize(path) > MAX_MANIFEST_BYTES:
                raise SourceError(f"{path} is larger than a manifest, index or config can be")
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror}") from exc

    def resolve(self, platform: Platform) -> ResolvedImage:
        return self._layout.resolve(self._tag, platform)

    def layer_reader(self, layer: LayerDescriptor) -> LayerReader:
        return FileLayerReader(os.path.join(self._directory, _blob_path(layer.digest)))


@dataclass(frozen=True)
class TarMemberLayerReader(LayerReader):
    """A layer blob stored as a member of a tar archive (``docker save`` output)."""

    archive: str
    member: str

    def open(self) -> BinaryIO:
        try:
            archive = tarfile.open(self.archive, "r:")  # noqa: SIM115 - closed with the member stream
            stream = archive.extractfile(self.member)
        except (OSError, tarfile.TarError, KeyError) as exc:
            raise SourceError(f"cannot read {self.member} from {self.archive}: {exc}") from exc
        if stream is None:
            raise SourceError(f"{self.member} in {self.archive} is not a regular file")
        return typing.cast(BinaryIO, stream)


class DockerArchiveSource(ImageSource):
    """``docker-archive:FILE`` — ``docker save`` output, OCI-layout or legacy."""

    def __init__(self, path: str) -> None:
        self._path = path
        try:
            self._tar = tarfile.open(path, "r:")  # noqa: SIM115 - closed by close()
            self._members = {m.name.removeprefix("./"): m for m in self._tar.getmembers()}
        except (OSError, tarfile.TarError) as exc:
            raise SourceError(f"{path} is not a readable tar archive: {exc}") from exc
        self._label = f"docker-archive:{path}"
        self._legacy_layers: dict[str, str] = {}

    def _read(self, name: str) -> bytes:
        member = self._members.get(name)
        if member is None or not member.isfile():
            raise SourceError(f"{self._label}: no file {name} in the archive")
        if member.size > MAX_MANIFEST_BYTES:
            raise SourceError(f"{self._label}: {name} is larger than a manifest, index or config can be")
        stream = self._tar.extractfile(member)
        assert stream is not None
        return stream.read()

    def resolve(self, platform: Platform) -> ResolvedImage:
        if "index.json" in self._members and "oci-layout" in self._members:
            return _LayoutReader(self._read, self._label).resolve(None, platform)
        return self._resolve_legacy(platform)

    def _resolve_legacy(self, platform: Platform) -> ResolvedImage:
        import json

        try:
            entries = json.loads(self._read("manifest.json"))
        except ValueError as exc:
            raise SourceError(f"{self._label}: manifest.json is not valid JSON: {exc}") from exc
        if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
            raise SourceError(f"{self._label}: manifest.json lists no image")
        entry = entries[0]
        config_bytes = self._read(str(entry.get("Config", "")))
        config = parse_json(config_bytes, f"{self._label}: config")
        layer_paths = [str(p) for p in entry.get("Layers") or []]
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        layers = []
        for path, diff_id in zip(layer_paths, diff_ids, strict=False):
            self._legacy_layers[str(diff_id)] = path
            member = self._members.get(path)
            layers.append({"digest": diff_id, "mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                           "size": member.size if member else 0})  # fmt: skip
        manifest = {"layers": layers}
        tags = tuple(str(t) for t in entry.get("RepoTags") or [])
        # a legacy archive has no registry manifest: the config digest identifies the image
        return image_from_manifest(
            self._label, sha256_digest(config_bytes), manifest, config, _platform_of(config, platform), None, tags
        )

    def layer_reader(self, layer: LayerDescriptor) -> LayerReader:
        member = self._legacy_layers.get(layer.digest) or _blob_path(layer.digest)
        return TarMemberLayerReader(self._path, member)

    def close(self) -> None:
        self._tar.close()
