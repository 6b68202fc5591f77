"""Read ``cuobjdump -symbols`` output, and project kaudit's inventory onto the same view.

cuobjdump prints one block per fatbin entry, in file order: ``Fatbin elf|ptx|nvvm code:``, then
``arch = sm_90a``, ``code version = [1,8]``, ``compressed`` when stored compressed, and for ELF entries the
symbol table, where kernels are ``STT_FUNC STB_GLOBAL STO_ENTRY <name>``. By default it reads a host file's
``.nv_fatbin`` and falls back to ``__nv_relfatbin`` only when there is no ``.nv_fatbin`` (object files).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field

from kaudit.inventory import CodeKind, DeviceCode, GpuBinary

_BLOCK = re.compile(r"^Fatbin (elf|ptx|nvvm) code:$")


@dataclass
class Entry:
    kind: str
    arch: str = ""
    version: tuple[int, int] = (0, 0)
    compressed: bool = False
    kernels: list[str] = field(default_factory=list)


@dataclass
class Listing:
    returncode: int
    stderr: str
    entries: list[Entry]


def run_symbols(cuobjdump: str, path: str) -> Listing:
    result = subprocess.run([cuobjdump, "-symbols", path], capture_output=True, text=True, timeout=300)
    entries: list[Entry] = []
    for line in result.stdout.splitlines():
        match = _BLOCK.match(line)
        if match:
            entries.append(Entry(kind=match.group(1)))
            continue
        if line == "symbols:" and not entries:  # a bare cubin: no fatbin header, one ELF
            entries.append(Entry(kind="elf"))
        if not entries:
            continue
        current = entries[-1]
        if line.startswith("arch = "):
            current.arch = line.split("=", 1)[1].strip()
        elif line.startswith("code version = "):
            major, minor = re.findall(r"\d+", line)
            current.version = (int(major), int(minor))
        elif line.strip() == "compressed":
            current.compressed = True
        elif "STO_ENTRY" in line and line.startswith("STT_FUNC"):
            current.kernels.append(line.split()[-1])
    if len(entries) == 1 and not entries[0].arch:  # bare cubin: arch and ABI come from the ELF header line
        headers = run_elf_headers(cuobjdump, path)
        if len(headers) == 1:
            entries[0].arch, entries[0].version = headers[0].sm, (1, headers[0].abi)
    return Listing(result.returncode, result.stderr, entries)


# New ABI: "64-bit ELF: type=ET_EXEC, ABI=8, sm=90a, toolkit=13.0, flags=0x6005a04";
# old ABI: "64bit elf: type=2, abi=7, sm=90a, toolkit=126, flags = 0x500d5a".
_ELF_HEADER = re.compile(
    r"^64-?bit (?:ELF|elf): type=(\w+), (?:ABI|abi)=(\d+), sm=(\w+), toolkit=([\d.]+|\w+), flags ?= ?(0x[0-9a-f]+)"
)


@dataclass(frozen=True)
class ElfHeader:
    type: str
    abi: int
    sm: str
    toolkit: str
    flags: int


def run_elf_headers(cuobjdump: str, path: str) -> list[ElfHeader]:
    """The ``64-bit ELF: type=…, ABI=…, sm=…, toolkit=…, flags=…`` line of each cubin (``cuobjdump -elf``)."""
    result = subprocess.run([cuobjdump, "-elf", path], capture_output=True, text=True, timeout=300)
    headers = []
    for line in result.stdout.splitlines():
        match = _ELF_HEADER.match(line)
        if match:
            kind, abi, sm, toolkit, flags = match.groups()
            kind = {"1": "ET_REL", "2": "ET_EXEC"}.get(kind, kind)
            if toolkit.isdigit():  # the old format prints the CUDA API version: 126 = 12.6
                toolkit = f"{int(toolkit) // 10}.{int(toolkit) % 10}"
            headers.append(ElfHeader(kind, int(abi), "sm_" + sm, toolkit, int(flags, 16)))
    return headers


def cuobjdump_selection(binary: GpuBinary) -> list[DeviceCode]:
    """kaudit's NVIDIA fatbin entries that cuobjdump's default mode reads, in file order."""
    nvidia = [c for c in binary.device_code if c.vendor.value == "nvidia"]
    if binary.format in ("fatbin", "cubin"):
        return nvidia
    loadable = [c for c in nvidia if c.location.startswith(".nv_fatbin/")]
    return loadable or [c for c in nvidia if c.location.startswith("__nv_relfatbin/")]


def as_entry(code: DeviceCode) -> Entry:
    """kaudit's view of one entry, in cuobjdump's vocabulary."""
    if code.kind is CodeKind.SASS:
        assert code.elf_abi_version is not None
        return Entry("elf", code.arch or "", (1, code.elf_abi_version), code.compression.value != "none",
                     [k.name for k in code.kernels])  # fmt: skip
    if code.kind is CodeKind.PTX:
        assert code.ptx_isa is not None
        major, minor = code.ptx_isa.split(".")
        arch = (code.arch or "").replace("compute_", "sm_")
        return Entry("ptx", arch, (int(major), int(minor)), code.compression.value != "none")
    assert code.kind is CodeKind.LTO_IR
    return Entry("nvvm", (code.arch or "").replace("compute_", "sm_"), (1, 65), code.compression.value != "none")
