"""Device code for the fleet's GPUs: native code for each, or at least PTX (JIT-compiled at every cold start)."""

from __future__ import annotations

from collections.abc import Iterator

from kaudit.archs import Coverage, coverage
from kaudit.inventory import GpuBinary
from kaudit.policy.model import Violation
from kaudit.rules.interface import RuleContext


def _archs(binary: GpuBinary) -> str:
    summary = binary.loadable
    return ", ".join([*summary.sass_archs, *summary.gfx_targets, *summary.ptx_archs]) or "none"


def ptx_only(context: RuleContext) -> Iterator[Violation]:
    forced = [s for s in context.report.first_use if s.kind == "ptx-jit"]
    for signal in forced:
        yield Violation(
            f"{signal.detail}: every kernel is JIT-compiled at each cold start", fix=f"unset {signal.evidence[4:]}"
        )
    for binary in context.binaries:
        for gpu in context.policy.fleet_archs:
            if coverage(binary.loadable, gpu) is Coverage.PTX_JIT:
                yield Violation(f"{binary.path} has no machine code for {gpu.name}, only PTX ({_archs(binary)}): "
                                "the driver JIT-compiles it at every cold start",
                                path=binary.path, layer=binary.layer, owner=binary.owner, arch=gpu.name,
                                fix=f"rebuild with SASS for {gpu.name} (nvcc -gencode "
                                    f"arch=compute_{gpu.major}{gpu.minor},code=sm_{gpu.major}{gpu.minor}) "
                                    "or use a build that ships it")  # fmt: skip


def missing(context: RuleContext) -> Iterator[Violation]:
    for binary in context.binaries:
        for gpu in context.policy.fleet_archs:
            if coverage(binary.loadable, gpu) is Coverage.MISSING:
                how = (f"nvcc -gencode arch=compute_{gpu.major}{gpu.minor},code=sm_{gpu.major}{gpu.minor}"
                       if gpu.vendor == "nvidia" else f"--offload-arch={gpu.name}")  # fmt: skip
                yield Violation(f"{binary.path} has no device code that runs on {gpu.name} (it has {_archs(binary)}): "
                                "kernel launches fail with 'no kernel image is available'",
                                path=binary.path, layer=binary.layer, owner=binary.owner, arch=gpu.name,
                                fix=f"rebuild for {gpu.name} ({how}) or use a build that ships it")  # fmt: skip
