"""The ``kaudit`` command as a user runs it: a real subprocess, real files, exit codes and outputs."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import ROOT, fixture_path

EXAMPLE = ROOT / "examples" / "inference-rootfs"
SCHEMA = json.loads((ROOT / "docs" / "schema" / "scan-report-v1.json").read_text())


def kaudit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kaudit", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)  # fmt: skip


def test_version() -> None:
    result = kaudit("--version")
    assert result.returncode == 0 and result.stdout.startswith("kaudit 0.")


def test_bundled_example_as_a_table() -> None:
    result = kaudit("scan", "path", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar on a pipe
    out = result.stdout
    assert "demo_kernels/_cuda_ops" in out and "sm_80 sm_90 sm_90a" in out and "gfx90a:xnack-" in out
    assert "6 GPU binaries in 19 files" in out
    assert "hf-kernel-hub" in out and "pulled by a floating revision" in out  # the example's Kernel Hub cache


def test_json_validates_and_several_outputs(tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    result = kaudit("scan", "path", str(EXAMPLE), "-o", f"json={report_file}", "-o", "table")
    assert result.returncode == 0, result.stderr
    assert "GPU device code in" in result.stdout
    document = json.loads(report_file.read_text())
    jsonschema.validate(document, SCHEMA)
    by_name = {Path(b["path"]).name: b for b in document["binaries"]}
    assert by_name["_cuda_ops.so"]["loadable"]["sass_archs"] == ["sm_80", "sm_90", "sm_90a", "sm_100", "sm_120"]
    assert by_name["_jit_ops.so"]["loadable"] == {
        "sass_archs": [], "ptx_archs": ["compute_90"], "gfx_targets": [], "kernel_count": 0, "ptx_kernel_count": 2,
        "object_count": 1,
    }  # fmt: skip
    assert by_name["_rocm_ops.so"]["gpu_runtimes"] == []
    assert document["schema_version"] == "1.2" and document["stats"]["files_seen"] == 19
    assert {c["type"] for c in document["caches"]} == {"hf-kernel-hub", "triton"}


def test_json_to_stdout_is_the_whole_output() -> None:
    result = kaudit("scan", "path", str(fixture_path("kern_sm_90a.cubin")), "-o", "json")
    document = json.loads(result.stdout)
    jsonschema.validate(document, SCHEMA)
    (binary,) = document["binaries"]
    assert binary["device_code"][0]["kernels"][0]["demangled"] == "block_sum(float const*, float*, int)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scan", "path", "/no/such/dir"], "no such file or directory: /no/such/dir"),
        (["scan", "path", "x", "-o", "yaml"], "unknown format 'yaml'"),
        (["scan", "path", "x", "-o", "json="], "a file name must follow"),
        (["scan", "path", str(EXAMPLE), "-o", "json", "-o", "table"], "only one -o may write to standard output"),
        (["scan", "path", str(EXAMPLE), "-o", "json=/no/such/dir/out.json"], "cannot write json output"),
        (["scan"], "required"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_one_clear_line(args: list[str], message: str) -> None:
    result = kaudit(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_problems_are_reported_and_strict_fails(tmp_path: Path) -> None:
    (tmp_path / "good.cubin").write_bytes(fixture_path("kern_sm_80.cubin").read_bytes())
    (tmp_path / "bad.so").write_bytes(fixture_path("libk_plain.so").read_bytes()[:3000])
    lenient = kaudit("scan", "path", str(tmp_path))
    assert lenient.returncode == 0
    assert "1 problems:" in lenient.stdout and "bad.so" in lenient.stdout and "past the end" in lenient.stdout
    strict = kaudit("scan", "path", "--strict", str(tmp_path), "-o", "json")
    assert strict.returncode == 2
    findings = json.loads(strict.stdout)["findings"]
    assert [(Path(f["path"]).name, f["kind"]) for f in findings] == [("bad.so", "malformed")]


def test_progress_bar_only_when_asked_or_on_a_terminal() -> None:
    forced = kaudit("scan", "path", str(EXAMPLE), "--progress", "always", "-o", "json=/dev/null")
    assert forced.returncode == 0 and "scanning" in forced.stderr
    never = kaudit("scan", "path", str(EXAMPLE), "--progress", "never", "-o", "json=/dev/null")
    assert never.stderr == ""


def test_wheels_are_read_in_place(tmp_path: Path) -> None:
    wheel = tmp_path / "demo-1.0-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("demo/_C.so", fixture_path("libk_lz4all.so").read_bytes())
        archive.writestr("demo/kernels.hsaco", fixture_path("co_gfx90a.hsaco").read_bytes())
        archive.writestr("demo/__init__.py", "")
    result = kaudit("scan", "path", str(wheel), "-o", "json")
    document = json.loads(result.stdout)
    assert [b["path"].split("!/")[1] for b in document["binaries"]] == ["demo/_C.so", "demo/kernels.hsaco"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [wheel.name]  # nothing extracted


def test_start_up_is_lean() -> None:
    """lief (~235 ms import) is loaded only for PE/Mach-O files; --version loads no parser or renderer."""
    probe = (
        "import sys; from kaudit._cli import main; rc = main(sys.argv[1:]); "
        "print(sorted(m for m in ('lief', 'elftools', 'rich', 'zstandard') if m in sys.modules))"
    )
    heavy = "('lief', 'elftools', 'rich', 'zstandard', 'lz4')"
    cli_only = f"import sys, kaudit._cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", cli_only], capture_output=True, text=True).stdout.strip() == "[]"
    scan_example = ["scan", "path", "-j1", str(EXAMPLE), "-o", "json=/dev/null"]
    elf_only = subprocess.run([sys.executable, "-c", probe, *scan_example], capture_output=True, text=True)
    assert elf_only.stdout.strip().splitlines()[-1] == "['elftools', 'zstandard']"
    pe = subprocess.run([sys.executable, "-c", probe, "scan", "path", "-j1", str(fixture_path("kern_pe.dll")),
                         "-o", "json=/dev/null"], capture_output=True, text=True)  # fmt: skip
    assert "'lief'" in pe.stdout.strip().splitlines()[-1]


def test_closed_pipe_ends_quietly() -> None:
    """``kaudit … | head`` must not end in a traceback when head stops reading."""
    # the fixture tree's report (about 120 KB) is larger than a pipe holds, so the writer meets the closed pipe
    command = [sys.executable, "-m", "kaudit", "scan", "path", str(fixture_path("libk_plain.so").parent), "-o", "json"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.read(100)
        process.stdout.close()
        errors = process.stderr.read().decode()
        process.wait(timeout=60)
    assert first.startswith(b'{"$schema"')
    assert "Traceback" not in errors
    assert process.returncode == 141
