"""Runtime kernel caches and first-use fetchers, cataloged over a merged filesystem.

One cataloger per kind of cache (Syft's one-cataloger-per-ecosystem): ``hub.py`` (Hugging Face Kernel Hub caches,
lock files, declared dependencies), ``triton_cache.py`` (Triton caches and their native launchers), ``torch_compile.py``
(Inductor and vLLM compile caches), ``jit.py`` (CUDA ComputeCache, FlashInfer, DeepGEMM, MIOpen), and
``first_use.py`` (software and settings that fetch or compile kernels when a pod starts). Each reads a
:class:`CacheView`, the same for an image and for a directory tree.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

from kaudit.inventory import CacheEntry, FirstUseSignal, GpuBinary, LayerRef
from kaudit.walk.merge import ImageView


@dataclass
class CacheView:
    """What the catalogers see: file paths, symlinks, the small files kept as text, and the GPU binaries."""

    files: set[str]
    symlinks: dict[str, str]
    texts: dict[str, str]
    binaries: dict[str, GpuBinary]
    env: dict[str, str] = field(default_factory=dict)
    resolve: Callable[[str], str] = lambda path: path
    layer_of: Callable[[str], LayerRef | None] = lambda path: None
    digest_of: Callable[[str], str | None] = lambda path: None
    """The sha256 (hex) of a file's content, where the walk hashed it; the path is resolved first."""

    def files_under(self, directory: str) -> list[str]:
        """File and symlink paths at or below ``directory``, sorted."""
        prefix = directory.rstrip("/") + "/"
        paths = self._paths
        out = []
        for path in paths[bisect.bisect_left(paths, prefix) :]:
            if not path.startswith(prefix):
                break
            out.append(path)
        return out

    @cached_property
    def _paths(self) -> list[str]:
        """Every file and symlink path, sorted once: entries look up their directory's range by bisection."""
        return sorted(self.files | set(self.symlinks))

    @cached_property
    def _embedded(self) -> dict[str, list[GpuBinary]]:
        """Device code found inside a file (``file!/inner``), by that file's path."""
        inside: dict[str, list[GpuBinary]] = {}
        for path, binary in self.binaries.items():
            if "!/" in path:
                inside.setdefault(path.split("!/", 1)[0], []).append(binary)
        return inside

    def binaries_under(self, directory: str) -> list[GpuBinary]:
        """GPU binaries at or below ``directory``: its files (followed through the symlinks inside it, as hub
        snapshots point to blobs) and the device code embedded in them (pickles, compile artifacts)."""
        found: dict[str, GpuBinary] = {}
        for path in self.files_under(directory):
            binary = self.binaries.get(self.resolve(path)) or self.binaries.get(path)
            if binary is not None:
                found[binary.path] = binary
            for inner in self.embedded_in(path):
                found[inner.path] = inner
        return list(found.values())

    def embedded_in(self, path: str) -> list[GpuBinary]:
        """Device code found inside the file ``path`` (reported as ``path!/inner``)."""
        return self._embedded.get(path, [])

    def entry_dirs(self, pattern: re.Pattern[str]) -> Iterator[tuple[str, re.Match[str], str]]:
        """``(directory, match, first file)`` for each distinct cache-entry directory ``pattern`` matches (the
        pattern matches a file path up to and including the entry directory's trailing ``/``)."""
        seen: set[str] = set()
        for path in sorted(self.files):
            match = pattern.match(path)
            if match is not None and match.group(0).rstrip("/") not in seen:
                seen.add(match.group(0).rstrip("/"))
                yield match.group(0).rstrip("/"), match, path


def archs_of(binaries: Iterable[GpuBinary]) -> tuple[str, ...]:
    from kaudit.scan import arch_sort_key

    archs: set[str] = set()
    for binary in binaries:
        archs.update(binary.loadable.sass_archs, binary.loadable.ptx_archs, binary.loadable.gfx_targets)
    return tuple(sorted(archs, key=arch_sort_key))


Cataloger = Callable[[CacheView], Iterable[CacheEntry | FirstUseSignal]]


def catalogers() -> list[Cataloger]:
    from kaudit.caches import first_use, hub, jit, torch_compile, triton_cache

    return [hub.catalog, triton_cache.catalog, torch_compile.catalog, jit.catalog, first_use.catalog]


def catalog_view(view: CacheView) -> tuple[tuple[CacheEntry, ...], tuple[FirstUseSignal, ...]]:
    """Every cache entry and first-use signal in ``view``."""
    entries: list[CacheEntry] = []
    signals: list[FirstUseSignal] = []
    for cataloger in catalogers():
        for item in cataloger(view):
            if isinstance(item, CacheEntry):
                entries.append(item)
            else:
                signals.append(item)
    entries.sort(key=lambda e: (e.type, e.path))
    return tuple(entries), tuple(signals)


def catalog(
    image_view: ImageView, binaries: list[GpuBinary], env: dict[str, str]
) -> tuple[tuple[CacheEntry, ...], tuple[FirstUseSignal, ...]]:
    """Catalog an image's (or a root filesystem's) merged filesystem."""
    is_image = bool(image_view.layers and image_view.layers[0].diff_id)

    def layer_of(path: str) -> LayerRef | None:
        entry = image_view.files.get(path) or image_view.symlinks.get(path)
        return image_view.layers[entry[0]] if entry is not None and is_image else None

    def digest_of(path: str) -> str | None:
        entry = image_view.files.get(image_view.resolve(path))
        return entry[1].sha256 if entry is not None else None

    view = CacheView(
        files=set(image_view.files),
        symlinks={path: target for path, (_layer, target) in image_view.symlinks.items()},
        texts={path: text for path, (_layer, text) in image_view.texts.items()},
        binaries={b.path: b for b in binaries if b.status.value == "present"},
        env=env,
        resolve=image_view.resolve,
        layer_of=layer_of,
        digest_of=digest_of,
    )
    return catalog_view(view)
