"""conda packages: ``<prefix>/conda-meta/<name>-<version>-<build>.json`` (``files`` relative to the prefix)."""

from __future__ import annotations

import json
import posixpath

from kaudit.owners.model import PackageFiles


def read_conda_meta(path: str, text: str) -> PackageFiles | None:
    try:
        meta = json.loads(text)
    except ValueError:
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        return None
    prefix = posixpath.dirname(posixpath.dirname(path))
    relative = meta.get("files")
    if not isinstance(relative, list):
        paths = (meta.get("paths_data") or {}).get("paths") if isinstance(meta.get("paths_data"), dict) else None
        relative = [p.get("_path") for p in paths or [] if isinstance(p, dict)]
    files = tuple(posixpath.normpath(posixpath.join(prefix, f)).lstrip("/") for f in relative if isinstance(f, str))
    version = meta.get("version") if isinstance(meta.get("version"), str) else None
    build = meta.get("build") if isinstance(meta.get("build"), str) else None
    return PackageFiles("conda", meta["name"], version, path, files, build=build)
