"""Transient memory of ``kaudit scan path`` per file, against the file's largest decompressed payload.

Usage::

    python benchmarks/payload_memory.py FILE [FILE ...]

For each file, in this process with kaudit already imported: the Python heap's peak while the file is scanned
(tracemalloc, so the interpreter, imported libraries and allocator slack are excluded), the largest payload
kaudit decompressed from it (the largest ``DeviceCode.size``, or for a compressed offload bundle, which is
decompressed whole, the sum of its code objects), and their ratio. The target of the extraction
core is a ratio below 2: payloads are read one at a time and hashed and parsed through views, never copied
whole. Process-level peak RSS, which adds the interpreter, is measured by scan_path_vs_cuobjdump.py.
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc
from collections.abc import Sequence

from kaudit.detectors import default_detectors
from kaudit.scan import Scanner, ScanOptions


def _warm_up(path: str) -> None:
    """Scan once untraced so every lazily imported library (lz4, zstandard, msgpack, pyelftools) is loaded."""
    Scanner(ScanOptions(jobs=1)).scan_paths([path])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    default_detectors()
    print("| file | largest payload (MiB) | heap peak while scanning (MiB) | ratio |")
    print("|---|---:|---:|---:|")
    worst = 0.0
    overhead = 0
    for path in args.files:
        _warm_up(path)
        tracemalloc.start()
        report = Scanner(ScanOptions(jobs=1)).scan_paths([path])
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        largest = max((c.size for b in report.binaries for c in b.device_code), default=0)
        # a compressed offload bundle is decompressed whole: its payload is every code object in it
        bundles: dict[str, int] = {}
        for binary in report.binaries:
            for code in binary.device_code:
                if code.bundle_id and code.compression.value != "none":
                    key = code.location.rsplit("/", 1)[0]
                    bundles[key] = bundles.get(key, 0) + code.size
        largest = max([largest, *bundles.values()])
        ratio = peak / largest if largest else 0.0
        if largest >= 1 << 20:
            worst = max(worst, ratio)
        else:
            overhead = max(overhead, peak)
        name = path.rsplit("/", 1)[-1]
        print(f"| {name} | {largest / 2**20:.1f} | {peak / 2**20:.1f} | {ratio:.2f} |")
    print(f"\nworst ratio where the largest payload is 1 MiB or more: {worst:.2f} (target: below 2)")
    print(f"largest heap peak for files with smaller payloads (fixed cost): {overhead / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
