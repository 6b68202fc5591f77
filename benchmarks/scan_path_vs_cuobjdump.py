"""Benchmark ``kaudit scan path`` against ``cuobjdump --dump-resource-usage`` + ``sha256sum``.

Usage::

    python benchmarks/scan_path_vs_cuobjdump.py [FILE ...] [--repeats N]
        [--cuobjdump PATH] [--wheels-dir DIR] [--per-file] [--kaudit-python PY]

With no FILE arguments the script extracts the GPU-carrying shared libraries from
the cached real wheels in ``~/.cache/kaudit-test-wheels`` (override with
``--wheels-dir`` or ``KAUDIT_TEST_WHEELS``) into a temporary directory:

* ``bitsandbytes-0.50.2``: ``libbitsandbytes_cuda*.so`` and ``libbitsandbytes_rocm*.so``
* ``jax_cuda13_plugin-0.10.2`` / ``jax_rocm7_plugin-0.10.2``: ``_linalg.so``,
  ``_prng.so``, ``_solver.so``
* ``nvidia_curand_cu12-10.3.10.19``: ``libcurand.so.10``

The wheels are fetched once with, e.g.::

    pip download --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_27_x86_64 -d ~/.cache/kaudit-test-wheels \
        bitsandbytes==0.50.2 jax-cuda13-plugin==0.10.2 jax-rocm7-plugin==0.10.2 \
        nvidia-curand-cu12==10.3.10.19 nvidia-cuda-cuobjdump==13.2.51

For each repeat it runs, side by side:

(a) ``python -m kaudit scan path FILE... -o json=/dev/null`` (one process, all files);
(b) ``cuobjdump --dump-resource-usage FILE`` and ``sha256sum FILE`` for each file
    (one process each; wall times are summed, peak RSS is the largest child).

Wall time is measured around each child with ``time.perf_counter``. Peak RSS comes
from GNU ``/usr/bin/time -f %M`` when present (``--rss auto``), else from
``os.wait4`` (``ru_maxrss``); Linux carries the forking parent's high-water RSS
across ``execve``, so wait4 figures never go below this script's own peak (about
30 MiB). The script prints a
Markdown table with best and median wall time over ``--repeats`` runs (default 3)
and the peak RSS, followed by the largest decompressed payload found by a small
built-in fatbin / clang-offload-bundle walker, so that the memory target
"kaudit peak RSS below 2x the largest decompressed payload" can be checked.
``--per-file`` adds one table row per file for every tool.

``cuobjdump`` is taken from ``--cuobjdump``, the ``KAUDIT_CUOBJDUMP`` environment
variable, ``PATH``, or, failing those, extracted from a cached
``nvidia_cuda_cuobjdump-*.whl``. Without it the cuobjdump rows are skipped.
cuobjdump only reads the executable fatbin by default (``.nv_fatbin``; the
relocatable ``__nv_relfatbin`` needs ``-all``) and reports AMD files as holding
no device code, so it is a speed/memory reference, not an equivalent workload.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_WHEELS_DIR = Path.home() / ".cache" / "kaudit-test-wheels"

# (wheel file glob, member globs inside the wheel)
DEFAULT_MEMBERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "bitsandbytes-0.50.2-*.whl",
        ("bitsandbytes/libbitsandbytes_cuda*.so", "bitsandbytes/libbitsandbytes_rocm*.so"),
    ),
    (
        "jax_cuda13_plugin-0.10.2-*.whl",
        tuple(f"jax_cuda13_plugin/{n}.so" for n in ("_linalg", "_prng", "_solver")),
    ),
    (
        "jax_rocm7_plugin-0.10.2-*.whl",
        tuple(f"jax_rocm7_plugin/{n}.so" for n in ("_linalg", "_prng", "_solver")),
    ),
    ("nvidia_curand_cu12-10.3.10.19-*.whl", ("nvidia/curand/lib/libcurand.so.10",)),
)
CUOBJDUMP_WHEEL_GLOB = "nvidia_cuda_cuobjdump-*.whl"
CUOBJDUMP_WHEEL_MEMBER = "nvidia/*/bin/cuobjdump"

NV_SECTIONS = frozenset({".nv_fatbin", "__nv_relfatbin"})
HIP_SECTION = ".hip_fatbin"
FATBIN_MAGIC = 0xBA55ED50
ENTRY_HEADER = struct.Struct("<HHIQIIHHIIIQQQ")  # 64-byte fatbin entry header
CCOB_MAGIC = b"CCOB"
BUNDLE_MAGIC = b"__CLANG_OFFLOAD_BUNDLE__"


# --------------------------------------------------------------------------- payload walker


@dataclass
class PayloadStats:
    """Largest payloads and GPU sections found in one file."""

    path: Path
    largest_nv_entry: int = 0  # largest (decompressed) fatbin entry: cubin / PTX / LTO-IR
    largest_amd_bundle: int = 0  # largest decompressed CCOB / plain offload bundle
    largest_section: int = 0  # largest GPU-carrying section of the host ELF
    nv_entries: int = 0
    amd_bundles: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def largest_payload(self) -> int:
        return max(self.largest_nv_entry, self.largest_amd_bundle)


def _elf_sections(f: Path) -> list[tuple[str, int, int]]:
    """Return ``(name, file offset, size)`` of every section of an ELF64 LE file."""
    with open(f, "rb") as fh:
        ehdr = fh.read(64)
        if len(ehdr) < 64 or ehdr[:4] != b"\x7fELF" or ehdr[4] != 2 or ehdr[5] != 1:
            return []
        shoff = struct.unpack_from("<Q", ehdr, 0x28)[0]
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ehdr, 0x3A)
        if shoff == 0 or shentsize < 64:
            return []
        fh.seek(shoff)
        first = fh.read(shentsize)
        if shnum == 0 and len(first) >= 64:  # extended numbering
            shnum = struct.unpack_from("<Q", first, 0x20)[0]
        if shstrndx == 0xFFFF and len(first) >= 64:
            shstrndx = struct.unpack_from("<I", first, 0x28)[0]
        fh.seek(shoff)
        table = fh.read(shnum * shentsize)
        headers = [struct.unpack_from("<IIQQQQ", table, i * shentsize) for i in range(len(table) // shentsize)]
        if shstrndx >= len(headers):
            return []
        fh.seek(headers[shstrndx][4])
        strtab = fh.read(headers[shstrndx][5])
    out = []
    for name_off, sh_type, _flags, _addr, offset, size in headers:
        end = strtab.find(b"\0", name_off)
        name = strtab[name_off : end if end >= 0 else None].decode("latin-1")
        if sh_type != 8:  # SHT_NOBITS occupies no file bytes
            out.append((name, offset, size))
    return out


def _walk_fatbin_section(data: bytes, stats: PayloadStats) -> None:
    """Walk the fatbin containers of one section; record entry payload sizes."""
    off = 0
    while off + 16 <= len(data):
        magic, _version, header_size, size = struct.unpack_from("<IHHQ", data, off)
        if magic != FATBIN_MAGIC:
            off += 8
            continue
        entry = off + header_size
        end = min(off + header_size + size, len(data))
        while entry + ENTRY_HEADER.size <= end:
            fields = ENTRY_HEADER.unpack_from(data, entry)
            kind, ent_header_size, padded_size, uncompressed_size = (
                fields[0],
                fields[2],
                fields[3],
                fields[13],
            )
            if kind == 0 or ent_header_size < 64:
                stats.errors.append(f"bad fatbin entry at section offset {entry:#x}")
                break
            stats.nv_entries += 1
            payload = uncompressed_size if uncompressed_size else padded_size
            stats.largest_nv_entry = max(stats.largest_nv_entry, payload)
            entry += ent_header_size + padded_size
        off = (off + header_size + size + 7) & ~7


def _walk_hip_section(data: bytes, stats: PayloadStats) -> None:
    """Record decompressed sizes of the CCOB / plain bundles packed in a section."""
    off = 0
    while True:
        hits = [i for i in (data.find(CCOB_MAGIC, off), data.find(BUNDLE_MAGIC, off)) if i >= 0]
        if not hits:
            return
        start = min(hits)
        if data.startswith(CCOB_MAGIC, start):
            version = struct.unpack_from("<H", data, start + 4)[0]
            if version == 2:
                total, uncompressed = struct.unpack_from("<II", data, start + 8)
            elif version == 3:
                total, uncompressed = struct.unpack_from("<QQ", data, start + 8)
            elif version == 1:
                total, uncompressed = len(data) - start, struct.unpack_from("<I", data, start + 8)[0]
            else:
                stats.errors.append(f"unknown CCOB version {version} at {start:#x}")
                off = start + 4
                continue
            stats.amd_bundles += 1
            stats.largest_amd_bundle = max(stats.largest_amd_bundle, uncompressed)
            off = start + max(int(total), 4)
        else:
            count = struct.unpack_from("<Q", data, start + 24)[0]
            pos, bundle_end = start + 32, start + 32
            for _ in range(min(count, 4096)):
                entry_off, entry_size, id_len = struct.unpack_from("<QQQ", data, pos)
                pos += 24 + id_len
                bundle_end = max(bundle_end, start + entry_off + entry_size, pos)
            stats.amd_bundles += 1
            stats.largest_amd_bundle = max(stats.largest_amd_bundle, bundle_end - start)
            off = bundle_end


def payload_stats(path: Path) -> PayloadStats:
    """Scan one file's GPU sections and return its payload statistics."""
    stats = PayloadStats(path)
    try:
        sections = _elf_sections(path)
        with open(path, "rb") as fh:
            for name, offset, size in sections:
                if name not in NV_SECTIONS and name != HIP_SECTION:
                    continue
                stats.largest_section = max(stats.largest_section, size)
                fh.seek(offset)
                data = fh.read(size)
                if name == HIP_SECTION:
                    _walk_hip_section(data, stats)
                else:
                    _walk_fatbin_section(data, stats)
    except (OSError, struct.error) as exc:
        stats.errors.append(f"{type(exc).__name__}: {exc}")
    return stats


# --------------------------------------------------------------------------- runners


@dataclass
class Sample:
    """One measured run of a (possibly multi-process) step."""

    wall_s: float
    max_rss_kib: int
    returncodes: list[int]


@dataclass
class Result:
    """All repeats of one benchmark row."""

    label: str
    samples: list[Sample] = field(default_factory=list)
    note: str = ""
    failure_messages: list[str] = field(default_factory=list)  # distinct, first repeat's order

    def cell_times(self) -> tuple[str, str]:
        walls = [s.wall_s for s in self.samples]
        if not walls:
            return "-", "-"
        return f"{min(walls):.3f}", f"{statistics.median(walls):.3f}"

    def peak_rss_mib(self) -> float:
        return max((s.max_rss_kib for s in self.samples), default=0) / 1024

    def failures(self) -> int:
        return sum(1 for s in self.samples for rc in s.returncodes if rc != 0)


GNU_TIME = "/usr/bin/time"


def gnu_time_usable() -> bool:
    """True if ``/usr/bin/time`` is GNU time (supports ``-f %M -o FILE``)."""
    if not os.access(GNU_TIME, os.X_OK):
        return False
    probe = subprocess.run([GNU_TIME, "-f", "%M", "-o", os.devnull, "true"], capture_output=True, check=False)
    return probe.returncode == 0


def run_child(cmd: Sequence[str], use_gnu_time: bool) -> tuple[float, int, int, bytes]:
    """Run ``cmd``; return wall seconds, peak RSS (KiB), exit status, stderr tail.

    ``os.wait4`` reports the child's high-water RSS, but Linux carries the forking
    parent's high-water mark across ``execve`` (fork and posix_spawn alike), so a
    child of this Python process never reports less than this process's own peak.
    GNU time forks from a small process and avoids that floor, so it is preferred.
    """
    rss_file = None
    if use_gnu_time:
        fd, rss_file = tempfile.mkstemp(prefix="kaudit-bench-rss-")
        os.close(fd)
        cmd = [GNU_TIME, "-f", "%M", "-o", rss_file, *cmd]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()  # drains stderr; the child is reaped below
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    rss = int(usage.ru_maxrss)
    if rss_file is not None:
        text = Path(rss_file).read_text().strip().splitlines()
        os.unlink(rss_file)
        if text and text[-1].isdigit():
            rss = int(text[-1])
    return wall, rss, proc.returncode, err[-2000:]


def run_step(cmds: Sequence[Sequence[str]], use_gnu_time: bool) -> tuple[Sample, list[str]]:
    """Run commands one after another; sum wall time, take the largest peak RSS."""
    wall, rss, rcs, failures = 0.0, 0, [], []
    for cmd in cmds:
        w, r, rc, err = run_child(cmd, use_gnu_time)
        wall += w
        rss = max(rss, r)
        rcs.append(rc)
        if rc != 0:
            lines = err.decode("utf-8", "replace").strip().splitlines()
            last = lines[-1] if lines else ""
            file_args = [a for a in cmd[1:] if os.path.isfile(a)]
            for a in file_args:  # shorten temp paths in the message
                last = last.replace(a, Path(a).name)
            where = Path(file_args[0]).name if len(file_args) == 1 else f"{len(file_args)} files"
            failures.append(f"rc={rc} ({where}): {last[:160]}")
    return Sample(wall, rss, rcs), failures


# --------------------------------------------------------------------------- inputs


def find_cuobjdump(explicit: str | None, wheels_dir: Path, scratch: Path) -> str | None:
    """Locate cuobjdump: option, env, PATH, then a cached nvidia-cuda-cuobjdump wheel."""
    for candidate in (explicit, os.environ.get("KAUDIT_CUOBJDUMP")):
        if candidate:
            return candidate
    on_path = shutil.which("cuobjdump")
    if on_path:
        return on_path
    for wheel in sorted(wheels_dir.glob(CUOBJDUMP_WHEEL_GLOB)):
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                if fnmatch.fnmatch(member, CUOBJDUMP_WHEEL_MEMBER):
                    target = Path(zf.extract(member, scratch / "cuobjdump"))
                    target.chmod(0o755)
                    return str(target)
    return None


def extract_default_files(wheels_dir: Path, scratch: Path) -> list[Path]:
    """Extract the default GPU libraries from the cached wheels into ``scratch``."""
    files: list[Path] = []
    for wheel_glob, member_globs in DEFAULT_MEMBERS:
        wheels = sorted(wheels_dir.glob(wheel_glob))
        if not wheels:
            print(f"warning: no {wheel_glob} in {wheels_dir}", file=sys.stderr)
            continue
        with zipfile.ZipFile(wheels[-1]) as zf:
            for member in sorted(zf.namelist()):
                if any(fnmatch.fnmatch(member, g) for g in member_globs):
                    files.append(Path(zf.extract(member, scratch / wheels[-1].stem)))
    return files


# --------------------------------------------------------------------------- report


def fmt_mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f}"


def display_names(files: Sequence[Path]) -> dict[Path, str]:
    """Shortest path suffix that tells the files apart (``_linalg.so`` appears twice)."""
    names: dict[Path, str] = {}
    for f in files:
        depth = 1
        while depth < len(f.parts):
            suffix = "/".join(f.parts[-depth:])
            if sum(1 for g in files if "/".join(g.parts[-depth:]) == suffix) == 1:
                break
            depth += 1
        names[f] = "/".join(f.parts[-depth:])
    return names


def print_report(
    results: list[Result], stats: list[PayloadStats], files: list[Path], repeats: int, rss_method: str
) -> None:
    total = sum(p.stat().st_size for p in files)
    names = display_names(files)
    print(f"{len(files)} files, {fmt_mib(total)} MiB, {repeats} repeat(s), peak RSS via {rss_method}\n")
    print("| step | wall best (s) | wall median (s) | peak RSS (MiB) | failed runs | note |")
    print("|---|---:|---:|---:|---:|---|")
    for r in results:
        best, median = r.cell_times()
        failures = f"{r.failures()}" if r.samples else "-"
        print(f"| {r.label} | {best} | {median} | {r.peak_rss_mib():.1f} | {failures} | {r.note} |")
    seen: set[str] = set()
    for r in results:
        for msg in r.failure_messages:
            if msg not in seen:
                seen.add(msg)
                print(f"  - {r.label}: {msg}")

    print(
        "\n| file | size (MiB) | largest GPU section (MiB) | NV entries | "
        "largest NV payload (MiB) | AMD bundles | largest AMD bundle (MiB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for s in stats:
        print(
            f"| {names[s.path]} | {fmt_mib(s.path.stat().st_size)} | {fmt_mib(s.largest_section)} "
            f"| {s.nv_entries} | {fmt_mib(s.largest_nv_entry)} | {s.amd_bundles} "
            f"| {fmt_mib(s.largest_amd_bundle)} |"
        )
        for err in s.errors:
            print(f"  - {names[s.path]}: {err}")

    largest = max(stats, key=lambda s: s.largest_payload, default=None)
    if largest is None or largest.largest_payload == 0:
        print("\nNo GPU payloads found.")
        return
    limit = 2 * largest.largest_payload
    print(
        f"\nLargest decompressed payload: {fmt_mib(largest.largest_payload)} MiB "
        f"({names[largest.path]}); memory target 2x = {fmt_mib(limit)} MiB."
    )
    baseline = next((r for r in results if r.label.startswith("kaudit baseline")), None)
    base = max((s.max_rss_kib for s in baseline.samples), default=0) * 1024 if baseline else 0
    for kaudit_all in (r for r in results if r.label.startswith("kaudit scan path")):
        if not kaudit_all.samples or kaudit_all.failures():
            print(f"{kaudit_all.label}: failed; memory target not checked.")
            continue
        peak = max(s.max_rss_kib for s in kaudit_all.samples) * 1024
        working = peak - base
        verdict = "meets" if working < limit else "exceeds"
        print(
            f"{kaudit_all.label}: peak RSS {fmt_mib(peak)} MiB = baseline {fmt_mib(base)} MiB + working "
            f"{fmt_mib(working)} MiB, which {verdict} the 2x-payload target."
        )


# --------------------------------------------------------------------------- main

BASELINE_CUBIN = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "bin" / "kern_sm_80.cubin"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="files to scan (default: cached wheels)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per step (default 3)")
    parser.add_argument("--cuobjdump", help="path to cuobjdump (else $KAUDIT_CUOBJDUMP, PATH)")
    parser.add_argument(
        "--wheels-dir",
        type=Path,
        default=Path(os.environ.get("KAUDIT_TEST_WHEELS", DEFAULT_WHEELS_DIR)),
        help=f"cached wheels (default {DEFAULT_WHEELS_DIR})",
    )
    parser.add_argument(
        "--nvidia-only",
        action="store_true",
        help="default set without the AMD libraries (cuobjdump reports those as 'no device code')",
    )
    parser.add_argument("--per-file", action="store_true", help="add per-file rows for each tool")
    parser.add_argument(
        "--rss",
        choices=("auto", "gnu-time", "wait4"),
        default="auto",
        help="peak RSS source: GNU /usr/bin/time (auto if present) or os.wait4 (floored by this process)",
    )
    parser.add_argument("--kaudit-python", default=sys.executable, help="interpreter that runs -m kaudit")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    with tempfile.TemporaryDirectory(prefix="kaudit-bench-") as tmp:
        scratch = Path(tmp)
        files = [p.resolve() for p in args.files] or extract_default_files(args.wheels_dir, scratch)
        if args.nvidia_only and not args.files:
            files = [f for f in files if "rocm" not in str(f.relative_to(scratch))]
        if not files:
            parser.error("no input files (pass FILEs or populate --wheels-dir)")
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            parser.error(f"not a file: {', '.join(missing)}")
        cuobjdump = find_cuobjdump(args.cuobjdump, args.wheels_dir, scratch)
        sha256sum = shutil.which("sha256sum")

        kaudit_cmd = [args.kaudit_python, "-m", "kaudit", "scan", "path"]
        steps: list[tuple[Result, list[list[str]]]] = [
            (
                Result(f"kaudit scan path (all {len(files)} files, worker per CPU)"),
                [[*kaudit_cmd, *map(str, files), "-o", "json=/dev/null"]],
            ),
            (
                Result(f"kaudit scan path -j1 (all {len(files)} files, one process)"),
                [[*kaudit_cmd, "-j1", *map(str, files), "-o", "json=/dev/null"]],
            ),
            (
                Result("kaudit baseline: -j1 on one 6 KB cubin (interpreter + imports)"),
                [[*kaudit_cmd, "-j1", str(BASELINE_CUBIN), "-o", "json=/dev/null"]],
            ),
        ]
        cuobj_cmds = [[cuobjdump, "--dump-resource-usage", str(f)] for f in files] if cuobjdump else []
        sha_cmds = [[sha256sum, str(f)] for f in files] if sha256sum else []
        steps.append((Result("cuobjdump -res-usage (sum over files)"), cuobj_cmds))
        steps.append((Result("sha256sum (sum over files)"), sha_cmds))
        steps.append((Result("cuobjdump -res-usage + sha256sum"), cuobj_cmds + sha_cmds))
        if args.per_file:
            for f in files:
                steps.append((Result(f"kaudit: {f.name}"), [[*kaudit_cmd, str(f), "-o", "json=/dev/null"]]))
                if cuobjdump:
                    steps.append((Result(f"cuobjdump: {f.name}"), [[cuobjdump, "-res-usage", str(f)]]))
                if sha256sum:
                    steps.append((Result(f"sha256sum: {f.name}"), [[sha256sum, str(f)]]))
        if not cuobjdump:
            for r, _ in steps:
                if "cuobjdump" in r.label:
                    r.note = "cuobjdump not found"
        if not sha256sum:
            for r, _ in steps:
                if "sha256sum" in r.label:
                    r.note = "sha256sum not found"

        use_gnu_time = args.rss == "gnu-time" or (args.rss == "auto" and gnu_time_usable())
        if args.rss == "gnu-time" and not gnu_time_usable():
            parser.error(f"{GNU_TIME} is not GNU time")
        for f in files:  # warm the page cache in small reads (keeps this process's RSS low)
            with open(f, "rb") as fh:
                while fh.read(1 << 20):
                    pass
        for _ in range(args.repeats):
            for result, cmds in steps:
                if not cmds:
                    continue
                sample, failures = run_step(cmds, use_gnu_time)
                result.samples.append(sample)
                for msg in failures:
                    if msg not in result.failure_messages:
                        result.failure_messages.append(msg)

        # Walk the payloads only after the timed runs: it reads whole sections and
        # would otherwise raise the RSS floor that os.wait4 reports for children.
        stats = [payload_stats(f) for f in files]
        rss_method = "GNU time (%M)" if use_gnu_time else "os.wait4 (floored by this process's peak RSS)"
        print_report([r for r, _ in steps], stats, files, args.repeats, rss_method)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
