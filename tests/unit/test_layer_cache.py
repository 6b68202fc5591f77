"""The per-layer result cache: round trip, and every kind of damage ends in a miss, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kaudit.layer_cache import LayerCache
from kaudit.scan import Scanner
from kaudit.walk.layers import LayerFile, LayerResult
from tests.conftest import fixture_path

DIGEST = "sha256:" + "ab" * 32


def _result() -> LayerResult:
    binary = Scanner().scan_paths([str(fixture_path("libk_plain.so"))]).binaries[0]
    return LayerResult(DIGEST, DIGEST, (binary,), files={"usr/lib/libk.so": LayerFile(72312, binary.sha256)},
                       symlinks={"lib": "usr/lib"}, texts={"etc/os-release": "ID=debian\n"})  # fmt: skip


def test_round_trip(tmp_path: Path) -> None:
    cache = LayerCache(str(tmp_path))
    result = _result()
    cache.put(result)
    assert cache.get(DIGEST) == result
    assert cache.get("sha256:" + "cd" * 32) is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda header, body: (header, body[:-10]),
        lambda header, body: (header[:5], body),
        lambda header, body: (header.replace(b"layer-format", b"layer-formot"), body),
        lambda header, body: (header, b"[" * 100000 + b"]" * 100000),
        lambda header, body: (header, json.dumps({"strings": [1], "result": {}}).encode()),
        lambda header, body: (header, body.replace(b'"digest"', b'"digesT"')),
    ],
)
def test_damaged_entries_are_misses_and_removed(tmp_path: Path, damage: object) -> None:
    cache = LayerCache(str(tmp_path))
    cache.put(_result())
    (entry,) = tmp_path.glob("sha256-*.json")
    body, header = entry.read_bytes().rsplit(b"\n", 1)
    new_header, new_body = damage(header, body)  # type: ignore[operator]
    if new_body != body and b'"sha256"' in new_header:
        # keep the checksum consistent so the decoder itself has to refuse the content
        import hashlib

        meta = json.loads(new_header)
        meta["sha256"] = hashlib.sha256(new_body).hexdigest()
        new_header = json.dumps(meta).encode()
    entry.write_bytes(new_body + b"\n" + new_header)
    assert cache.get(DIGEST) is None
    assert not entry.exists()
