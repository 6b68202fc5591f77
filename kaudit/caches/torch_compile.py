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
from kaudit.inventory import CacheEntry, FirstUseSignal

_INDUCTOR_ENTRY = re.compile(
    r"^(?P<root>(?:.*/)?(?:torchinductor_[^/]+|inductor_cache|inductor))/(?P<kind>fxgraph|aotautograd)/"
    r"(?:[^/]+/)?(?P<key>[^/]+)/"
)
_VLLM = re.compile(
    r"^(?P<root>(?:.*/)?torch_compile_cache/(?P<key>[0-9a-f]{10}))/(?P<rank>rank_\d+_\d+)/(?P<prefix>[^/]+)/"
)


def catalog(view: CacheView) -> Iterator[CacheEntry | FirstUseSignal]:
    for directory, match, path in view.entry_dirs(_INDUCTOR_ENTRY):
        binaries = view.binaries_under(directory)
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
    for directory, match, path in view.entry_dirs(_VLLM):
        binaries = view.binaries_under(directory)
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
