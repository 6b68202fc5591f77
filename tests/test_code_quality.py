"""The code base stays ruff- and mypy-clean (both are in the test extra)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_ruff_lint_and_format() -> None:
    lint = _run("ruff", "check", "kaudit", "webhook", "tests", "benchmarks")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    formatting = _run("ruff", "format", "--check", "kaudit", "webhook", "tests", "benchmarks")
    assert formatting.returncode == 0, formatting.stdout + formatting.stderr


def test_mypy_strict() -> None:
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
