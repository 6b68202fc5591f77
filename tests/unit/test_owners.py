"""Package attribution on the real package-database fixtures (built with dpkg, rpm, pip and rattler)."""

from __future__ import annotations

import json

import pytest

from kaudit.errors import MalformedBinary
from kaudit.owners.dpkg import installed_packages
from kaudit.owners.rpm import parse_header, read_rpmdb
from tests.conftest import FIXTURES

ROOTFS = FIXTURES / "rootfs"


def test_rpmdb_lists_packages_and_files() -> None:
    packages = read_rpmdb((ROOTFS / "rpm/var/lib/rpm/rpmdb.sqlite").read_bytes(), "var/lib/rpm/rpmdb.sqlite")
    by_name = {p.name: p for p in packages}
    hip = by_name["kdemo-hip"]
    assert (hip.version, hip.arch) == ("2.2.0-1.el9", "x86_64")
    assert "usr/lib64/libkdemo_hip.so" in hip.files
    assert "usr/include/kdemo/kdemo_hip.h" in by_name["kdemo-hip-devel"].files


def test_expected_owners_match_the_package_managers_answers() -> None:
    """expected_owners.json was produced by dpkg-query -S, rpm -qf, importlib.metadata and rattler."""
    from kaudit.image_scan import ImageScanOptions, scan_image

    expected = json.loads((ROOTFS / "expected_owners.json").read_text())
    checked = 0
    for name in ("dpkg", "rpm", "python", "conda", "unowned"):
        report = scan_image(f"dir:{ROOTFS / name}", ImageScanOptions())
        answers = expected.get(name, {})
        for binary in report.binaries:
            answer = answers.get(binary.path)
            if answer is None or answer.get("installed") is False or not answer.get("package"):
                assert binary.owner is None, (name, binary.path)
            else:
                assert binary.owner is not None and binary.owner.name == answer["package"], (name, binary.path)
                # rpm reports version and release apart; kaudit keeps RPM's version-release, as purls do
                assert (binary.owner.version or "").startswith(answer.get("version", ""))
            checked += 1
    assert checked == 6  # dpkg: 2, rpm, python, conda, unowned


def test_dpkg_status_keeps_installed_packages_only() -> None:
    installed = installed_packages((ROOTFS / "dpkg/var/lib/dpkg/status").read_text())
    assert "kdemo-cuda" in installed and "kdemo-legacy" not in installed  # config-files only


@pytest.mark.parametrize("blob", [b"", b"\0\0\0\x05", b"\0\0\x10\0\0\0\0\x10" + b"\0" * 16, b"\xff" * 8])
def test_hostile_rpm_headers_are_refused(blob: bytes) -> None:
    with pytest.raises(MalformedBinary):
        parse_header(blob)


def test_a_file_that_is_not_sqlite_is_refused() -> None:
    with pytest.raises(MalformedBinary):
        read_rpmdb(b"not a database" * 100, "var/lib/rpm/rpmdb.sqlite")
