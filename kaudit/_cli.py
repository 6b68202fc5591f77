"""The ``kaudit`` command line: argument parsing and wiring only; the work is in :mod:`kaudit.scan`.

Exit codes: 0 success, 2 usage or scan error (a path that cannot be read, or with ``--strict`` any
problem met while scanning).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from kaudit import __version__
from kaudit.errors import Error, UsageError
from kaudit.formats import FORMATS, Format, format_class
from kaudit.inventory import FindingKind, ScanReport

EXIT_OK = 0
EXIT_ERROR = 2


@dataclass(frozen=True)
class OutputSpec:
    """One ``-o FORMAT[=FILE]``; ``path`` ``None`` means standard output."""

    format: str
    path: str | None


def parse_output(value: str) -> OutputSpec:
    name, _, path = value.partition("=")
    if name not in FORMATS:
        raise argparse.ArgumentTypeError(f"unknown format {name!r}; choose from {', '.join(FORMATS)}")
    if _ and not path:
        raise argparse.ArgumentTypeError(f"-o {value}: a file name must follow '='")
    return OutputSpec(name, path or None)


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {value!r}")
    return int(value)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kaudit", description="Inventory and audit GPU device code.")
    parser.add_argument("--version", action="version", version=f"kaudit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    scan = commands.add_parser("scan", help="inventory GPU device code")
    targets = scan.add_subparsers(dest="target", required=True, parser_class=_Parser)
    path = targets.add_parser(
        "path",
        help="scan files or directory trees (rootfs, site-packages, wheels)",
        description="Find GPU device code by content in files, directory trees, wheels and static archives.",
    )
    path.add_argument("paths", nargs="+", metavar="PATH", help="a file or directory to scan")
    path.add_argument(
        "-o",
        "--output",
        action="append",
        type=parse_output,
        metavar="FORMAT[=FILE]",
        help=f"output format ({', '.join(FORMATS)}), to FILE or standard output; may repeat (default: table)",
    )
    path.add_argument("--strict", action="store_true", help="exit 2 when any file could not be fully read")
    path.add_argument(
        "-j",
        "--jobs",
        type=_positive_int,
        metavar="N",
        help="parse files in N worker processes (default: the CPUs available; 1: in this process)",
    )
    path.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on standard error (auto: only on a terminal)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "scan" and args.target == "path":
            return _scan_path(args)
        raise UsageError(f"unknown command {args.command!r}")
    except Error as exc:
        print(f"kaudit: error: {exc.diagnostics()}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("kaudit: interrupted", file=sys.stderr)
        return 130


def _scan_path(args: argparse.Namespace) -> int:
    from kaudit.scan import Scanner, ScanOptions

    outputs: list[OutputSpec] = args.output or [OutputSpec("table", None)]
    if sum(1 for o in outputs if o.path is None) > 1:
        raise UsageError("only one -o may write to standard output; give the others a file (-o json=FILE)")
    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        raise UsageError(f"no such file or directory: {', '.join(missing)}")
    show_progress = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    with _progress(show_progress, args.paths, force=args.progress == "always") as advance:
        report = Scanner(ScanOptions(jobs=args.jobs)).scan_paths(args.paths, progress=advance)
    for spec in outputs:
        _write(spec, report)
    unreadable_roots = [f for f in report.findings if f.path in args.paths and f.kind is FindingKind.UNREADABLE]
    if unreadable_roots or (args.strict and report.findings):
        return EXIT_ERROR
    return EXIT_OK


def _write(spec: OutputSpec, report: ScanReport) -> None:
    if spec.format == "table":
        from kaudit.formats.table import TableFormat

        color = spec.path is None and sys.stdout.isatty()
        width = os.get_terminal_size().columns if color else None
        renderer: Format = TableFormat(width=width, color=color)
    else:
        renderer = format_class(spec.format)()
    if spec.path is None:
        renderer.write(report, sys.stdout)
        sys.stdout.flush()
        return
    try:
        with open(spec.path, "w", encoding="utf-8") as handle:
            renderer.write(report, handle)
    except OSError as exc:
        raise UsageError(f"cannot write {spec.format} output to {spec.path}: {exc.strerror}") from exc


@contextmanager
def _progress(enabled: bool, paths: Sequence[str], force: bool) -> Iterator[Callable[[str, int], None] | None]:
    """A rich progress bar over bytes examined, on standard error; nothing when disabled."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    total = sum(_tree_size(p) for p in paths)
    with Progress(
        TextColumn("scanning"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[current]}", markup=False),
        console=Console(stderr=True, force_terminal=force or None),
        transient=True,
    ) as progress:
        task = progress.add_task("scan", total=total or None, current="")

        def advance(path: str, bytes_seen: int) -> None:
            progress.update(task, completed=bytes_seen, current=os.path.basename(path)[:40])

        yield advance


def _tree_size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            total += info.st_size
    return total
