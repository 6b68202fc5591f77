"""Which files, besides device code, an image walk must read: package databases and kernel-cache metadata.

Both attribution (:mod:`kaudit.owners`) and the runtime-cache catalogers (:mod:`kaudit.caches`) work on the
merged filesystem after all layers are walked, from the small files collected here.
"""

from __future__ import annotations

import posixpath
import re
from enum import Enum


class Interest(Enum):
    TEXT = "text"
    """Kept as text (package databases, JSON metadata, lock files, refs)."""
    RPMDB = "rpmdb"
    """The RPM database (SQLite); parsed where it is read."""
    MIOPEN = "miopen"
    """An MIOpen kernel database (SQLite); its index is kept as text."""
    PICKLE = "pickle"
    """A pickle that may hold device code (Inductor FX graph, AOT autograd entries); walked, never unpickled."""
    ARTIFACT = "artifact"
    """A compile artifact container (vLLM, ``standalone_compile``); searched for device ELF images."""
    COMPUTECACHE = "computecache"
    """A CUDA driver JIT cache entry: a key (target, PTX) and a cubin."""


_TEXT_PATTERNS = [
    re.compile(p)
    for p in (
        r"(^|/)var/lib/dpkg/status$",
        r"(^|/)var/lib/dpkg/status\.d/[^/]+$",  # distroless images keep one stanza file per package
        r"(^|/)var/lib/dpkg/info/[^/]+\.list$",
        r"\.dist-info/(RECORD|METADATA|kernels\.lock)$",
        r"\.egg-info/(installed-files\.txt|PKG-INFO)$",
        r"(^|/)conda-meta/[^/]+\.json$",
        # Hugging Face hub caches: refs reveal floating pulls; metadata, lock files and signatures
        r"(^|/)(kernels|models)--[^/]+--[^/]+/refs/[^/]+$",
        # hub blobs named by a git SHA-1 are the repository's text files (metadata.json, Python); LFS files
        # (.so) are named by their sha256
        r"(^|/)(kernels|models)--[^/]+--[^/]+/blobs/[0-9a-f]{40}$",
        r"(^|/)(kernels|models)--[^/]+--[^/]+/snapshots/[^/]+/(build/[^/]+/)?metadata\.json(\.sigstore)?$",
        r"(^|/)kernels\.lock$",
        r"(^|/)(etc|usr/lib)/os-release$",
        r"(^|/)torch_compile_cache/.+/(cache_key_factors\.json|vllm_compile_cache\.py)$",
        r"(^|/)pyproject\.toml$",
        # Triton, Inductor, vLLM, FlashInfer, DeepGEMM caches: their JSON metadata
        r"\.json$",
    )
]
_JSON_CONTEXTS = re.compile(
    r"(^|/)(\.triton|triton|torchinductor_[^/]+|inductor|torch_compile_cache|flashinfer|deep_?gemm|"
    r"\.cache/[^/]+|cache|conda-meta|kernels--[^/]+|models--[^/]+)(/|$)"
)
_RPMDB = re.compile(r"(^|/)(var/lib/rpm|usr/lib/sysimage/rpm)/rpmdb\.sqlite$")
_MIOPEN = re.compile(r"(^|/)[^/]*miopen[^/]*/.*\.u?kdb$", re.IGNORECASE)
_PICKLE = re.compile(r"(^|/)(torchinductor_[^/]+|inductor_cache|inductor)/(fxgraph|aotautograd)/.+")
_ARTIFACT = re.compile(r"(^|/)torch_compile_cache/.+/artifact_compile_range_[^/]+$|(^|/)torch_aot_compile/.+/model$")
_COMPUTECACHE = re.compile(r"(^|/)ComputeCache/[0-9a-fA-F]/[0-9a-fA-F]/[0-9a-fA-F]+$")


def classify(path: str) -> Interest | None:
    """What an image walk should keep of ``path`` (``None``: list it only)."""
    if _RPMDB.search(path):
        return Interest.RPMDB
    if _MIOPEN.search(path):
        return Interest.MIOPEN
    if _COMPUTECACHE.search(path):
        return Interest.COMPUTECACHE
    if _ARTIFACT.search(path):
        return Interest.ARTIFACT
    if _PICKLE.search(path):
        return Interest.PICKLE
    for pattern in _TEXT_PATTERNS[:-1]:
        if pattern.search(path):
            return Interest.TEXT
    if path.endswith(".json") and _JSON_CONTEXTS.search(posixpath.dirname(path)):
        return Interest.TEXT
    return None


_ARTIFACT_HEADER = b"CacheCompiledArtifact"


def classify_content(path: str, head: bytes) -> Interest | None:
    """Interest decided by content where the path says nothing: ``standalone_compile(...).save(format="binary")``
    artifacts (``crc32, u64 length, "CacheCompiledArtifact"``) can have any name."""
    if head[12 : 12 + len(_ARTIFACT_HEADER)] == _ARTIFACT_HEADER:
        return Interest.ARTIFACT
    return None
