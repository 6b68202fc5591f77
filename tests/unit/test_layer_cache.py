"""The per-layer result cache: round trip, and every kind of damage ends in a miss, never a crash."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from kaudit.layer_cache import LayerCache
from kaudit.scan import Scanner
from kaudit.walk.layers import LayerFile, LayerResult
from tests.conftest import fixture_path

DIGEST = "sha256:" + "ab" * 32
# a device code row's kernels: [offset, length, count] into the blob, followed by the row's notes
KERNEL_REFERENCE = re.compile(rb"\[([0-9]+, [0-9]+, [1-9][0-9]*\]), \[")


def _result() -> LayerResult:
    binary = Scanner().scan_paths([str(fixture_path("libk_plain.so"))]).binaries[0]
    return LayerResult(DIGEST, DIGEST, (binary,), files={"usr/lib/libk.so": LayerFile(72312, binary.sha256)},
                       symlinks={"lib": "usr/lib"}, texts={"etc/os-release": "ID=debian\n"})  # fmt: skip


def test_round_trip(tmp_path: Path) -> None:
    cache = LayerCache(str(tmp_path))
    result = _result()
    cache.put(result)
    restored = cache.get(DIGEST)
    assert restored == result
    assert restored is not None
    for code, original in zip(restored.binaries[0].device_code, result.binaries[0].device_code, strict=True):
        assert list(code.kernels) == list(original.kernels)
    assert sum(len(code.kernels) for code in restored.binaries[0].device_code) > 0
    assert cache.get("sha256:" + "cd" * 32) is None


def _rewrite(entry: Path, record: bytes, blob: bytes, header: dict[str, object]) -> None:
    """Write an entry whose length and checksum fit its (damaged) content, so the decoder itself must refuse it."""
    content = record + b"\n" + blob
    header = {**header, "json_length": len(record), "sha256": hashlib.sha256(content).hexdigest()}
    entry.write_bytes(content + b"\n" + json.dumps(header).encode())


def _parts(entry: Path) -> tuple[bytes, bytes, dict[str, object]]:
    content, header_line = entry.read_bytes().rsplit(b"\n", 1)
    header = json.loads(header_line)
    return content[: header["json_length"]], content[header["json_length"] + 1 :], header


def _in_record(old: bytes | re.Pattern[bytes], new: bytes) -> Callable[[Path], None]:
    """Damage the JSON record only (first occurrence), keeping the entry's length and checksum consistent."""

    def damage(entry: Path) -> None:
        record, blob, header = _parts(entry)
        if isinstance(old, bytes):
            assert old in record
            damaged = record.replace(old, new, 1)
        else:
            damaged = old.sub(new, record, 1)
        assert damaged != record
        _rewrite(entry, damaged, blob, header)

    return damage


@pytest.mark.parametrize(
    "damage",
    [
        lambda entry: entry.write_bytes(entry.read_bytes()[:-80]),
        lambda entry: entry.write_bytes(entry.read_bytes().replace(b"layer-format", b"layer-formot")),
        lambda entry: entry.write_bytes(entry.read_bytes().replace(b'"json_length": ', b'"json_length": -')),
        lambda entry: entry.write_bytes(b"\x00" + entry.read_bytes()[1:]),
        lambda entry: _rewrite(entry, b"[" * 100000 + b"]" * 100000, b"", _parts(entry)[2]),
        lambda entry: _rewrite(entry, json.dumps({"result": {}}).encode(), b"", _parts(entry)[2]),
        lambda entry: _rewrite(entry, _parts(entry)[0], b"", _parts(entry)[2]),
        lambda entry: _rewrite(entry, _parts(entry)[0], b"\x28\xb5\x2f\xfd" + b"\xff" * 40, _parts(entry)[2]),
        _in_record(KERNEL_REFERENCE, rb"[99999\1, ["),
        _in_record(KERNEL_REFERENCE, rb"[-1\1, ["),
        _in_record(KERNEL_REFERENCE, rb'"x", ['),
        _in_record(b'"sass"', b'"sas"'),
        _in_record(b'"nvidia", ', b""),
        _in_record(b'"digest"', b'"digesT"'),
    ],
)
def test_damaged_entries_are_misses_and_removed(tmp_path: Path, damage: Callable[[Path], None]) -> None:
    cache = LayerCache(str(tmp_path))
    cache.put(_result())
    (entry,) = tmp_path.glob("sha256-*.layer")
    assert KERNEL_REFERENCE.search(_parts(entry)[0])  # the record refers to packed kernels in the blob
    damage(entry)
    assert cache.get(DIGEST) is None
    assert not entry.exists()
