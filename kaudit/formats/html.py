"""One self-contained HTML page: the architecture coverage matrix (GPU binaries by fleet GPUs, as a colour grid),
the policy findings and the inventory. No script, no external resource: it opens from a CI artifact store or an
e-mail attachment as it is, and every value from the scanned image is escaped.

The matrix's columns are the policy's fleet GPUs; without a policy, the GPUs the image's machine code targets.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from kaudit import __version__
from kaudit.archs import Coverage, FleetArch, coverage
from kaudit.formats.interface import Format
from kaudit.inventory import ScanReport
from kaudit.rules.interface import judged_binaries

if TYPE_CHECKING:
    from kaudit.policy.model import PolicyResult

COLOURS = {Coverage.NATIVE: "#1b873f", Coverage.PTX_JIT: "#e3a008", Coverage.MISSING: "#c62828", None: "#d0d4d9"}
"""Cell colours of the coverage matrix; the tests find them in a screenshot."""
LABELS = {Coverage.NATIVE: "native", Coverage.PTX_JIT: "PTX JIT", Coverage.MISSING: "missing", None: "n/a"}
SEVERITY_COLOURS = {"critical": "#6d1a36", "high": "#b5322e", "medium": "#9a6700", "low": "#4f6fa8", "info": "#6b7280"}
"""Badge colours; none is a matrix colour, so a screenshot's matrix cells can be counted by colour."""

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1f2328}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px}
.meta{color:#57606a} table{border-collapse:collapse;margin:4px 0}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa} td.path{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all;max-width:640px}
table.matrix td{height:24px;padding:0 8px;white-space:nowrap}
table.matrix td.cell{width:96px;min-width:96px;padding:0}
table.matrix td.path{max-width:none;word-break:normal}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px}
.legend span{display:inline-block;width:14px;height:14px;margin:0 4px 0 12px;vertical-align:middle}
"""


def _fleet(report: ScanReport, policy: PolicyResult | None) -> list[FleetArch]:
    if policy is not None and policy.policy.fleet_archs:
        return list(policy.policy.fleet_archs)
    seen: dict[str, FleetArch] = {}
    for binary in report.binaries:
        for arch in (*binary.loadable.sass_archs, *binary.loadable.gfx_targets):
            try:
                gpu = FleetArch.parse(arch)
            except ValueError:
                continue  # a generic gfx target names no GPU
            seen.setdefault(gpu.name, gpu)
    return sorted(seen.values(), key=lambda g: (g.vendor, g.major, g.minor, g.name))


def _matrix(report: ScanReport, fleet: list[FleetArch]) -> str:
    if not fleet:
        return "<p>No fleet GPUs to judge against: give a policy with fleet archs.</p>"
    head = "".join(f"<th>{escape(gpu.name)}</th>" for gpu in fleet)
    rows = []
    for binary in judged_binaries(report):
        cells = []
        for gpu in fleet:
            state = coverage(binary.loadable, gpu)
            # colour only: every cell the same size and one colour (the legend names them, the title on hover)
            cells.append(f'<td class="cell" data-state="{LABELS[state]}" title="{escape(gpu.name)}: {LABELS[state]}" '
                         f'style="background:{COLOURS[state]}"></td>')  # fmt: skip
        rows.append(f'<tr><td class="path">{escape(binary.path)}</td>{"".join(cells)}</tr>')
    legend = "".join(f'<span style="background:{COLOURS[state]}"></span>{LABELS[state]}' for state in COLOURS)
    return (f'<table class="matrix" id="coverage"><tr><th>GPU binary</th>{head}</tr>{"".join(rows)}</table>'
            f'<p class="legend">{legend}</p>')  # fmt: skip


def _findings(policy: PolicyResult | None) -> str:
    if policy is None:
        return "<p>No policy was evaluated (run with <code>--policy</code>).</p>"
    if not policy.findings:
        return f"<p>Policy <b>{escape(policy.policy.name)}</b>: no findings from {len(policy.rules)} rules.</p>"
    rows = []
    for finding in policy.findings:
        violation = finding.violation
        colour = SEVERITY_COLOURS[finding.severity.value]
        mode = finding.mode.value + (f" (exempt: {finding.exempted_by.reason})" if finding.exempted_by else "")
        layer = f"{violation.layer.index} {violation.layer.digest[:19]}" if violation.layer else "-"
        rows.append(
            f"<tr><td>{escape(finding.rule.id)}<br>{escape(finding.rule.title)}</td>"
            f'<td><span class="badge" style="background:{colour}">{escape(finding.severity.value)}</span></td>'
            f'<td>{escape(mode)}</td><td class="path">{escape(violation.message)}</td><td>{escape(layer)}</td>'
            f"<td>{escape(violation.owner.purl) if violation.owner else '-'}</td><td>{escape(finding.fix)}</td></tr>"
        )
    notes = "".join(f"<li>{escape(note)}</li>" for note in policy.notes)
    return ('<table id="findings"><tr><th>rule</th><th>severity</th><th>mode</th><th>finding</th><th>layer</th>'
            f'<th>package</th><th>fix</th></tr>{"".join(rows)}</table>'
            + (f"<ul>{notes}</ul>" if notes else ""))  # fmt: skip


def _inventory(report: ScanReport) -> str:
    rows = []
    for binary in report.binaries:
        summary = binary.loadable
        rows.append(
            f'<tr><td class="path">{escape(binary.path)}</td><td>{escape(binary.format)}</td>'
            f"<td>{escape(' '.join(summary.sass_archs) or '-')}</td>"
            f"<td>{escape(' '.join(summary.ptx_archs) or '-')}</td>"
            f"<td>{escape(' '.join(summary.gfx_targets) or '-')}</td><td>{summary.kernel_count}</td>"
            f"<td>{binary.layer.index if binary.layer else '-'}</td>"
            f"<td>{escape(binary.owner.purl) if binary.owner else 'no package'}</td>"
            f'<td>{escape(binary.status.value)}</td><td class="path">{escape(binary.sha256)}</td></tr>'
        )
    table = ('<table id="inventory"><tr><th>path</th><th>format</th><th>SASS</th><th>PTX</th><th>gfx</th>'
             "<th>kernels</th><th>layer</th><th>package</th><th>status</th><th>sha256</th></tr>"
             f'{"".join(rows)}</table>')  # fmt: skip
    caches = "".join(
        f'<tr><td>{escape(e.type)}</td><td class="path">{escape(e.key)}</td>'
        f"<td>{escape(' '.join(e.archs) or '-')}</td>"
        f'<td class="path">{escape(e.path)}</td><td>{escape("; ".join(e.notes) or "-")}</td></tr>'
        for e in report.caches
    )
    if caches:
        table += ('<h2>Runtime kernel caches</h2><table id="caches"><tr><th>type</th><th>key</th><th>archs</th>'
                  f"<th>path</th><th>notes</th></tr>{caches}</table>")  # fmt: skip
    if report.first_use:
        items = "".join(f"<li><b>{escape(s.kind)}</b> ({escape(s.evidence)}): {escape(s.detail)}</li>"
                        for s in report.first_use)  # fmt: skip
        table += f'<h2>Fetched or compiled at first use</h2><ul id="first-use">{items}</ul>'
    return table


class HtmlFormat(Format):
    name = "html"
    is_manifest = False

    def render(self, report: ScanReport, policy: PolicyResult | None = None) -> str:
        fleet = _fleet(report, policy)
        image = report.image
        parts = []
        if image is not None:
            parts.append(f"{escape(image.manifest_digest)} · {escape(image.platform)} · {len(image.layers)} layers")
        if policy is not None:
            parts.append(f"policy <b>{escape(policy.policy.name)}</b> ({', '.join(escape(g.name) for g in fleet)})")
        parts += [f"{len(report.binaries)} GPU binaries", f"kaudit {escape(__version__)}"]
        title = f"kaudit: GPU code in {escape(report.subject)}"
        return (
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{_STYLE}</style></head><body>"
            f'<h1>{title}</h1><p class="meta">{" · ".join(parts)}</p>'
            f"<h2>Architecture coverage</h2>{_matrix(report, fleet)}"
            f"<h2>Findings</h2>{_findings(policy)}"
            f"<h2>Inventory</h2>{_inventory(report)}"
            "</body></html>\n"
        )
