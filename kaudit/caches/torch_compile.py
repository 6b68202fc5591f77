"""PyTorch Inductor caches (``torchinductor_<user>/``) and vLLM's ``torch_compile_cache``.

Inductor keeps generated Python (``<xx>/c<hash>.py``, executed on load), FX-graph and AOT-autograd pickles
(``fxgraph/``, ``aotautograd/``) that embed cubins, and a Triton cache under ``triton/``; vLLM keeps
``torch_compile_cache/<hash>/rank_<r>_<dp>/<prefix>/`` with ``cache_key_factors.json`` and compile artifacts. The
device code inside pickles and artifacts is found by :mod:`kaudit.walk.embedded` without unpickling.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from kaudit.caches import CacheView, archs_of
from kaudit.inventory import CacheEntry, FirstUseSignal, GpuBinary

_INDUCTOR_ENTRY = re.compile(
    r"^(?P<root>(?:.*/)?(?:torchinductor_[^/]+|inductor_cache|inductor))/(?P<kind>fxgraph|aotautograd)/"
    r"(?:[^/]+/)?(?P<key>[^/]+)/"
)
_VLLM = re.compile(
    r"^(?P<root>(?:.*/)?torch_compile_cache/(?P<key>[0-9a-f]{10}))/(?P<rank>rank_\d+_\d+)/(?P<prefix>[^/]+)/"
)


def _entry_dirs(view: CacheView, pattern: re.Pattern[str]) -> Iterator[tuple[str, re.Match[str], str]]:
    """``(directory, match, first file)`` for each distinct entry directory ``pattern`` finds."""
    seen: set[str] = set()
    for path in sorted(view.files):
        match = pattern.match(path)
        if match is not None and match.group(0).rstrip("/") not in seen:
            seen.add(match.group(0).rstrip("/"))
            yield match.group(0).rstrip("/"), match, path


def _binaries_in(view: CacheView, directory: str) -> list[GpuBinary]:
    return [b for b in view.binaries.values() if b.path.startswith(directory + "/")]


def catalog(view: CacheView) -> Iterator[CacheEntry | FirstUseSignal]:
    for directory, match, path in _entry_dirs(view, _INDUCTOR_ENTRY):
        binaries = _binaries_in(view, directory)
        yield CacheEntry(
            type="inductor",
            path=directory,
            key=match.group("key"),
            archs=archs_of(binaries),
            binaries=tuple(b.path for b in binaries),
            details=(("kind", match.group("kind")), ("root", match.group("root"))),
            layer=view.layer_of(path),
            notes=("pickled compiled graph: loading it runs code; walked with pickletools, never unpickled",),
        )
    for directory, match, path in _entry_dirs(view, _VLLM):
        binaries = _binaries_in(view, directory)
        details = [("rank", match.group("rank")), ("prefix", match.group("prefix"))]
        factors = view.texts.get(f"{directory}/cache_key_factors.json")
        if factors:
            try:
                parsed = json.loads(factors)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                details += [(k, str(parsed[k])) for k in ("code_hash", "compiler_hash", "config_hash") if k in parsed]
        yield CacheEntry(
            type="vllm-torch-compile",
            path=directory,
            key=match.group("key"),
            archs=archs_of(binaries),
            binaries=tuple(b.path for b in binaries),
            details=tuple(details),
            layer=view.layer_of(path),
        )
