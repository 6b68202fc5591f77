"""PTX text: ISA version, target, kernels (gpu-binary-formats.md §2.5).

fatbinary strips comments, so the toolkit banner is gone from embedded PTX; the ``.version`` directive
(PTX ISA) is what remains. Standalone ``.ptx`` files keep comments, which are removed before matching.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kaudit.errors import MalformedBinary

_COMMENT = re.compile(rb"//[^\n]*|/\*.*?\*/", re.S)
_VERSION = re.compile(rb"^\s*\.version\s+(\d+\.\d+)", re.M)
_TARGET = re.compile(rb"^\s*\.target\s+([^\s,;]+)", re.M)
_ADDRESS = re.compile(rb"^\s*\.address_size\s+(\d+)", re.M)
_ENTRY = re.compile(rb"\.entry\s+([A-Za-z_$%][\w$%]*)")
_TOOLKIT = re.compile(rb"Cuda compilation tools, release (\d+\.\d+)")
_SNIFF_WINDOW = 64 * 1024


@dataclass(frozen=True)
class PtxInfo:
    isa_version: str
    target: str
    address_size: int | None
    kernels: tuple[str, ...]
    toolkit: str | None

    @property
    def arch(self) -> str:
        """``sm_90a`` in ``.target`` → ``compute_90a``."""
        return "compute_" + self.target.removeprefix("sm_").removeprefix("compute_")


def looks_like_ptx(head: bytes) -> bool:
    """Whether the first bytes of a file are PTX text (``.version`` and ``.target`` directives)."""
    if b"\0" in head.rstrip(b"\0"):
        return False
    text = _COMMENT.sub(b"", head[:_SNIFF_WINDOW])
    return bool(_VERSION.search(text) and _TARGET.search(text))


def parse_ptx(data: bytes) -> PtxInfo:
    """Parse a PTX module (NUL-terminated or not)."""
    end = data.find(b"\0")
    text = data if end < 0 else data[:end]
    toolkit_match = _TOOLKIT.search(text[:4096])
    stripped = _COMMENT.sub(b"", text)
    version = _VERSION.search(stripped)
    target = _TARGET.search(stripped)
    if not version or not target:
        raise MalformedBinary("PTX text has no .version or .target directive")
    address = _ADDRESS.search(stripped)
    return PtxInfo(
        isa_version=version.group(1).decode(),
        target=target.group(1).decode("ascii", "replace"),
        address_size=int(address.group(1)) if address else None,
        kernels=tuple(dict.fromkeys(m.group(1).decode("ascii", "replace") for m in _ENTRY.finditer(stripped))),
        toolkit=toolkit_match.group(1).decode() if toolkit_match else None,
    )
