"""Python packages: ``<name>-<version>.dist-info/RECORD`` (csv: path, ``sha256=<urlsafe b64>``, size).

RECORD paths are relative to the directory holding the dist-info (``site-packages``); entries such as
``../../bin/tool`` reach outside it and are resolved against it.
"""

from __future__ import annotations

import base64
import csv
import io
import posixpath
import re

from kaudit.owners.model import PackageFiles

_DIST_INFO = re.compile(r"(^|/)(?P<name>[^/]+?)-(?P<version>[^/-]+)\.dist-info/RECORD$")
_METADATA_FIELD = re.compile(r"^(Name|Version):\s*(.+?)\s*$", re.M)


def read_record(path: str, text: str, metadata: str | None) -> PackageFiles | None:
    """The package of one RECORD file (``None`` if ``path`` is not a dist-info RECORD)."""
    match = _DIST_INFO.search(path)
    if match is None:
        return None
    name, version = match.group("name"), match.group("version")
    if metadata:
        fields = dict(_METADATA_FIELD.findall(metadata[:65536]))
        name, version = fields.get("Name", name), fields.get("Version", version)
    site = posixpath.dirname(posixpath.dirname(path))
    files: list[str] = []
    hashes: list[tuple[str, str]] = []
    try:
        rows = list(csv.reader(io.StringIO(text.replace("\0", ""))))
    except csv.Error:
        return None  # not a RECORD kaudit can read; the file stays unattributed
    for row in rows:
        if not row or not row[0]:
            continue
        relative = row[0]
        full = posixpath.normpath(posixpath.join(site, relative)).lstrip("/")
        if full.startswith(".."):
            continue  # climbs above the image root
        files.append(full)
        if len(row) > 1 and row[1].startswith("sha256="):
            encoded = row[1][len("sha256=") :]
            try:
                raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            except ValueError:
                continue
            hashes.append((full, raw.hex()))
    return PackageFiles("pypi", name, version, path, tuple(files), hashes=tuple(hashes))
