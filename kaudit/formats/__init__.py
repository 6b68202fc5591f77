"""Output formats, by name; each is imported only when asked for, to keep start-up lean."""

from __future__ import annotations

from importlib import import_module

from kaudit.formats.interface import Format

FORMATS: dict[str, str] = {
    "table": "kaudit.formats.table:TableFormat",
    "json": "kaudit.formats.json:JsonFormat",
    "sarif": "kaudit.formats.sarif:SarifFormat",
    "junit": "kaudit.formats.junit:JunitFormat",
    "cyclonedx-json": "kaudit.formats.cyclonedx:CycloneDxJson",
    "cyclonedx-xml": "kaudit.formats.cyclonedx:CycloneDxXml",
    "html": "kaudit.formats.html:HtmlFormat",
    "admission": "kaudit.formats.admission:AdmissionFormat",
}


def format_class(name: str) -> type[Format]:
    """The :class:`Format` implementation registered as ``name``."""
    module, _, attribute = FORMATS[name].partition(":")
    cls: type[Format] = getattr(import_module(module), attribute)
    return cls


__all__ = ["FORMATS", "Format", "format_class"]
