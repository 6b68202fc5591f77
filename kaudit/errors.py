"""Error hierarchy: every error kaudit raises on purpose carries a message an operator can act on.

The CLI catches :class:`Error` once and prints :meth:`Error.diagnostics`; anything else is a bug.
"""

from __future__ import annotations


class Error(Exception):
    """Base of every error kaudit raises deliberately."""

    def diagnostics(self) -> str:
        """A human-readable explanation, written for the person running kaudit."""
        return str(self)


class UsageError(Error):
    """The command line or its inputs are wrong (exit code 2)."""


class MalformedBinary(Error):
    """A GPU or host binary does not follow its format; ``offset`` locates the problem when known."""

    def __init__(self, reason: str, *, offset: int | None = None) -> None:
        self.reason = reason
        self.offset = offset
        super().__init__(reason if offset is None else f"{reason} (at offset {offset:#x})")


class LimitExceeded(MalformedBinary):
    """Input asks for more than kaudit's safety limits allow (decompressed size, entry counts, depth)."""


class UnsupportedFormat(Error):
    """The input is recognised but kaudit cannot read it (e.g. a missing optional library)."""
