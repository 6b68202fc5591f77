"""How long CycloneDX output takes as components grow, against cyclonedx-python-lib's own dependency registration.

Usage::

    python benchmarks/sbom_scale.py [--sizes 1000,2000,5000,10000] [--objects-per-binary 4]

Builds scan reports of N components — GPU binaries, each with device code objects as nested components, owned by
one package per ten binaries — and times kaudit's ``-o cyclonedx-json`` rendering, and, beside it, the same BOM
built with the library's stock ``Bom.register_dependency`` (which scans the dependency list on every call).
"""

from __future__ import annotations

import argparse
import time

from cyclonedx.model.bom import Bom
from cyclonedx.output import make_outputter
from cyclonedx.schema import OutputFormat, SchemaVersion

from kaudit.formats import cyclonedx
from kaudit.inventory import ArchSummary, CodeKind, DeviceCode, GpuBinary, Owner, ScanReport, Vendor


def report(components: int, per_binary: int) -> ScanReport:
    binaries = []
    for index in range(components // (per_binary + 1)):
        codes = tuple(DeviceCode(Vendor.NVIDIA, CodeKind.SASS, f"sm_{80 + j}", f".nv_fatbin#0/entry#{j}",
                                 f"{index:032x}{j:032x}", 1000, 400) for j in range(per_binary))  # fmt: skip
        owner = Owner("pypi", f"pkg{index // 10}", "1.0", f"pkg:pypi/pkg{index // 10}@1.0", "RECORD")
        binaries.append(GpuBinary(f"usr/lib/lib{index}.so", 4096, f"{index:064x}", "elf-shared-object", codes,
                                  ArchSummary(sass_archs=tuple(c.arch or "" for c in codes)), ArchSummary(),
                                  owner=owner))  # fmt: skip
    return ScanReport("bench", tuple(binaries))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,2000,5000,10000")
    parser.add_argument("--objects-per-binary", type=int, default=4)
    args = parser.parse_args()
    print("| components (binaries + nested objects) | kaudit -o cyclonedx-json (s) | stock register_dependency (s) |")
    print("|---:|---:|---:|")
    for size in map(int, args.sizes.split(",")):
        scan = report(size, args.objects_per_binary)
        count = sum(1 + len(b.device_code) for b in scan.binaries)
        started = time.perf_counter()
        cyclonedx.CycloneDxJson().render(scan)
        ours = time.perf_counter() - started
        bom = cyclonedx.build_bom(scan)
        stock = Bom(metadata=bom.metadata)
        for component in bom.components:
            stock.components.add(component)
        started = time.perf_counter()
        for component in bom.components:
            stock.register_dependency(component)
        make_outputter(stock, OutputFormat.JSON, SchemaVersion.V1_6).output_as_string()
        theirs = time.perf_counter() - started
        print(f"| {count} | {ours:.2f} | {theirs:.2f} |")


if __name__ == "__main__":
    main()
