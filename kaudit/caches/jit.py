"""Driver and library JIT caches: CUDA ComputeCache, FlashInfer, DeepGEMM, MIOpen kernel databases.

* CUDA ComputeCache (``~/.nv/ComputeCache``, ``CUDA_CACHE_PATH``): the driver's cubins for PTX it JIT-compiled; an
  entry records its target (``sm_90``) and PTX, parsed by :func:`kaudit.walk.embedded.computecache_entry`.
* FlashInfer: ``<cache>/<version>/<archs>/cached_ops/<module>/<module>.so`` (host libraries with fatbins) and
  ``<cache>/cubins/`` (cubins downloaded at first use).
* DeepGEMM: ``<DG_JIT_CACHE_DIR or ~/.deep_gemm>/cache/kernel.<name>.<hash>/kernel.cubin``.
* MIOpen: ``<gfx>_<CUs>.ukdb`` user and ``*.kdb`` system kernel databases (SQLite ``kern_db``).
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterator
from typing import Any

from kaudit.caches import CacheView, archs_of
from kaudit.inventory import CacheEntry, FirstUseSignal

_FLASHINFER_OPS = re.compile(
    r"^(?:.*/)?flashinfer/(?P<version>[^/]+)/(?P<archs>[0-9a-z_]+)/cached_ops/(?P<module>[^/]+)/"
)
_FLASHINFER_CUBINS = re.compile(r"^(?:.*/)?flashinfer/cubins/")
_DEEPGEMM = re.compile(r"^(?:.*/)?cache/kernel\.(?P<name>[^/]+)\.(?P<hash>[0-9a-f]{16,})/")
_MIOPEN_FILE = re.compile(r"(?P<arch>gfx[0-9a-z]+)(?:_(?P<cus>\d+))?\.u?kdb$")


def catalog(view: CacheView) -> Iterator[CacheEntry | FirstUseSignal]:
    yield from _computecache(view)
    yield from _flashinfer(view)
    yield from _deepgemm(view)
    yield from _miopen(view)


def _summary(text: str, key: str) -> Any:
    """The summary kaudit stored for a binary cache file (``{key: ...}``), or ``None`` for any other text —
    an image's own JSON can look alike, so nothing is assumed about it."""
    if f'"{key}"' not in text[:40]:
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document.get(key) if isinstance(document, dict) else None


def _computecache(view: CacheView) -> Iterator[CacheEntry]:
    for path, text in sorted(view.texts.items()):
        facts = _summary(text, "computecache")
        if not isinstance(facts, dict) or "ComputeCache/" not in path:
            continue
        binaries = view.embedded_in(path)
        archs = archs_of(binaries) or ((facts["target"],) if "target" in facts else ())
        details = tuple((k, str(v)) for k, v in sorted(facts.items()))
        key = path.split("ComputeCache/", 1)[-1]
        yield CacheEntry("cuda-computecache", path, key, archs, tuple(b.path for b in binaries), details,
                         view.layer_of(path),
                         ("driver JIT output of PTX: the image's code had no SASS for this GPU",))  # fmt: skip


def _flashinfer(view: CacheView) -> Iterator[CacheEntry]:
    for directory, match, path in view.entry_dirs(_FLASHINFER_OPS):
        binaries = view.binaries_under(directory)
        archs = [f"sm_{a}" for a in match.group("archs").split("_") if a]
        yield CacheEntry("flashinfer-jit", directory, match.group("module"), tuple(archs) or archs_of(binaries),
                         tuple(b.path for b in binaries),
                         (("flashinfer_version", match.group("version")), ("module", match.group("module"))),
                         view.layer_of(path))  # fmt: skip
    for directory, _match, path in view.entry_dirs(_FLASHINFER_CUBINS):
        binaries = view.binaries_under(directory)
        yield CacheEntry("flashinfer-cubins", directory, "cubins", archs_of(binaries),
                         tuple(b.path for b in binaries), (), view.layer_of(path),
                         ("cubins FlashInfer downloads at first use",))  # fmt: skip


def _deepgemm(view: CacheView) -> Iterator[CacheEntry]:
    for directory, match, path in view.entry_dirs(_DEEPGEMM):
        binaries = view.binaries_under(directory)
        yield CacheEntry("deepgemm-jit", directory, match.group("hash"), archs_of(binaries),
                         tuple(b.path for b in binaries), (("kernel", match.group("name")),),
                         view.layer_of(path))  # fmt: skip


def _miopen(view: CacheView) -> Iterator[CacheEntry]:
    for path, text in sorted(view.texts.items()):
        kernels = _summary(text, "miopen_kernels")
        if not isinstance(kernels, list):
            continue
        match = _MIOPEN_FILE.search(path)
        archs = (match.group("arch"),) if match else ()
        details = [("kernels", str(len(kernels)))]
        if match and match.group("cus"):
            details.append(("compute_units", match.group("cus")))
        yield CacheEntry("miopen", path, posixpath.basename(path), archs, (), tuple(details), view.layer_of(path),
                         ("kernel blobs are stored compressed inside the database; counted, not decoded",))  # fmt: skip
