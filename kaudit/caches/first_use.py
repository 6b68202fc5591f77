"""Software and settings that fetch or compile GPU kernels when a pod first runs (runtime-caches.md §3.11).

From the image: the Hugging Face ``kernels`` client (downloads Hub kernels unless offline with a pre-populated,
locked cache), FlashInfer without its pre-built cubin or JIT-cache wheels (downloads cubins), and the image
config's environment (remote Triton/Inductor caches, forced PTX JIT, local kernel overrides).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from kaudit.caches import CacheView
from kaudit.inventory import CacheEntry, FirstUseSignal

_DIST_INFO = re.compile(r"(^|/)(?P<name>[^/]+?)-(?P<version>[^/-]+)\.dist-info/RECORD$")
_ENV_SIGNALS: dict[str, tuple[str, str]] = {
    "TRITON_REMOTE_CACHE_BACKEND": ("triton-remote-cache", "Triton fetches compiled kernels from a remote cache"),
    "TRITON_CACHE_MANAGER": ("triton-cache-manager", "a custom Triton cache manager class is loaded"),
    "TORCHINDUCTOR_REDIS_HOST": ("inductor-remote-cache", "Inductor's remote caches point at a Redis host"),
    "FLASHINFER_CUBINS_REPOSITORY": ("flashinfer-cubin-download", "FlashInfer downloads cubins from this repository"),
    "CUDA_FORCE_PTX_JIT": ("ptx-jit", "the driver JIT-compiles PTX even where SASS exists"),
    "CUDA_FORCE_JIT": ("ptx-jit", "the driver JIT-compiles PTX even where SASS exists"),
    "LOCAL_KERNELS": ("kernels-local-override", "Kernel Hub kernels are replaced by local directories, unchecked"),
    "TRITON_ALWAYS_COMPILE": ("triton-recompile", "Triton ignores its cache and recompiles"),
    "LLVM_PASS_PLUGIN_PATH": ("compiler-plugin", "a shared object is loaded into Triton's compiler"),
    "HSA_OVERRIDE_GFX_VERSION": ("gfx-override", "the ROCm runtime is told to treat the GPU as another gfx target"),
}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def catalog(view: CacheView) -> Iterator[CacheEntry | FirstUseSignal]:
    installed = {}
    for path in view.texts:
        match = _DIST_INFO.search(path)
        if match:
            installed[_normalized(match.group("name"))] = (path, match.group("version"))
    offline = is_offline(view.env.get("HF_HUB_OFFLINE", ""))
    if "kernels" in installed:
        path, version = installed["kernels"]
        state = "HF_HUB_OFFLINE is set in the image" if offline else "HF_HUB_OFFLINE is not set in the image"
        yield FirstUseSignal("kernels-client", path,
                             f"kernels {version} downloads Hub kernels at first use; {state}", offline)  # fmt: skip
    for name in ("flashinfer-python", "flashinfer"):
        if name in installed and not {"flashinfer-cubin", "flashinfer-jit-cache"} & installed.keys():
            path, version = installed[name]
            yield FirstUseSignal("flashinfer-cubin-download", path,
                                 f"{name} {version} without flashinfer-cubin or flashinfer-jit-cache downloads "
                                 "cubins at first use")  # fmt: skip
            break
    yield from env_signals(view.env)


def env_signals(env: Mapping[str, str]) -> Iterator[FirstUseSignal]:
    """What an environment (an image config's Env, or a pod container's) makes fetch or compile at first use."""
    for variable, value in sorted(env.items()):
        signal = _ENV_SIGNALS.get(variable)
        if signal is None and variable.startswith("TORCHINDUCTOR_") and variable.endswith("_REMOTE_CACHE"):
            signal = ("inductor-remote-cache", "Inductor fetches compiled graphs or autotuning results remotely")
        if signal is not None and value not in ("", "0"):
            yield FirstUseSignal(signal[0], f"env:{variable}", f"{signal[1]} ({variable}={value[:80]})")


def is_offline(value: str) -> bool:
    """Whether an ``HF_HUB_OFFLINE`` value switches the Hub client offline."""
    return value.lower() in ("1", "true", "yes", "on")
