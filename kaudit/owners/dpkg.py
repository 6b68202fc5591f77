"""Debian packages: ``var/lib/dpkg/status`` (stanzas) and ``var/lib/dpkg/info/<package>[:<arch>].list``.

Only stanzas whose ``Status`` ends in ``installed`` count. Distroless images keep one stanza file per package in
``var/lib/dpkg/status.d/`` (with the file list in a ``.md5sums`` beside it, not read here).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

from kaudit.owners.model import PackageFiles


def stanzas(text: str) -> Iterator[dict[str, str]]:
    """The ``Field: value`` paragraphs of a dpkg control file (continuation lines joined)."""
    fields: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, None
        elif line[0] in " \t" and last is not None:
            fields[last] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            last = key.strip()
            fields[last] = value.strip()
    if fields:
        yield fields


def installed_packages(text: str) -> dict[str, tuple[str | None, str | None]]:
    """``{package: (version, architecture)}`` for every installed package in a status file."""
    out: dict[str, tuple[str | None, str | None]] = {}
    for fields in stanzas(text):
        name = fields.get("Package")
        if name and fields.get("Status", "install ok installed").endswith(" installed"):
            out[name] = (fields.get("Version"), fields.get("Architecture"))
    return out


def read_list(path: str, text: str, installed: dict[str, tuple[str | None, str | None]]) -> PackageFiles | None:
    """The package of one ``info/<package>[:<arch>].list`` file, if the status file says it is installed."""
    name = posixpath.basename(path)[: -len(".list")]
    package = name.split(":", 1)[0]
    if package not in installed:
        return None
    version, arch = installed[package]
    files = tuple(line.strip().lstrip("/") for line in text.splitlines() if line.strip() not in ("", "/."))
    return PackageFiles("deb", package, version, path, files, arch)


def read_md5sums(path: str, text: str, installed: dict[str, tuple[str | None, str | None]]) -> PackageFiles | None:
    """Distroless images: ``status.d/<package>.md5sums`` (``<md5>  <path relative to />``) lists the files."""
    package = posixpath.basename(path)[: -len(".md5sums")].split(":", 1)[0]
    if package not in installed:
        return None
    version, arch = installed[package]
    files = tuple(
        line.split(None, 1)[1].strip().lstrip("/") for line in text.splitlines() if len(line.split(None, 1)) == 2
    )
    return PackageFiles("deb", package, version, path, files, arch)
