"""The HTML report rendered by Debian's Chromium, headless: the DOM Chromium builds and a screenshot whose
coverage-matrix colours are counted.

The scanned tree holds four real fixtures whose coverage of the fleet (sm_80, sm_90, gfx90a) is known:

================== ======= ======= =======
fixture             sm_80   sm_90   gfx90a
================== ======= ======= =======
kern_sm_80.cubin    native  missing n/a
kern80.ptx          PTX JIT PTX JIT n/a
kern_sm_90a.cubin   missing native  n/a
co_gfx90a.hsaco       n/a     n/a     native
================== ======= ======= =======
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from kaudit.formats.html import COLOURS
from tests.conftest import fixture_path, missing_tool

EXPECTED = {
    "kern_sm_80.cubin": ["native", "missing", "n/a"],
    "kern80.ptx": ["PTX JIT", "PTX JIT", "n/a"],
    "kern_sm_90a.cubin": ["missing", "native", "n/a"],
    "co_gfx90a.hsaco": ["n/a", "n/a", "native"],
}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--force-device-scale-factor=1"]  # fmt: skip


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        missing_tool("chromium (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("html")
    tree = work / "tree"
    tree.mkdir()
    for name in EXPECTED:
        shutil.copy(fixture_path(name), tree / name)
    (work / "policy.yaml").write_text(
        "apiVersion: kaudit.dev/v1\nkind: Policy\nname: html-test\nfleet:\n  archs: [sm_80, sm_90, gfx90a]\n"
    )
    html = work / "report.html"
    run = subprocess.run([sys.executable, "-m", "kaudit", "scan", "path", str(tree), "--policy",
                          str(work / "policy.yaml"), "-o", f"html={html}"], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 1, run.stderr  # KA303 (missing code) is critical and enforced
    return html


def _chromium(chromium: str, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = page.parent / "profile"
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_rendered_dom_has_the_matrix_findings_and_inventory(chromium: str, page: Path) -> None:
    dom = _chromium(chromium, page, "--dump-dom").stdout
    assert "<script" not in page.read_text() and "http" not in page.read_text().split("<body>", 1)[1]
    header = re.search(r'<table class="matrix" id="coverage"><tbody><tr><th>GPU binary</th>(.*?)</tr>', dom)
    assert header is not None and re.findall(r"<th>([^<]+)</th>", header.group(1)) == ["sm_80", "sm_90", "gfx90a"]
    for name, states in EXPECTED.items():
        row = re.search(rf'<td class="path">[^<]*/{re.escape(name)}</td>(.*?)</tr>', dom)
        assert row is not None, name
        assert re.findall(r'data-state="([^"]+)"', row.group(1)) == states, name
    findings = re.search(r'<table id="findings">(.*?)</table>', dom, re.S)
    assert findings is not None and "KA303" in findings.group(1) and "KA302" in findings.group(1)
    inventory = re.search(r'<table id="inventory">(.*?)</table>', dom, re.S)
    assert inventory is not None and all(name in inventory.group(1) for name in EXPECTED)


def test_screenshot_shows_the_coverage_grid(chromium: str, page: Path) -> None:
    from PIL import Image

    shot = page.parent / "report.png"
    _chromium(chromium, page, "--window-size=1600,900", f"--screenshot={shot}")
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 24) or []
    pixels: Counter[tuple[int, int, int]] = Counter({rgb: count for count, rgb in colours})
    expected = Counter(state for states in EXPECTED.values() for state in states)
    legend = 14 * 14  # one legend square per colour
    per_cell = {}
    for coverage, colour in COLOURS.items():
        label = {"native": "native", "ptx-jit": "PTX JIT", "missing": "missing"}.get(str(coverage), "n/a")
        rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        count = pixels[rgb] - legend
        per_cell[label] = count / expected[label]
    # every cell is one solid colour of the same size: the colour counts are in the proportions of the table above
    sizes = list(per_cell.values())
    assert min(sizes) > 1500, per_cell  # at least 96 x 20 pixels per cell: the grid is really drawn
    assert max(sizes) / min(sizes) < 1.05, per_cell
