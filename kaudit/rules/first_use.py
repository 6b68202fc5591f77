"""Kernels fetched when a pod starts: a downloader in the image with nothing pinned and pre-populated."""

from __future__ import annotations

from collections.abc import Iterator

from kaudit.policy.model import Violation
from kaudit.rules.interface import RuleContext

DOWNLOADERS = {
    "kernels-client": "set HF_HUB_OFFLINE=1 and ship the locked kernels in the image's hub cache "
    "(`kernels download` at build time), loading them with load_kernel(..., lockfile=...)",
    "flashinfer-cubin-download": "install flashinfer-cubin (or flashinfer-jit-cache) matching flashinfer-python and "
    "drop FLASHINFER_CUBINS_REPOSITORY, so no cubin is downloaded",
    "triton-remote-cache": "drop TRITON_REMOTE_CACHE_BACKEND and ship a pre-warmed Triton cache instead",
    "inductor-remote-cache": "drop the TORCHINDUCTOR_*_REMOTE_CACHE settings and ship a pre-warmed compile cache",
    "kernels-local-override": "drop LOCAL_KERNELS: it loads unchecked code from a local directory",
}


def runtime_download(context: RuleContext) -> Iterator[Violation]:
    report = context.report
    prepopulated = any(entry.type == "hf-kernel-hub" for entry in report.caches)
    locked = any(entry.type == "hf-kernel-lock" for entry in report.caches)
    for signal in report.first_use:
        fix = DOWNLOADERS.get(signal.kind)
        if fix is None:
            continue
        if signal.kind == "kernels-client" and signal.offline and prepopulated and locked:
            continue  # offline, with a locked, pre-populated cache: nothing is fetched
        path = None if signal.evidence.startswith("env:") else signal.evidence
        yield Violation(f"{signal.detail} ({signal.evidence})", path=path, fix=fix)
