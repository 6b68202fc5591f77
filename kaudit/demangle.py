"""C++ name demangling through cpp_demangle (a Rust demangler with recursion limits, safe on hostile input)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=65536)
def demangle(name: str) -> str | None:
    """The demangled form of an Itanium-mangled name, or ``None`` if ``name`` is not one."""
    if not name.startswith("_Z") or len(name) > 16384:
        return None
    import cpp_demangle

    try:
        result: str = cpp_demangle.demangle(name)
    except Exception:  # ValueError for malformed names; any failure just means "no demangled form"
        return None
    return result if result != name else None
