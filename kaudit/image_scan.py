"""The image-scan orchestrator: resolve the image, walk its layers in worker processes (or take them from the
layer cache), merge them into the final filesystem, attribute GPU binaries to packages, catalog kernel caches.

Sources: ``oci:DIR[:TAG]``, ``docker-archive:FILE``, ``dir:PATH`` and registry references.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

from kaudit import __version__
from kaudit.caches import catalog
from kaudit.errors import UsageError
from kaudit.inventory import FindingKind, GpuBinary, ImageInfo, LayerRef, ScanFinding, ScanReport, ScanStats
from kaudit.layer_cache import LayerCache
from kaudit.owners.index import OwnerIndex, build_index
from kaudit.scan import Scanner, ScanOptions, available_cpus, fork_context
from kaudit.sources.interface import ImageSource, LayerDescriptor, LayerReader, Platform, ResolvedImage
from kaudit.sources.oci_layout import DockerArchiveSource, OciLayoutSource
from kaudit.sources.registry import Credentials, RegistrySource
from kaudit.walk.layers import (
    Deferred,
    Handoff,
    LayerResult,
    Limits,
    parse_deferred,
    walk_directory,
    walk_layer,
)
from kaudit.walk.merge import ImageView, merge

LayerProgress = Callable[[int, int, int], None]
"""Called with (layer index, bytes read, layer size) as layers stream; a cached layer reports done at once."""


@dataclass
class ImageScanOptions:
    platform: Platform = field(default_factory=Platform)
    all_layers: bool = False
    jobs: int | None = None
    cache_dir: str | None = None
    """Where layer results are cached; ``None`` disables the cache."""
    insecure_registries: frozenset[str] = frozenset()
    credentials: Credentials | None = None
    limits: Limits = field(default_factory=Limits)


def open_source(reference: str, options: ImageScanOptions) -> ImageSource:
    """The source a reference names: ``oci:``, ``docker-archive:``, or a registry reference."""
    if reference.startswith("oci:"):
        rest = reference[len("oci:") :]
        directory, tag = rest, None
        if not os.path.isdir(rest) and ":" in rest:
            directory, tag = rest.rsplit(":", 1)
        return OciLayoutSource(directory, tag)
    if reference.startswith("docker-archive:"):
        return DockerArchiveSource(reference[len("docker-archive:") :])
    for scheme in ("docker:", "podman:", "containerd:", "oci-archive:"):
        if reference.startswith(scheme):
            raise UsageError(f"{scheme} sources are not supported; use oci:, docker-archive:, dir: or a registry")
    return RegistrySource(
        reference.removeprefix("registry:"),
        insecure_hosts=options.insecure_registries,
        credentials=options.credentials,
    )


def _jobs(options: ImageScanOptions, layers: int) -> int:
    return max(1, min(options.jobs or available_cpus(), layers))


_WORKER_SCANNER: Scanner | None = None
_WORKER_PROGRESS: Any = None


def _init_worker(progress_array: Any) -> None:
    global _WORKER_PROGRESS
    _WORKER_PROGRESS = progress_array


def _worker_scanner() -> Scanner:
    global _WORKER_SCANNER
    if _WORKER_SCANNER is None:
        _WORKER_SCANNER = Scanner(ScanOptions(jobs=1))
    return _WORKER_SCANNER


def _walk(
    layer: LayerDescriptor, reader: LayerReader, limits: Limits, cache_dir: str | None, handoff: Handoff | None
) -> LayerResult:
    """Worker-process entry point: walk one layer; cache the result here unless files were set aside."""
    scanner = _worker_scanner()
    progress_array = _WORKER_PROGRESS

    def report(done: int) -> None:
        if progress_array is not None:
            progress_array[layer.index] = done

    result = walk_layer(layer, reader, scanner.examine, scanner.sniff, limits, report, handoff)
    if cache_dir is not None and not result.deferred and _cacheable(result):
        LayerCache(cache_dir).put(result)
    return result


def _parse(deferred: Deferred) -> tuple[GpuBinary | None, list[ScanFinding]]:
    """Worker-process entry point: parse a GPU file a layer walk set aside."""
    return parse_deferred(deferred, _worker_scanner().examine)


def _cacheable(result: LayerResult) -> bool:
    return not any(f.kind is FindingKind.LIMIT for f in result.findings)


def scan_image(reference: str, options: ImageScanOptions, progress: LayerProgress | None = None) -> ScanReport:
    """Scan an image (or, for ``dir:PATH``, an unpacked root filesystem)."""
    started = time.monotonic()
    if reference.startswith("dir:"):
        return _scan_rootfs(reference, options, started)
    source = open_source(reference, options)
    try:
        image = source.resolve(options.platform)
        results = _layer_results(source, image, options, progress)
    finally:
        source.close()
    refs = [LayerRef(layer.index, layer.digest, layer.diff_id, layer.created_by) for layer in image.layers]
    view = merge(results, refs, keep_removed=options.all_layers)
    findings = [
        replace(f, location=f.location or f"layer {index} ({refs[index].digest[:19]})")
        for index, result in enumerate(results)
        for f in result.findings
    ]
    info = ImageInfo(image.reference, image.manifest_digest, image.platform, tuple(refs), image.index_digest,
                     image.repo_tags)  # fmt: skip
    stats = ScanStats(
        files_seen=sum(len(r.files) for r in results),
        files_parsed=sum(len(r.binaries) for r in results),
        bytes_seen=sum(f.size for r in results for f in r.files.values()),
        duration_s=round(time.monotonic() - started, 3),
    )
    return _report(image.reference, view, findings, stats, info, image.env)


def _scan_rootfs(reference: str, options: ImageScanOptions, started: float) -> ScanReport:
    root = reference[len("dir:") :]
    if not os.path.isdir(root):
        raise UsageError(f"dir:{root} is not a directory")
    scanner = Scanner(ScanOptions(jobs=1))
    result = walk_directory(root, scanner.examine, scanner.sniff, options.limits)
    view = merge([result], [LayerRef(0, reference, "")], keep_removed=False)
    view.binaries = [replace(b, layer=None) for b in view.binaries]
    stats = ScanStats(len(result.files), len(result.binaries), sum(f.size for f in result.files.values()),
                      round(time.monotonic() - started, 3))  # fmt: skip
    return _report(reference, view, list(result.findings), stats, None, {})


def _report(
    subject: str,
    view: ImageView,
    findings: list[ScanFinding],
    stats: ScanStats,
    info: ImageInfo | None,
    env: dict[str, str],
) -> ScanReport:
    texts = {path: text for path, (_layer, text) in view.texts.items()}
    index = build_index(texts, [package for _layer, package in view.packages], view.resolve)
    binaries = [_attributed(b, index, view) for b in (*view.binaries, *view.removed_binaries)]
    caches, first_use = catalog(view, binaries, env)
    return ScanReport(subject, tuple(binaries), tuple(findings), stats, __version__, info, caches, first_use)


def _attributed(binary: GpuBinary, index: OwnerIndex, view: ImageView) -> GpuBinary:
    canonical = view.resolve(binary.path)
    owner = index.owner_of(canonical) or index.owner_of(binary.path)
    notes = list(binary.notes)
    if owner is None:
        notes.append("owned by no package: no package database in the image lists this file")
    recorded = index.recorded_hashes.get(canonical)
    if recorded is not None and recorded != binary.sha256:
        notes.append(f"content differs from the sha256 its package recorded ({owner.database if owner else 'RECORD'})")
    return replace(binary, owner=owner, notes=tuple(notes))


def _layer_results(
    source: ImageSource, image: ResolvedImage, options: ImageScanOptions, progress: LayerProgress | None
) -> list[LayerResult]:
    cache = LayerCache(options.cache_dir) if options.cache_dir else None
    results: list[LayerResult | None] = [None] * len(image.layers)
    todo: list[LayerDescriptor] = []
    for layer in image.layers:
        cached = cache.get(layer.digest) if cache else None
        if cached is not None:
            results[layer.index] = cached
            if progress:
                progress(layer.index, layer.size, layer.size)
        else:
            todo.append(layer)
    if todo:
        for layer, result in _walk_layers(source, todo, options, progress):
            results[layer.index] = result
    return [r for r in results if r is not None]


def _walk_layers(
    source: ImageSource, todo: Sequence[LayerDescriptor], options: ImageScanOptions, progress: LayerProgress | None
) -> list[tuple[LayerDescriptor, LayerResult]]:
    """Walk layers in worker processes, largest first. Large GPU files are set aside by the walks and parsed as
    separate tasks in the same pool, so one layer full of GPU libraries keeps every worker busy."""
    todo = sorted(todo, key=lambda layer: -layer.size)  # largest first: the long layers do not finish last
    readers = [source.layer_reader(layer) for layer in todo]
    context = fork_context()
    progress_array = context.Array("q", max(layer.index for layer in todo) + 1, lock=False)
    jobs = _jobs(options, len(todo))
    spill_dir = tempfile.mkdtemp(prefix="kaudit-scan-") if jobs > 1 else None
    handoff = Handoff(spill_dir) if spill_dir else None
    results: dict[int, LayerResult] = {}
    try:
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                                 initargs=(progress_array,)) as pool:  # fmt: skip
            walks: dict[Future[LayerResult], LayerDescriptor] = {
                pool.submit(_walk, layer, reader, options.limits, options.cache_dir, handoff): layer
                for layer, reader in zip(todo, readers, strict=True)
            }
            parses: dict[Future[tuple[GpuBinary | None, list[ScanFinding]]], int] = {}
            partial: dict[int, tuple[LayerResult, list[Future[tuple[GpuBinary | None, list[ScanFinding]]]]]] = {}
            pending: set[Future[Any]] = set(walks)
            while pending:
                done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                if progress:
                    for layer in todo:
                        progress(layer.index, progress_array[layer.index], layer.size)
                for future in done:
                    if future in walks:
                        layer, result = walks[future], future.result()
                        if not result.deferred:
                            results[layer.index] = result
                            continue
                        tasks = [pool.submit(_parse, deferred) for deferred in result.deferred]
                        partial[layer.index] = (result, tasks)
                        parses.update((task, layer.index) for task in tasks)
                        pending.update(tasks)
                    else:
                        index = parses.pop(future)
                        if index not in partial:
                            continue  # finished by a sibling task that completed in the same batch
                        result, tasks = partial[index]
                        if all(task.done() for task in tasks):
                            del partial[index]
                            results[index] = _completed(result, [task.result() for task in tasks], options)
    finally:
        if spill_dir:
            shutil.rmtree(spill_dir, ignore_errors=True)
    if progress:
        for layer in todo:
            progress(layer.index, layer.size, layer.size)
    return [(layer, results[layer.index]) for layer in todo]


def _completed(
    result: LayerResult, parsed: list[tuple[GpuBinary | None, list[ScanFinding]]], options: ImageScanOptions
) -> LayerResult:
    """A layer result with the files it set aside parsed in; cached now that it is whole."""
    binaries = [*result.binaries, *(binary for binary, _problems in parsed if binary is not None)]
    findings = [*result.findings, *(f for _binary, problems in parsed for f in problems)]
    whole = replace(result, binaries=tuple(binaries), findings=tuple(findings), deferred=())
    if options.cache_dir is not None and _cacheable(whole):
        LayerCache(options.cache_dir).put(whole)
    return whole
