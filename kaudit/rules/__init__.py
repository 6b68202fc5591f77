"""The checks behind the rule catalog (``rules/*.yaml``), one module per concern, registered by name.

``image.py`` (how the image is referenced), ``hub.py`` (Kernel Hub pins, digests, signatures), ``first_use.py``
(kernels fetched when a pod starts), ``coverage.py`` (device code for the fleet's GPUs), ``ownership.py`` (GPU
binaries no package installed), ``caches.py`` (runtime cache contents), ``pod.py`` (admission only).
"""

from __future__ import annotations

from kaudit.rules import caches, coverage, first_use, hub, image, ownership, pod
from kaudit.rules.interface import Check, RuleContext

CHECKS: dict[str, Check] = {
    "image-not-pinned": image.not_pinned,
    "registry-not-allowed": image.registry_not_allowed,
    "hub-floating-revision": hub.floating_revision,
    "hub-integrity": hub.integrity,
    "hub-unsigned": hub.unsigned,
    "runtime-kernel-download": first_use.runtime_download,
    "ptx-jit-at-first-use": coverage.ptx_only,
    "no-code-for-fleet-arch": coverage.missing,
    "unowned-gpu-binary": ownership.unowned,
    "triton-native-launcher": caches.triton_launcher,
    "cache-for-other-arch": caches.other_arch,
    "pod-env-first-use": pod.env_first_use,
    "pod-shared-writable-cache": pod.shared_writable_cache,
    "pod-gpu-missing-code": pod.gpu_missing_code,
    "pod-gpu-ptx-only": pod.gpu_ptx_only,
}

__all__ = ["CHECKS", "Check", "RuleContext"]
