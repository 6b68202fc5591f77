"""Hugging Face Kernel Hub: hub caches, ``kernels.lock`` files and ``[tool.kernels.dependencies]``.

Cache layout (huggingface_hub conventions, ``kernels`` 0.17): ``<cache>/kernels--<org>--<name>/`` (``models--`` for
kernels ≤0.13) with ``snapshots/<commit>/build/<variant>/…`` symlinked to ``blobs/``, ``refs/<branch>`` files that
are written only when a symbolic revision (``main``, ``v1``) was pulled — forensic evidence of a floating pull —
and, per variant, ``metadata.json`` (backend, archs, per-file digests) and ``metadata.json.sigstore``.
Lock files come in two formats: the legacy list of ``{repo_id, sha, variants}`` (≤0.16) and the current list of
``{dependency: {repo-id, version|revision}, lock: {commit}}`` (0.17).
"""

from __future__ import annotations

import base64
import json
import re
import tomllib
from collections.abc import Iterator
from typing import Any

from kaudit.caches import CacheView, archs_of
from kaudit.inventory import CacheEntry, FirstUseSignal

_VARIANT = re.compile(
    r"^(?P<repo>(?:.*/)?(?P<layout>kernels|models)--(?P<org>[^/]+)--(?P<name>[^/]+))"
    r"/snapshots/(?P<commit>[0-9a-f]{40,64})/build/(?P<variant>[^/]+)/"
)
_FULL_COMMIT = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")


def cuda_arch(value: str) -> str:
    """``"9.0a"`` → ``sm_90a``; ``"9.0+PTX"`` → ``compute_90``; ``gfx942`` stays as it is."""
    match = re.fullmatch(r"(\d+)\.(\d+)([af]?)(\+PTX)?", value.strip())
    if match is None:
        return value.strip()
    major, minor, suffix, ptx = match.groups()
    return f"{'compute' if ptx else 'sm'}_{major}{minor}{suffix}"


def catalog(view: CacheView) -> Iterator[CacheEntry | FirstUseSignal]:
    yield from _cached_variants(view)
    yield from _lock_files(view)
    yield from _declared_dependencies(view)


def _cached_variants(view: CacheView) -> Iterator[CacheEntry]:
    variants: dict[str, re.Match[str]] = {}
    for path in sorted(view.files | set(view.symlinks)):
        match = _VARIANT.match(path)
        if match:
            variants.setdefault(match.group(0).rstrip("/"), match)
    for directory, match in variants.items():
        repo_dir = match.group("repo")
        commit = match.group("commit")
        refs = {
            path.rsplit("/", 1)[1]: text.strip()
            for path, text in view.texts.items()
            if path.startswith(repo_dir + "/refs/")
        }
        binaries = view.binaries_under(directory)
        details: list[tuple[str, str]] = [
            ("repository", f"{match.group('org')}/{match.group('name')}"),
            ("commit", commit),
            ("variant", match.group("variant")),
            ("layout", match.group("layout")),
        ]
        notes = []
        pointing = sorted(name for name, target in refs.items() if target == commit)
        for name in pointing:
            details.append(("ref", name))
        if pointing:
            notes.append(f"pulled by a floating revision ({', '.join(pointing)}): refs/ records a branch or tag")
        archs = list(archs_of(binaries))
        metadata_text = _variant_text(view, directory, "metadata.json")
        if metadata_text is None:
            details.append(("metadata", "absent"))
        else:
            metadata = _json(metadata_text)
            details.append(("metadata", "present" if metadata is not None else "unreadable"))
            if isinstance(metadata, dict):
                raw_backend = metadata.get("backend")
                backend: dict[str, Any] = raw_backend if isinstance(raw_backend, dict) else {}
                if isinstance(backend.get("type"), str):
                    details.append(("backend", backend["type"]))
                for arch in backend.get("archs") or []:
                    if isinstance(arch, str) and cuda_arch(arch) not in archs:
                        archs.append(cuda_arch(arch))
                digest = metadata.get("digest")
                details.append(("digest", "present" if isinstance(digest, dict) and digest.get("files") else "absent"))
                if isinstance(digest, dict) and digest.get("files"):
                    outcome, problems = _check_digest(view, directory, digest)
                    details.append(("digest-check", outcome))
                    notes.extend(problems)
                if isinstance(metadata.get("version"), int):
                    details.append(("version", str(metadata["version"])))
        signature = _variant_text(view, directory, "metadata.json.sigstore")
        details.append(("signature", "present" if signature is not None else "absent"))
        if signature is not None and metadata_text is not None:
            # verified by the policy (KA203), which knows the trusted signers: the bundle and what it signs
            metadata_digest = view.digest_of(f"{directory}/metadata.json")
            if metadata_digest is not None:
                details += [("signature-bundle", signature), ("metadata-sha256", metadata_digest)]
        representative = binaries[0].path if binaries else next(iter(sorted(view.files)), "")
        yield CacheEntry(
            type="hf-kernel-hub",
            path=directory,
            key=f"{match.group('org')}/{match.group('name')}@{commit}",
            archs=tuple(archs),
            binaries=tuple(b.path for b in binaries),
            details=tuple(details),
            layer=view.layer_of(representative),
            notes=tuple(notes),
        )


def _check_digest(view: CacheView, directory: str, digest: dict[str, Any]) -> tuple[str, list[str]]:
    """Compare the variant's files with ``metadata.json``'s ``digest`` (kernels-data's ``Digest::hash_variant``:
    every regular file but the top-level ``metadata.json``/``.sigstore`` and ``__pycache__``, standard base64 of
    the sha256). Returns ``verified``, ``failed`` or ``unverifiable`` and what did not match."""
    if digest.get("algorithm") != "sha256" or not isinstance(digest.get("files"), dict):
        return "unverifiable", [f"metadata.json digest uses {digest.get('algorithm')!r}; kaudit checks sha256"]
    expected: dict[str, Any] = digest["files"]
    actual: dict[str, str | None] = {}
    prefix = directory + "/"
    for path in view.files_under(directory):
        relative = path[len(prefix) :]
        if relative in ("metadata.json", "metadata.json.sigstore") or "__pycache__" in relative.split("/"):
            continue
        hex_digest = view.digest_of(path)
        actual[relative] = base64.b64encode(bytes.fromhex(hex_digest)).decode() if hex_digest else None
    problems = []
    for relative in sorted(expected.keys() | actual.keys()):
        if relative not in actual:
            problems.append(f"digest: {relative} is listed in metadata.json but missing")
        elif relative not in expected:
            problems.append(f"digest: {relative} is not listed in metadata.json")
        elif actual[relative] is None:
            problems.append(f"digest: {relative} was not hashed")
        elif actual[relative] != expected[relative]:
            problems.append(f"digest: {relative} does not match metadata.json (sha256 {actual[relative]})")
    if not problems:
        return "verified", []
    outcome = "unverifiable" if all(p.endswith("was not hashed") for p in problems) else "failed"
    return outcome, problems


def _variant_text(view: CacheView, directory: str, name: str) -> str | None:
    path = f"{directory}/{name}"
    text = view.texts.get(path)
    if text is None:
        text = view.texts.get(view.resolve(path))
    return text


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def lock_entries(text: str) -> list[tuple[str, str | None, str, str]]:
    """``(repo, requested, commit, format)`` per locked kernel; ``requested`` is a version/revision or ``None``."""
    document = _json(text)
    out: list[tuple[str, str | None, str, str]] = []
    if not isinstance(document, list):
        return out
    for item in document:
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("repo_id"), str):  # legacy (≤0.16)
            out.append((item["repo_id"], None, str(item.get("sha", "")), "legacy"))
        dependency, lock = item.get("dependency"), item.get("lock")
        if isinstance(dependency, dict) and isinstance(lock, dict) and isinstance(dependency.get("repo-id"), str):
            requested = dependency.get("version", dependency.get("revision"))
            out.append((dependency["repo-id"], None if requested is None else str(requested),
                        str(lock.get("commit", "")), "current"))  # fmt: skip
    return out


def _lock_files(view: CacheView) -> Iterator[CacheEntry]:
    for path, text in sorted(view.texts.items()):
        if not path.endswith("kernels.lock"):
            continue
        entries = lock_entries(text)
        if not entries and text.strip():
            yield CacheEntry("hf-kernel-lock", path, "", notes=("kernels.lock is not a lock file kaudit can read",))
        for repo, requested, commit, fmt in entries:
            details = [("repository", repo), ("commit", commit), ("format", fmt)]
            if requested is not None:
                details.append(("requested", requested))
            notes = () if _FULL_COMMIT.match(commit) else (f"locked commit {commit!r} is not a full commit id",)
            yield CacheEntry("hf-kernel-lock", path, f"{repo}@{commit}", details=tuple(details),
                             layer=view.layer_of(path), notes=notes)  # fmt: skip


def _declared_dependencies(view: CacheView) -> Iterator[CacheEntry]:
    for path, text in sorted(view.texts.items()):
        if not path.endswith("pyproject.toml") or "tool.kernels" not in text:
            continue
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            continue
        dependencies = document.get("tool", {}).get("kernels", {}).get("dependencies", {})
        if not isinstance(dependencies, dict):
            continue
        for repo, requested in sorted(dependencies.items()):
            yield CacheEntry("hf-kernel-dependency", path, str(repo),
                             details=(("repository", str(repo)), ("requested", str(requested))),
                             layer=view.layer_of(path))  # fmt: skip
