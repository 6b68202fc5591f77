"""Runtime kernel caches shipped in the image: native code Triton will import, entries for other GPUs."""

from __future__ import annotations

from collections.abc import Iterator

from kaudit.archs import runs_on
from kaudit.policy.model import Violation
from kaudit.rules.interface import RuleContext


def triton_launcher(context: RuleContext) -> Iterator[Violation]:
    for entry in context.report.caches:
        if entry.type == "triton-launcher":
            yield Violation(f"{entry.path} is a host shared object in a Triton cache; Triton imports it at kernel "
                            "launch, so whoever wrote the cache runs code in the pod",
                            path=entry.path, layer=entry.layer,
                            fix="ship the Triton cache without its launcher .so files (Triton rebuilds them), "
                                "or sign the cache and verify it before use")  # fmt: skip


def other_arch(context: RuleContext) -> Iterator[Violation]:
    fleet = context.policy.fleet_archs
    if not fleet:
        return
    for entry in context.report.caches:
        if not entry.archs or entry.type in ("hf-kernel-lock", "hf-kernel-dependency"):
            continue
        if not any(runs_on(arch, gpu) for arch in entry.archs for gpu in fleet):
            yield Violation(f"{entry.type} entry {entry.key} was built for {', '.join(entry.archs)}, which no GPU of "
                            f"the fleet ({', '.join(g.name for g in fleet)}) runs",
                            path=entry.path, layer=entry.layer,
                            fix="rebuild the cache on the fleet's GPUs, or drop the entry")  # fmt: skip
