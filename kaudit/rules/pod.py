"""Pod-level signals, for admission: what the pod's own settings add to what its image carries.

The environment that fetches kernels at first use, writable kernel-cache volumes shared between replicas, and the
GPU the pod will land on — read from its nodeSelector and required node affinity on GPU feature discovery labels
(``nvidia.com/gpu.product``, ``nvidia.com/gpu.compute.major``/``minor``, ``amd.com/gpu.family``) — checked against
the image's machine code. These checks yield nothing in CI, where there is no pod.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from kaudit.archs import Coverage, FleetArch, coverage
from kaudit.caches.first_use import env_signals, is_offline
from kaudit.policy.model import Violation
from kaudit.rules.first_use import DOWNLOADERS
from kaudit.rules.interface import RuleContext

# nvidia.com/gpu.product values (GPU feature discovery writes the marketing name with dashes) → compute capability
_NVIDIA_PRODUCTS = [
    (r"GB?300|B300", "sm_103"), (r"GB?200|B200|B100", "sm_100"), (r"RTX-PRO-6000-Blackwell|RTX-50\d0", "sm_120"),
    (r"GH200|H200|H100|H800|H20\b", "sm_90"), (r"L40S?|L4\b|RTX-40\d0|RTX-6000-Ada|L20", "sm_89"),
    (r"A100|A800|A30\b", "sm_80"), (r"A10G?\b|A40|RTX-A\d+|A16|A2\b|RTX-30\d0", "sm_86"), (r"T4\b", "sm_75"),
    (r"V100", "sm_70"),
]  # fmt: skip
# amd.com/gpu.family values → gfx processor (a gfx name is taken as it is)
_AMD_FAMILIES = {"MI355X": "gfx950", "MI350X": "gfx950", "MI350": "gfx950", "MI325X": "gfx942", "MI300X": "gfx942",
                 "MI300A": "gfx942", "MI300": "gfx942", "MI250X": "gfx90a", "MI250": "gfx90a", "MI210": "gfx90a",
                 "MI200": "gfx90a", "MI100": "gfx908"}  # fmt: skip
_CACHE_PATHS = re.compile(r"(^|/)(\.triton|huggingface|\.cache|torchinductor[^/]*|torch_compile_cache|"
                          r"ComputeCache|\.nv|flashinfer|deep_gemm|miopen)(/|$)")  # fmt: skip
_SHARED_VOLUMES = ("persistentVolumeClaim", "nfs", "hostPath", "cephfs", "glusterfs", "azureFile", "csi")


def _labels_in(pod: Mapping[str, Any]) -> dict[str, set[str]]:
    """Label → values the pod can be scheduled on: nodeSelector, and required node affinity (operator In)."""
    labels: dict[str, set[str]] = {}
    for key, value in (pod.get("nodeSelector") or {}).items():
        labels.setdefault(str(key), set()).add(str(value))
    required = (((pod.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})  # fmt: skip
    for term in required.get("nodeSelectorTerms") or []:
        for expression in (term or {}).get("matchExpressions") or []:
            if expression.get("operator") == "In":
                labels.setdefault(str(expression.get("key")), set()).update(map(str, expression.get("values") or []))
    return labels


def pod_gpus(pod: Mapping[str, Any]) -> list[FleetArch]:
    """The GPUs the pod's scheduling constraints allow, as far as GPU feature discovery labels tell."""
    labels = _labels_in(pod)
    names: set[str] = set()
    for major in labels.get("nvidia.com/gpu.compute.major", set()):
        for minor in labels.get("nvidia.com/gpu.compute.minor", {"0"}):
            if major.isdigit() and minor.isdigit():
                names.add(f"sm_{int(major)}{int(minor)}")
    for product in labels.get("nvidia.com/gpu.product", set()):
        names.update(sm for pattern, sm in _NVIDIA_PRODUCTS if re.search(pattern, product))
    for family in labels.get("amd.com/gpu.family", set()):
        names.add(family if re.fullmatch(r"gfx[0-9a-f]+", family) else _AMD_FAMILIES.get(family.upper(), ""))
    gpus = []
    for name in sorted(names):
        try:
            gpus.append(FleetArch.parse(name))
        except ValueError:
            continue  # a label value that names no GPU kaudit knows: nothing to judge against
    return gpus


UNKNOWN_VALUE = "<set from a Secret, ConfigMap or field>"


def _env(container: Mapping[str, Any]) -> dict[str, str]:
    """The container's variables; one set through ``valueFrom`` counts as set to an unknown value."""
    env = {}
    for entry in container.get("env") or []:
        if isinstance(entry, Mapping) and "name" in entry:
            env[str(entry["name"])] = UNKNOWN_VALUE if "valueFrom" in entry else str(entry.get("value", ""))
    return env


def env_first_use(context: RuleContext) -> Iterator[Violation]:
    container = context.container
    if container is None:
        return
    env = _env(container)
    name = container.get("name", "?")
    for signal in env_signals(env):
        if signal.kind == "ptx-jit":
            yield Violation(f"container {name}: {signal.detail}: every kernel is JIT-compiled at each cold start",
                            subject=name, fix=f"unset {signal.evidence.removeprefix('env:')}")  # fmt: skip
        elif signal.kind in DOWNLOADERS:
            yield Violation(f"container {name}: {signal.detail}", subject=name, fix=DOWNLOADERS[signal.kind])
    client = next((s for s in context.report.first_use if s.kind == "kernels-client"), None)
    if client is not None:
        offline = is_offline(env.get("HF_HUB_OFFLINE", "1" if client.offline else ""))
        # a value from a Secret or ConfigMap cannot be checked here: it does not prove the client offline
        if not offline:
            yield Violation(f"container {name} runs the kernels client ({client.evidence}) with HF_HUB_OFFLINE unset: "
                            "Hub kernels are downloaded when the pod first uses them", subject=name,
                            fix=DOWNLOADERS["kernels-client"])  # fmt: skip


def shared_writable_cache(context: RuleContext) -> Iterator[Violation]:
    pod, container = context.pod, context.container
    if pod is None or container is None:
        return
    shared = {v.get("name"): next(k for k in _SHARED_VOLUMES if k in v)
              for v in pod.get("volumes") or [] if any(k in v for k in _SHARED_VOLUMES)}  # fmt: skip
    for mount in container.get("volumeMounts") or []:
        path = str(mount.get("mountPath", ""))
        if mount.get("name") in shared and not mount.get("readOnly") and _CACHE_PATHS.search(path):
            yield Violation(f"container {container.get('name', '?')} mounts {shared[mount['name']]} volume "
                            f"{mount['name']} writable at {path}: every replica writes kernels the others load",
                            subject=str(container.get("name", "?")),
                            fix="mount pre-warmed caches readOnly (and signed: `kaudit sign cache`), "
                                "or give each pod its own emptyDir")  # fmt: skip


def _on_pod_gpus(context: RuleContext, wanted: Coverage) -> Iterator[Violation]:
    if context.pod is None:
        return
    for gpu in pod_gpus(context.pod):
        for binary in context.binaries:
            if coverage(binary.loadable, gpu) is wanted:
                what = "no device code" if wanted is Coverage.MISSING else "only PTX (JIT at every start)"
                yield Violation(f"{what} for {gpu.name}, the GPU this pod is scheduled on, in {binary.path}",
                                path=binary.path, layer=binary.layer, owner=binary.owner, arch=gpu.name)  # fmt: skip


def gpu_missing_code(context: RuleContext) -> Iterator[Violation]:
    yield from _on_pod_gpus(context, Coverage.MISSING)


def gpu_ptx_only(context: RuleContext) -> Iterator[Violation]:
    yield from _on_pod_gpus(context, Coverage.PTX_JIT)
