"""Which device code a GPU runs: the compatibility rules of CUDA SASS and PTX and of AMD code objects.

A fleet is described by its GPUs' architectures (``sm_90`` for H100/H200, ``sm_100`` for B200, ``gfx942`` for MI300X).
For each, a GPU binary either carries machine code the GPU loads as is (``native``), only PTX the driver must
JIT-compile at every cold start (``ptx-jit``), or nothing the GPU can run (``missing``).

CUDA rules (CUDA C++ Programming Guide, "Binary Compatibility", and the ``a``/``f`` suffixes of CUDA 12.0/12.9):
plain SASS for sm_XY runs on devices of the same major version with minor >= Y; ``sm_XYa`` runs only on X.Y;
``sm_XYf`` runs on the X family with minor >= Y. PTX for compute_XY JIT-compiles for every device >= X.Y; the
``a`` and ``f`` forms are limited as their SASS counterparts are. AMD code objects run only on their processor
(feature flags aside); the LLVM generic targets run on the processors of their family.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from kaudit.inventory import ArchSummary

_CUDA = re.compile(r"^(?P<kind>sm|compute)_(?P<major>[1-9][0-9]?)(?P<minor>[0-9])(?P<suffix>[af]?)$")
_GFX = re.compile(r"^gfx[0-9a-f]+$")
# LLVM AMDGPUUsage, "generic processors": the processors each generic code object runs on.
_GENERIC_GFX = {
    "gfx9-generic": {"gfx900", "gfx902", "gfx904", "gfx906", "gfx909", "gfx90c"},
    "gfx9-4-generic": {"gfx940", "gfx941", "gfx942", "gfx950"},
    "gfx10-1-generic": {"gfx1010", "gfx1011", "gfx1012", "gfx1013"},
    "gfx10-3-generic": {"gfx1030", "gfx1031", "gfx1032", "gfx1033", "gfx1034", "gfx1035", "gfx1036"},
    "gfx11-generic": {"gfx1100", "gfx1101", "gfx1102", "gfx1103", "gfx1150", "gfx1151", "gfx1152", "gfx1153"},
    "gfx12-generic": {"gfx1200", "gfx1201"},
}


class Coverage(StrEnum):
    """How a GPU binary serves one fleet architecture."""

    NATIVE = "native"
    """Machine code the GPU loads as is: SASS, or an AMD code object."""
    PTX_JIT = "ptx-jit"
    """Only PTX: the driver JIT-compiles it at every cold start (and fails if the driver is older)."""
    MISSING = "missing"
    """Nothing the GPU can run: launching a kernel fails with "no kernel image is available"."""


@dataclass(frozen=True, slots=True)
class FleetArch:
    """A GPU architecture of the fleet: ``sm_90`` (vendor nvidia, 9.0) or ``gfx942`` (vendor amd)."""

    name: str
    vendor: str
    major: int = 0
    minor: int = 0

    @classmethod
    def parse(cls, text: str) -> FleetArch:
        """``sm_90``, ``sm_100``, ``sm_90a`` (the suffix is dropped: a GPU is a GPU) or ``gfx942``; raises
        :class:`ValueError` for anything else."""
        match = _CUDA.match(text)
        if match and match.group("kind") == "sm":
            major, minor = int(match.group("major")), int(match.group("minor"))
            return cls(f"sm_{major}{minor}", "nvidia", major, minor)
        processor = text.split(":", 1)[0]
        if _GFX.match(processor):
            return cls(processor, "amd")
        raise ValueError(f"{text!r} is not a GPU architecture (expected sm_XY such as sm_90, or gfxNNN such as gfx942)")


def runs_on(code_arch: str, gpu: FleetArch) -> bool:
    """True when device code built for ``code_arch`` (``sm_90a``, ``compute_80``, ``gfx942:xnack-``,
    ``gfx9-4-generic``) runs on ``gpu``, natively or through the PTX JIT."""
    match = _CUDA.match(code_arch)
    if match:
        if gpu.vendor != "nvidia":
            return False
        major, minor, suffix = int(match.group("major")), int(match.group("minor")), match.group("suffix")
        if suffix == "a":
            return (major, minor) == (gpu.major, gpu.minor)
        if match.group("kind") == "compute" and not suffix:
            return (major, minor) <= (gpu.major, gpu.minor)
        return major == gpu.major and minor <= gpu.minor
    if gpu.vendor != "amd":
        return False
    processor = code_arch.split(":", 1)[0]
    return processor == gpu.name or gpu.name in _GENERIC_GFX.get(processor, set())


def vendor_of(code_arch: str) -> str | None:
    if _CUDA.match(code_arch):
        return "nvidia"
    processor = code_arch.split(":", 1)[0]
    return "amd" if _GFX.match(processor) or processor in _GENERIC_GFX else None


def coverage(summary: ArchSummary, gpu: FleetArch) -> Coverage | None:
    """How loadable code with ``summary``'s archs serves ``gpu``; ``None`` when it holds no code of the GPU's
    vendor (a CUDA library is not judged against an AMD GPU)."""
    if gpu.vendor == "nvidia":
        if not (summary.sass_archs or summary.ptx_archs):
            return None
        if any(runs_on(arch, gpu) for arch in summary.sass_archs):
            return Coverage.NATIVE
        if any(runs_on(arch, gpu) for arch in summary.ptx_archs):
            return Coverage.PTX_JIT
        return Coverage.MISSING
    if not summary.gfx_targets:
        return None
    return Coverage.NATIVE if any(runs_on(target, gpu) for target in summary.gfx_targets) else Coverage.MISSING
