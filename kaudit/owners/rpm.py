"""The RPM database of RHEL 9 / UBI / Fedora images (``rpmdb.sqlite``), read without rpm.

Table ``Packages(hnum, blob)``: each blob is an RPM header without its 8-byte magic — ``u32 index_count,
u32 data_length`` (big-endian), ``index_count`` entries of ``u32 tag, u32 type, u32 offset, u32 count``, then
the data store. Files are ``DIRNAMES[DIRINDEXES[i]] + BASENAMES[i]``. The database is opened read-only from a
private temporary copy, with SQLite's defences for untrusted files on.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import tempfile
import time

from kaudit.errors import LimitExceeded, MalformedBinary
from kaudit.owners.model import PackageFiles

TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH, TAG_ARCH = 1000, 1001, 1002, 1003, 1022
TAG_DIRINDEXES, TAG_BASENAMES, TAG_DIRNAMES = 1116, 1117, 1118
TYPE_INT32, TYPE_STRING, TYPE_STRING_ARRAY, TYPE_I18NSTRING = 4, 6, 8, 9
MAX_INDEX_ENTRIES = 100_000
MAX_PACKAGES = 100_000
MAX_SECONDS = 30.0


def parse_header(blob: bytes) -> dict[int, object]:
    """The tags kaudit needs from one header blob: strings, string arrays and int32 arrays."""
    if len(blob) < 8:
        raise MalformedBinary("RPM header blob is shorter than its 8-byte preamble")
    count, data_length = struct.unpack_from(">II", blob)
    if count > MAX_INDEX_ENTRIES:
        raise LimitExceeded(f"RPM header claims {count} index entries")
    store = 8 + 16 * count
    if store + data_length > len(blob):
        raise MalformedBinary("RPM header data runs past its blob")
    data = blob[store : store + data_length]
    wanted = {TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH, TAG_ARCH, TAG_DIRINDEXES, TAG_BASENAMES, TAG_DIRNAMES}
    tags: dict[int, object] = {}
    for i in range(count):
        tag, kind, offset, items = struct.unpack_from(">IIII", blob, 8 + 16 * i)
        if tag not in wanted:
            continue
        if offset >= len(data):
            raise MalformedBinary(f"RPM header tag {tag} points outside the data store")
        if kind in (TYPE_STRING, TYPE_I18NSTRING):
            tags[tag] = _strings(data, offset, 1)[0]
        elif kind == TYPE_STRING_ARRAY:
            tags[tag] = _strings(data, offset, items)
        elif kind == TYPE_INT32:
            if offset + 4 * items > len(data):
                raise MalformedBinary(f"RPM header tag {tag} runs past the data store")
            tags[tag] = list(struct.unpack_from(f">{items}I", data, offset))
    return tags


def _strings(data: bytes, offset: int, count: int) -> list[str]:
    out = []
    for _ in range(count):
        end = data.find(b"\0", offset)
        if end < 0:
            raise MalformedBinary("RPM header string is not NUL-terminated")
        out.append(data[offset:end].decode("utf-8", "replace"))
        offset = end + 1
    return out


def files_of(tags: dict[int, object]) -> tuple[str, ...]:
    basenames = tags.get(TAG_BASENAMES) or []
    dirnames = tags.get(TAG_DIRNAMES) or []
    indexes = tags.get(TAG_DIRINDEXES) or []
    assert isinstance(basenames, list) and isinstance(dirnames, list) and isinstance(indexes, list)
    if not (len(basenames) == len(indexes)):
        raise MalformedBinary("RPM header has different numbers of basenames and dirindexes")
    out = []
    for base, index in zip(basenames, indexes, strict=True):
        if not 0 <= index < len(dirnames):
            raise MalformedBinary(f"RPM dirindex {index} is outside the {len(dirnames)} dirnames")
        out.append(f"{dirnames[index]}{base}")
    return tuple(out)


def read_rpmdb(data: bytes, database: str) -> list[PackageFiles]:
    """Every package in an ``rpmdb.sqlite`` (given as bytes) with its files."""
    with tempfile.TemporaryDirectory(prefix="kaudit-rpmdb-") as tmp:
        path = os.path.join(tmp, "rpmdb.sqlite")
        with open(path, "wb") as handle:
            handle.write(data)
        started = time.monotonic()
        try:
            connection = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        except sqlite3.Error as exc:
            raise MalformedBinary(f"rpmdb.sqlite cannot be opened: {exc}") from exc
        try:
            connection.execute("PRAGMA trusted_schema = OFF")
            connection.execute("PRAGMA cell_size_check = ON")
            connection.set_progress_handler(lambda: int(time.monotonic() - started > MAX_SECONDS), 10_000)
            rows = connection.execute("SELECT blob FROM Packages LIMIT ?", (MAX_PACKAGES + 1,)).fetchall()
        except sqlite3.Error as exc:
            raise MalformedBinary(f"rpmdb.sqlite is not a readable RPM database: {exc}") from exc
        finally:
            connection.close()
    if len(rows) > MAX_PACKAGES:
        raise LimitExceeded(f"rpmdb.sqlite lists more than {MAX_PACKAGES} packages")
    packages: list[PackageFiles] = []
    for (blob,) in rows:
        if not isinstance(blob, bytes):
            raise MalformedBinary("rpmdb.sqlite has a Packages row that is not a blob")
        tags = parse_header(blob)
        name = tags.get(TAG_NAME)
        if not isinstance(name, str):
            continue
        version = "-".join(str(tags[t]) for t in (TAG_VERSION, TAG_RELEASE) if isinstance(tags.get(t), str))
        epoch = tags.get(TAG_EPOCH)
        if isinstance(epoch, list) and epoch and epoch[0]:
            version = f"{epoch[0]}:{version}"
        arch = tags.get(TAG_ARCH)
        files = tuple(f.lstrip("/") for f in files_of(tags))
        packages.append(
            PackageFiles("rpm", name, version or None, database, files, arch if isinstance(arch, str) else None)
        )
    return packages
