"""Triton caches: ``<cache>/<KEY>/`` directories (KEY: 52 base32 characters, or 64 hex in old versions).

A kernel directory holds ``<name>.json`` (metadata: ``target{backend, arch}``, ``triton_version``, ``hash``),
``__grp__<name>.json`` (absolute paths of its files) and the compiled ``<name>.cubin``/``.ptx`` (CUDA) or
``.hsaco``/``.amdgcn`` (HIP). Other key directories hold ``__triton_launcher*.so`` and ``cuda_utils*.so`` /
``hip_utils*.so``: host code that Triton imports, so whoever can write the cache can run code in the pod.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterator

from kaudit.caches import CacheView, archs_of
from kaudit.inventory import CacheEntry, FirstUseSignal

_KEY = re.compile(r"^([A-Z2-7]{52}|[0-9a-f]{64})$")
_LAUNCHER = re.compile(r"^(__triton_launcher|cuda_utils|hip_utils)[^/]*\.so$")


def _triton_arch(target: dict[str, object]) -> str | None:
    backend, arch = target.get("backend"), target.get("arch")
    if backend == "cuda" and isinstance(arch, int):
        # Triton compiles sm_<cap> with the arch-specific "a" suffix from compute capability 9.0 on
        return f"sm_{arch}{'a' if arch >= 90 else ''}"
    if backend == "hip" and isinstance(arch, str):
        return arch
    return None


def catalog(view: CacheView) -> Iterator[CacheEntry | FirstUseSignal]:
    for path, text in sorted(view.texts.items()):
        directory, name = posixpath.split(path)
        if not _KEY.match(posixpath.basename(directory)) or not name.endswith(".json") or name.startswith("__grp__"):
            continue
        try:
            metadata = json.loads(text)
        except ValueError:
            continue
        if not isinstance(metadata, dict) or not isinstance(metadata.get("target"), dict):
            continue
        binaries = view.binaries_under(directory)
        archs = list(archs_of(binaries))
        declared = _triton_arch(metadata["target"])
        if declared and declared not in archs:
            archs.append(declared)
        details = [("kernel", str(metadata.get("name", name[: -len(".json")])))]
        for key in ("triton_version", "backend_name", "hash", "num_warps", "num_stages"):
            if key in metadata:
                details.append((key, str(metadata[key])))
        if declared:
            details.append(("target", declared))
        yield CacheEntry(
            type="triton",
            path=directory,
            key=posixpath.basename(directory),
            archs=tuple(archs),
            binaries=tuple(b.path for b in binaries),
            details=tuple(details),
            layer=view.layer_of(path),
        )
    for path in sorted(view.files):
        directory, name = posixpath.split(path)
        if _LAUNCHER.match(name) and _KEY.match(posixpath.basename(directory)):
            yield CacheEntry(
                type="triton-launcher",
                path=path,
                key=posixpath.basename(directory),
                details=(("native-code", "host shared object imported by Triton at launch"),),
                layer=view.layer_of(path),
            )
