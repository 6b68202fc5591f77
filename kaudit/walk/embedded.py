"""Device code stored inside containers that are not GPU formats: pickles, compile artifacts, the CUDA
ComputeCache, MIOpen kernel databases.

Nothing here is executed or unpickled: pickles are walked opcode by opcode with :mod:`pickletools`, the vLLM /
``standalone_compile`` "binary" artifact container is searched for ELF images, ComputeCache entries are parsed
by their (undocumented, verified) header, and MIOpen SQLite databases are opened read-only.
"""

from __future__ import annotations

import io
import json
import pickletools
import re
import struct
from collections.abc import Iterator

from kaudit.binfmt.elf import ELF_MAGIC, EM_AMDGPU, EM_CUDA
from kaudit.errors import MalformedBinary

MAX_EMBEDDED = 10_000
MAX_PICKLE_OPS = 50_000_000
_COMPUTECACHE_VERSION = 0x41


def _elf_extent(data: bytes, start: int) -> int | None:
    """Length of the ELF64 LE image at ``start`` (section table end), or ``None`` if it is not one."""
    if data[start : start + 4] != ELF_MAGIC or start + 64 > len(data) or data[start + 4] != 2 or data[start + 5] != 1:
        return None
    (shoff,) = struct.unpack_from("<Q", data, start + 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, start + 0x3A)
    end = int(shoff) + int(shentsize) * int(shnum)
    if not 64 <= end <= len(data) - start:
        return None
    return end


def _device_elf(head: bytes) -> bool:
    """Whether ``head`` (at least 20 bytes) starts a cubin or an AMDGPU code object."""
    machine = int.from_bytes(head[18:20], "little") if len(head) >= 20 else 0
    return head.startswith(ELF_MAGIC) and machine in (EM_CUDA, EM_AMDGPU)


def pickle_payloads(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Byte strings in a pickle that are device ELF images, found by walking its opcodes (never unpickling)."""
    index = 0
    try:
        for count, (opcode, argument, _position) in enumerate(pickletools.genops(io.BytesIO(data))):
            if count > MAX_PICKLE_OPS:
                raise MalformedBinary("pickle has too many opcodes")
            if isinstance(argument, bytes | bytearray) and _device_elf(bytes(argument[:20])):
                yield f"pickle-bytes#{index}", bytes(argument)
                index += 1
                if index >= MAX_EMBEDDED:
                    return
            elif opcode.name == "STOP":
                break
    except (ValueError, EOFError, struct.error, UnicodeDecodeError) as exc:
        raise MalformedBinary(f"pickle cannot be walked: {exc}") from exc


def carved_elves(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Device ELF images embedded anywhere in ``data`` (artifact containers wrap pickles in length-prefixed fields)."""
    position, index = 0, 0
    while index < MAX_EMBEDDED:
        start = data.find(ELF_MAGIC, position)
        if start < 0:
            return
        extent = _elf_extent(data, start)
        if extent is not None and _device_elf(data[start : start + 20]):
            yield f"elf@{start:#x}", data[start : start + extent]
            index += 1
            position = start + extent
        else:
            position = start + 4


def computecache_entry(data: bytes) -> tuple[dict[str, str], bytes]:
    """A CUDA driver JIT cache entry: its key facts (target, PTX ISA) and the cubin payload.

    Layout observed with driver 580 (runtime-caches.md §3.4): ``u32 version 0x41, u64 key length, u64 payload
    length, 8 bytes (a checksum)``, the key (build stamp, ``HOST64``, the target ``sm_XX``, the PTX text), then
    the payload (a cubin).
    """
    if len(data) < 28:
        raise MalformedBinary("ComputeCache entry is shorter than its header")
    version, key_length, payload_length = struct.unpack_from("<IQQ", data)
    if version != _COMPUTECACHE_VERSION:
        raise MalformedBinary(f"ComputeCache entry version {version:#x} is not 0x41")
    header = 28
    if header + key_length + payload_length > len(data):
        raise MalformedBinary("ComputeCache entry sizes run past the file")
    key = data[header : header + key_length]
    payload = data[header + key_length : header + key_length + payload_length]
    facts: dict[str, str] = {}
    text = key.decode("latin-1")
    # the key is the driver's build stamp, "HOST64", the target and the PTX text, run together
    target = re.search(r"HOST(?:32|64)(sm_\d+[af]?)", text)
    if target:
        facts["target"] = target.group(1)
    isa = re.search(r"^\s*\.version\s+(\d+\.\d+)", text, re.M)
    if isa:
        facts["ptx_isa"] = isa.group(1)
    return facts, payload


def miopen_index(path: str, data: bytes) -> str:
    """A JSON summary of an MIOpen kernel database (``kern_db`` rows: kernel name, arguments, sizes)."""
    import os
    import sqlite3
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kaudit-miopen-") as tmp:
        copy = os.path.join(tmp, "kdb.sqlite")
        with open(copy, "wb") as handle:
            handle.write(data)
        try:
            connection = sqlite3.connect(f"file:{copy}?mode=ro&immutable=1", uri=True)
            try:
                connection.execute("PRAGMA trusted_schema = OFF")
                rows = connection.execute(
                    "SELECT kernel_name, kernel_args, uncompressed_size, length(kernel_blob) FROM kern_db LIMIT 100000"
                ).fetchall()
            finally:
                connection.close()
        except sqlite3.Error as exc:
            raise MalformedBinary(f"{path}: not an MIOpen kernel database: {exc}") from exc
    kernels = [{"name": str(r[0]), "args": str(r[1])[:200], "size": r[2], "stored": r[3]} for r in rows]
    return json.dumps({"miopen_kernels": kernels})
