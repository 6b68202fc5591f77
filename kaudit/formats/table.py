"""The default human-readable table (rich): one row per GPU binary, then the scan findings."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kaudit.formats.interface import Format
from kaudit.inventory import ArchSummary, ScanReport

if TYPE_CHECKING:
    from kaudit.policy.model import PolicyResult


def _archs(values: tuple[str, ...]) -> str:
    return " ".join(values) if values else "-"


def _relocatable(summary: ArchSummary) -> str:
    if not summary.object_count:
        return "-"
    archs = " ".join((*summary.sass_archs, *summary.ptx_archs, *summary.gfx_targets))
    return f"{summary.object_count} obj {archs}".strip()


def _kernels(summary: ArchSummary) -> str:
    ptx = f" (+{summary.ptx_kernel_count} PTX)" if summary.ptx_kernel_count else ""
    return f"{summary.kernel_count}{ptx}"


def _relative(path: str, subject: str) -> str:
    """Paths under the scanned directory are shown relative to it; the title names the directory."""
    prefix = subject.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


class TableFormat(Format):
    name = "table"
    is_manifest = False

    def __init__(self, width: int | None = None, color: bool = False) -> None:
        self._width = width
        self._color = color

    def render(self, report: ScanReport, policy: PolicyResult | None = None) -> str:
        buffer = io.StringIO()
        console = Console(file=buffer, width=self._width or 200, force_terminal=self._color, no_color=not self._color)
        image = report.image
        title = f"GPU device code in {report.subject}"
        if image is not None:
            title += f" ({image.manifest_digest[:19]}, {image.platform}, {len(image.layers)} layers)"
        table = Table(title=Text(title), title_justify="left")
        paths = [_relative(b.path, report.subject) for b in report.binaries]
        table.add_column("path", overflow="fold", min_width=min(max(map(len, paths), default=4), 48))
        columns = ["format", "SASS", "PTX", "gfx", "kernels", "relocatable", "stubs"]
        if image is not None:
            columns += ["layer", "owner"]
        for column in columns:
            table.add_column(column, overflow="fold", max_width=22)
        table.add_column("sha256", no_wrap=True)
        for binary in report.binaries:
            cells = [
                _relative(binary.path, report.subject),
                binary.format,
                _archs(binary.loadable.sass_archs),
                _archs(binary.loadable.ptx_archs),
                _archs(binary.loadable.gfx_targets),
                _kernels(binary.loadable),
                _relocatable(binary.relocatable),
                str(binary.link_stub_count or "-"),
            ]
            if image is not None:
                layer = str(binary.layer.index) if binary.layer else "-"
                if binary.status.value != "present":
                    layer += f" ({binary.status.value} in {binary.removed_in_layer})"
                cells += [layer, binary.owner.purl if binary.owner else "no package"]
            cells.append(binary.sha256[:12])
            table.add_row(*(Text(cell) for cell in cells))  # Text: paths may contain rich markup
        console.print(table)
        stats = report.stats
        console.print(
            f"{len(report.binaries)} GPU binaries in {stats.files_seen} files "
            f"({stats.bytes_seen / 1e6:.1f} MB) in {stats.duration_s:.2f} s",
            highlight=False,
        )
        if report.caches:
            caches = Table(title=Text("Runtime kernel caches"), title_justify="left")
            for column in ("type", "key", "archs", "path", "notes"):
                caches.add_column(column, overflow="fold", max_width=48 if column in ("key", "path") else 30)
            for entry in report.caches:
                cells = [entry.type, entry.key, _archs(entry.archs), _relative(entry.path, report.subject),
                         "; ".join(entry.notes) or "-"]  # fmt: skip
                caches.add_row(*(Text(cell) for cell in cells))
            console.print(caches)
        if report.first_use:
            console.print("Fetched or compiled at first use:", style="bold", highlight=False)
            for signal in report.first_use:
                console.print(f"  {signal.kind}: {signal.evidence}: {signal.detail}", highlight=False, markup=False)
        if report.findings:
            console.print(f"{len(report.findings)} problems:", style="bold", highlight=False)
            for finding in report.findings:
                where = f" [{finding.location}]" if finding.location else ""
                console.print(f"  {finding.kind.value}: {finding.path}{where}: {finding.reason}", highlight=False,
                              markup=False)  # fmt: skip
        if policy is not None:
            _policy_table(console, policy)
        return buffer.getvalue()


def _policy_table(console: Console, result: PolicyResult) -> None:
    fleet = ", ".join(gpu.name for gpu in result.policy.fleet_archs) or "no fleet archs"
    if not result.findings:
        console.print(f"Policy {result.policy.name} ({fleet}): no findings from {len(result.rules)} rules",
                      highlight=False, markup=False)  # fmt: skip
    else:
        table = Table(title=Text(f"Policy {result.policy.name} ({fleet})"), title_justify="left")
        for column in ("rule", "severity", "mode", "finding", "layer", "owner", "fix"):
            table.add_column(column, overflow="fold", max_width=60 if column in ("finding", "fix") else 24)
        for finding in result.findings:
            violation = finding.violation
            mode = finding.mode.value + (" (exempt)" if finding.exempted_by else "")
            cells = [finding.rule.id, finding.severity.value, mode, violation.message,
                     str(violation.layer.index) if violation.layer else "-",
                     violation.owner.purl if violation.owner else "-", finding.fix]  # fmt: skip
            table.add_row(*(Text(cell) for cell in cells))
        console.print(table)
    for note in result.notes:
        console.print(f"  note: {note}", highlight=False, markup=False)
