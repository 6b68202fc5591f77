"""Join the package databases of an image (or a root filesystem) into one path → owner index."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from kaudit.inventory import Owner
from kaudit.owners.conda import read_conda_meta
from kaudit.owners.dpkg import installed_packages, read_list, read_md5sums
from kaudit.owners.model import PackageFiles
from kaudit.owners.python import read_record

_OS_RELEASE_ID = re.compile(r'^ID="?([^"\n]+)"?\s*$', re.M)
# When two databases claim a file, the most specific one wins: a wheel inside a conda env inside a distro.
_PRIORITY = {"pypi": 0, "conda": 1, "deb": 2, "rpm": 3}


@dataclass
class OwnerIndex:
    """Which package installed each path, with the hash its database recorded when it did (RECORD)."""

    owners: dict[str, Owner] = field(default_factory=dict)
    recorded_hashes: dict[str, str] = field(default_factory=dict)

    def owner_of(self, path: str) -> Owner | None:
        return self.owners.get(path)


def purl(package: PackageFiles, distro: str | None) -> str:
    name = quote(package.name.lower().replace("_", "-") if package.type == "pypi" else package.name, safe="")
    namespace = f"{distro}/" if package.type in ("deb", "rpm") and distro else ""
    text = f"pkg:{package.type}/{namespace}{name}"
    if package.version:
        text += "@" + quote(package.version, safe="")
    qualifiers = [(k, v) for k, v in (("arch", package.arch), ("build", package.build)) if v]
    if qualifiers:
        text += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in qualifiers)
    return text


def build_index(
    texts: dict[str, str], binary_packages: list[PackageFiles], resolve: Callable[[str], str]
) -> OwnerIndex:
    """The index over ``texts`` (package database files by path) and already-read binary databases (RPM);
    every database path is resolved through the image's symlinks (``lib`` → ``usr/lib``)."""
    distro = None
    for path in ("etc/os-release", "usr/lib/os-release"):
        match = _OS_RELEASE_ID.search(texts.get(path, ""))
        if match:
            distro = match.group(1).strip().lower()
            break
    packages = list(binary_packages)
    status = texts.get("var/lib/dpkg/status", "")
    installed = installed_packages(status)
    for path, text in texts.items():
        if path.startswith("var/lib/dpkg/status.d/") and not path.endswith(".md5sums"):
            installed.update(installed_packages(text))
    for path, text in sorted(texts.items()):
        found: PackageFiles | None = None
        if path.endswith(".dist-info/RECORD"):
            found = read_record(path, text, texts.get(posixpath.dirname(path) + "/METADATA"))
        elif path.startswith("var/lib/dpkg/info/") and path.endswith(".list"):
            found = read_list(path, text, installed)
        elif path.startswith("var/lib/dpkg/status.d/") and path.endswith(".md5sums"):
            found = read_md5sums(path, text, installed)
        elif "/conda-meta/" in f"/{path}" and path.endswith(".json"):
            found = read_conda_meta(path, text)
        if found is not None:
            packages.append(found)
    index = OwnerIndex()
    ranked: dict[str, int] = {}
    for package in sorted(packages, key=lambda p: (_PRIORITY.get(p.type, 9), p.name)):
        owner = Owner(package.type, package.name, package.version, purl(package, distro), package.database)
        rank = _PRIORITY.get(package.type, 9)
        for file in package.files:
            canonical = resolve(file)
            if canonical not in ranked or rank < ranked[canonical]:
                ranked[canonical] = rank
                index.owners[canonical] = owner
        for file, digest in package.hashes:
            index.recorded_hashes[resolve(file)] = digest
    return index
