"""What every package-database reader produces."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PackageFiles:
    """A package and the files its database says it installed (image paths, no leading ``/``)."""

    type: str
    """``pypi``, ``deb``, ``rpm``, ``conda`` (the purl type)."""
    name: str
    version: str | None
    database: str
    """The database file that records the package."""
    files: tuple[str, ...]
    arch: str | None = None
    build: str | None = None
    """conda build string."""
    hashes: tuple[tuple[str, str], ...] = ()
    """``(path, sha256 hex)`` pairs the database records (RECORD), for tamper checks."""
