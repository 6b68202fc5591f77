"""Output formats, by name."""

from __future__ import annotations

from kaudit.formats.interface import Format
from kaudit.formats.json import JsonFormat
from kaudit.formats.table import TableFormat

FORMATS: dict[str, type[Format]] = {"table": TableFormat, "json": JsonFormat}

__all__ = ["FORMATS", "Format", "JsonFormat", "TableFormat"]
