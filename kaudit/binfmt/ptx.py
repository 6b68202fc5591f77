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
# A comment, or a kernel entry: matching both in one pass skips ".entry" inside comments without copying
# the (possibly megabytes of) text to strip them first.
_ENTRY_OR_COMMENT = re.compile(rb"//[^\n]*|/\*.*?\*/|\.entry\s+([A-Za-z_$%][\w$%]*)", re.S)
_ENTRY = re.compile(rb"\.entry\s+([A-Za-z_$%][\w$%]*)")
_COMMENT_START = re.compile(rb"//|/\*")
_TOOLKIT = re.compile(rb"Cuda compilation tools, release (\d+\.\d+)")
_SNIFF_WINDOW = 64 * 1024
_HEADER_WINDOW = 64 * 1024
"""The module directives (.version, .target, .address_size) come first; only this much is searched for them."""


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


def parse_ptx(data: bytes | bytearray | memoryview) -> PtxInfo:
    """Parse a PTX module (NUL-terminated or not), without copying its text."""
    view = memoryview(data)
    end = _nul(view)
    text = view[:end]
    head = _COMMENT.sub(b"", text[:_HEADER_WINDOW])
    toolkit_match = _TOOLKIT.search(text[:4096])
    version = _VERSION.search(head)
    target = _TARGET.search(head)
    if not version or not target:
        raise MalformedBinary("PTX text has no .version or .target directive")
    address = _ADDRESS.search(head)
    if _COMMENT_START.search(text):
        kernels = (m.group(1) for m in _ENTRY_OR_COMMENT.finditer(text) if m.group(1) is not None)
    else:  # fatbinary strips comments: a plain search for ".entry" is 10x faster on megabytes of PTX
        kernels = (m.group(1) for m in _ENTRY.finditer(text))
    return PtxInfo(
        isa_version=version.group(1).decode(),
        target=target.group(1).decode("ascii", "replace"),
        address_size=int(address.group(1)) if address else None,
        kernels=tuple(dict.fromkeys(k.decode("ascii", "replace") for k in kernels)),
        toolkit=toolkit_match.group(1).decode() if toolkit_match else None,
    )


def text_length(data: bytes | bytearray | memoryview) -> int:
    """Length of PTX text up to its NUL terminator (fatbin payloads are NUL-terminated and padded)."""
    return _nul(memoryview(data))


def _nul(view: memoryview) -> int:
    match = _FIRST_NUL.search(view)
    return match.start() if match else len(view)


_FIRST_NUL = re.compile(rb"\0")
