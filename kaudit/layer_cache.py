"""A per-layer result cache in the user's cache directory, keyed by the layer's digest.

Base layers (CUDA, ROCm, PyTorch) are shared by many images; a layer walked once is not walked again. An entry is
the result as JSON, then the blob of its packed kernels, then a header line with the analyzer version, the
JSON's length and the checksum of both — written to a temporary file and renamed into place, so concurrent runs
never see half an entry. An entry whose header,
checksum or content does not check out is ignored and removed, never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile

from kaudit import __version__
from kaudit.serialize import CorruptRecord, KernelBlob, from_jsonable, json_up_to, to_jsonable
from kaudit.walk.layers import LayerResult

LAYER_FORMAT = 5
"""Bumped whenever what a layer walk records changes, so older entries are not reused."""
ANALYZER = f"kaudit {__version__} layer-format {LAYER_FORMAT}"


def default_directory() -> str:
    base = os.environ.get("KAUDIT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kaudit"
    )
    return os.path.join(base, "layers")


class LayerCache:
    """Read and write layer results by layer digest."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def _path(self, digest: str) -> str:
        algorithm, _, hex_digest = digest.partition(":")
        if algorithm != "sha256" or len(hex_digest) != 64 or not all(c in "0123456789abcdef" for c in hex_digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return os.path.join(self.directory, f"sha256-{hex_digest}.layer")

    def get(self, digest: str) -> LayerResult | None:
        """The cached result for ``digest``, or ``None`` (missing, stale or corrupt)."""
        try:
            path = self._path(digest)
            with open(path, "rb") as handle:
                content, _newline, header_line = handle.read().rpartition(b"\n")
        except (OSError, ValueError):
            return None
        try:
            header = json.loads(header_line)
            if (
                not isinstance(header, dict)
                or header.get("analyzer") != ANALYZER
                or header.get("digest") != digest
                or header.get("sha256") != hashlib.sha256(content).hexdigest()
                or type(header.get("json_length")) is not int
                or not 0 <= header["json_length"] < len(content)
            ):
                raise CorruptRecord("header does not match")
            body, blob = content[: header["json_length"]], content[header["json_length"] + 1 :]
            document = json.loads(body)
            if not isinstance(document, dict):
                raise CorruptRecord("not a layer record")
            result = from_jsonable(LayerResult, document.get("result"), KernelBlob(blob))
            if result.digest != digest:
                raise CorruptRecord("result is for another layer")
            return result
        except (ValueError, CorruptRecord, RecursionError, TypeError, KeyError, IndexError):
            # a damaged or foreign entry (deep nesting, wrong shapes) is never trusted: walk the layer again
            self._discard(path)
            return None

    def put(self, result: LayerResult) -> None:
        """Store ``result``; a failure to write only costs the next run a walk.

        The entry is written as it is encoded, binary by binary and object by object, with the checksum computed
        on the way and the header last: one library can hold a hundred thousand kernels, and encoding its layer
        as one JSON value doubled the worker's memory."""
        try:
            path = self._path(result.digest)
            os.makedirs(self.directory, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".layer")
        except (OSError, ValueError):
            return
        try:
            with os.fdopen(fd, "wb") as handle:
                checksum = hashlib.sha256()

                def emit(text: str) -> None:
                    data = text.encode()
                    checksum.update(data)
                    handle.write(data)

                blob = KernelBlob()
                emit('{"result":' + json_up_to(result, "binaries", blob) + "[")
                for index, binary in enumerate(result.binaries):
                    emit(("," if index else "") + json_up_to(binary, "device_code", blob) + "[")
                    for position, code in enumerate(binary.device_code):
                        emit(("," if position else "") + json.dumps(to_jsonable(code, blob)))
                    emit("]}")
                emit("]}}")
                json_length = handle.tell()
                emit("\n")
                for part in blob.parts:
                    checksum.update(part)
                    handle.write(part)
                header = {"analyzer": ANALYZER, "digest": result.digest, "json_length": json_length,
                          "sha256": checksum.hexdigest()}  # fmt: skip
                handle.write(b"\n" + json.dumps(header).encode())
            os.replace(temporary, path)
        except OSError:
            self._discard(temporary)

    def _discard(self, path: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(path)
