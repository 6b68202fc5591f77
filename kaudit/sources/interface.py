"""The image-source seam: where an image's manifest, config and layer blobs come from.

A source resolves a reference to one platform image (:class:`ResolvedImage`) and hands out layer readers that
work in another process (:class:`LayerReader` is picklable), so layers can be walked in parallel. Every blob is
checked against its digest while it streams.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from kaudit.errors import Error

MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""Manifests, indexes and configs are small JSON documents; a larger one is refused."""


class SourceError(Error):
    """The image cannot be obtained: unknown image, wrong digest, refused credentials, unreadable archive."""


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise SourceError(f"platform {text!r} is not os/arch[/variant], e.g. linux/amd64")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, descriptor_platform: dict[str, Any]) -> bool:
        if descriptor_platform.get("os") != self.os or descriptor_platform.get("architecture") != self.architecture:
            return False
        return self.variant is None or descriptor_platform.get("variant") == self.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class LayerDescriptor:
    """One layer as the manifest lists it, with what the config says about it."""

    index: int
    digest: str
    """The compressed blob's digest (what the manifest names)."""
    media_type: str
    size: int
    diff_id: str
    """The uncompressed tar's digest (config ``rootfs.diff_ids``)."""
    created_by: str | None = None
    """The history entry (``created_by``) that produced the layer, when the config records it."""


@dataclass(frozen=True)
class ResolvedImage:
    """A reference resolved to one platform image."""

    reference: str
    manifest_digest: str
    platform: str
    config: dict[str, Any]
    layers: tuple[LayerDescriptor, ...]
    index_digest: str | None = None
    """The index or manifest list the platform image was picked from, if any."""
    repo_tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def env(self) -> dict[str, str]:
        """The image config's environment (``config.Env``)."""
        pairs = (self.config.get("config") or {}).get("Env") or []
        out: dict[str, str] = {}
        for pair in pairs:
            if isinstance(pair, str) and "=" in pair:
                key, _, value = pair.partition("=")
                out[key] = value
        return out


class LayerReader(ABC):
    """Opens one layer blob as a byte stream; picklable, so worker processes can open it themselves."""

    @abstractmethod
    def open(self) -> BinaryIO:
        """The compressed (or plain) blob, as stored."""


class ImageSource(ABC):
    """Resolves a reference and provides readers for its layers."""

    @abstractmethod
    def resolve(self, platform: Platform) -> ResolvedImage:
        """The platform image the reference names (an index is resolved with ``platform``)."""

    @abstractmethod
    def layer_reader(self, layer: LayerDescriptor) -> LayerReader:
        """A reader for one of the resolved image's layers."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the source holds (sessions, open archives)."""


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(expected: str, data: bytes, what: str) -> None:
    algorithm, _, _hex = expected.partition(":")
    if algorithm != "sha256":
        raise SourceError(f"{what}: unsupported digest algorithm {algorithm!r} (only sha256)")
    actual = sha256_digest(data)
    if actual != expected:
        raise SourceError(f"{what}: content digest {actual} does not match the expected {expected}")


def parse_json(data: bytes, what: str) -> dict[str, Any]:
    import json

    if len(data) > MAX_MANIFEST_BYTES:
        raise SourceError(f"{what} is {len(data)} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise SourceError(f"{what} is not a JSON object")
    return value


def pick_manifest(index: dict[str, Any], platform: Platform, what: str) -> dict[str, Any]:
    """The descriptor for ``platform`` in an OCI index / Docker manifest list (attestations skipped)."""
    candidates = []
    for descriptor in index.get("manifests") or []:
        if not isinstance(descriptor, dict):
            continue
        annotations = descriptor.get("annotations") or {}
        if annotations.get("vnd.docker.reference.type") == "attestation-manifest":
            continue
        candidates.append(descriptor)
        if platform.matches(descriptor.get("platform") or {}):
            return descriptor
    available = sorted(
        "/".join(filter(None, (p.get("os"), p.get("architecture"), p.get("variant"))))
        for p in (d.get("platform") or {} for d in candidates)
    )
    raise SourceError(f"{what} has no image for platform {platform}; it has: {', '.join(available) or 'none'}")


def image_from_manifest(
    reference: str,
    manifest_digest: str,
    manifest: dict[str, Any],
    config: dict[str, Any],
    platform: str,
    index_digest: str | None = None,
    repo_tags: tuple[str, ...] = (),
) -> ResolvedImage:
    """Join a manifest's layer list with the config's diff_ids and history."""
    layers_json = manifest.get("layers")
    if not isinstance(layers_json, list):
        raise SourceError(f"{reference}: the manifest lists no layers")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layers_json):
        raise SourceError(
            f"{reference}: the manifest has {len(layers_json)} layers but the config {len(diff_ids)} diff_ids"
        )
    history = [h for h in (config.get("history") or []) if isinstance(h, dict) and not h.get("empty_layer")]
    layers = []
    for index, (layer, diff_id) in enumerate(zip(layers_json, diff_ids, strict=True)):
        if not isinstance(layer, dict) or not isinstance(layer.get("digest"), str):
            raise SourceError(f"{reference}: layer {index} of the manifest has no digest")
        created_by = history[index].get("created_by") if index < len(history) else None
        layers.append(
            LayerDescriptor(
                index=index,
                digest=layer["digest"],
                media_type=str(layer.get("mediaType", "")),
                size=int(layer.get("size", 0)),
                diff_id=str(diff_id),
                created_by=created_by if isinstance(created_by, str) else None,
            )
        )
    return ResolvedImage(reference, manifest_digest, platform, config, tuple(layers), index_digest, repo_tags)
