"""YAML read with line numbers, so that every error in a policy or rule file points at its line."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

import yaml

from kaudit.errors import Error


class PolicyFileError(Error):
    """A policy or rule file is not valid; carries the file and line."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source, self.line, self.message = source, line, message
        super().__init__(f"{source}:{line}: {message}" if line else f"{source}: {message}")


class Mapping(dict[str, Any]):
    """A YAML mapping that remembers where it and each of its keys start (1-based lines)."""

    def __init__(self) -> None:
        super().__init__()
        self.line = 0
        self.key_lines: dict[str, int] = {}

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class Sequence(list[Any]):
    def __init__(self, items: Iterable[Any] = ()) -> None:
        super().__init__(items)
        self.line = 0
        self.item_lines: list[int] = []


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: ``mode: off`` is the text "off", as a policy author means it, not ``False``."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))  # fmt: skip


def _mapping(loader: _Loader, node: yaml.MappingNode) -> Mapping:
    loader.flatten_mapping(node)
    out = Mapping()
    out.line, out.key_lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise PolicyFileError(loader.name, key_node.start_mark.line + 1, f"key {key!r} is not text")
        if key in out:
            raise PolicyFileError(loader.name, key_node.start_mark.line + 1, f"{key!r} appears twice")
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> Sequence:
    out = Sequence(loader.construct_object(item, deep=True) for item in node.value)
    out.line, out.item_lines = node.start_mark.line + 1, [item.start_mark.line + 1 for item in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


def load(text: str, source: str) -> Any:
    """The document in ``text``; YAML syntax errors become :class:`PolicyFileError` with their line."""
    loader = _Loader(text)
    loader.name = source
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise PolicyFileError(source, mark.line + 1 if mark else None, str(exc.problem or exc)) from exc
    except yaml.YAMLError as exc:
        raise PolicyFileError(source, None, str(exc)) from exc
    except (ValueError, TypeError) as exc:  # a scalar YAML resolves but cannot build, e.g. the date 2024-13-45
        raise PolicyFileError(source, None, f"invalid value: {exc}") from exc
    finally:
        loader.dispose()


class Fields:
    """Typed access to one mapping's keys; every complaint names the file and line."""

    def __init__(self, value: Any, source: str, what: str, line: int = 0) -> None:
        if not isinstance(value, Mapping):
            raise PolicyFileError(source, getattr(value, "line", line) or None, f"{what} must be a mapping")
        self.mapping, self.source, self.what = value, source, what

    def fail(self, key: str | None, message: str) -> PolicyFileError:
        line = self.mapping.line_of(key) if key else self.mapping.line
        return PolicyFileError(self.source, line, message)

    def only(self, *allowed: str) -> None:
        for key in self.mapping:
            if key not in allowed:
                raise self.fail(key, f"unknown key {key!r} in {self.what} (allowed: {', '.join(allowed)})")

    def text(self, key: str, default: str | None = None) -> str:
        value = self.mapping.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"{self.what}: {key!r} must be non-empty text")
        return value.strip()

    def optional_text(self, key: str) -> str | None:
        return self.text(key) if key in self.mapping else None

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.mapping.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, f"{self.what}: {key!r} must be a list of text")
        return tuple(value)

    def choice(self, key: str, options: list[str], default: str | None = None) -> str:
        value = self.mapping.get(key, default)
        if value not in options:
            raise self.fail(key, f"{self.what}: {key!r} must be one of {', '.join(options)}, not {value!r}")
        return str(value)

    def day(self, key: str) -> date | None:
        if key not in self.mapping:
            return None
        value = self.mapping[key]
        if isinstance(value, datetime):
            raise self.fail(key, f"{self.what}: {key!r} must be a date (YYYY-MM-DD), not a date and time")
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError as exc:
            raise self.fail(key, f"{self.what}: {key!r} must be a date (YYYY-MM-DD), not {value!r}") from exc

    def mapping_of(self, key: str) -> Mapping:
        value = self.mapping.get(key, Mapping())
        if not isinstance(value, Mapping):
            raise self.fail(key, f"{self.what}: {key!r} must be a mapping")
        return value

    def items(self, key: str) -> list[tuple[Any, int]]:
        """The items of a list, each with its line."""
        value = self.mapping.get(key, Sequence())
        if not isinstance(value, Sequence):
            raise self.fail(key, f"{self.what}: {key!r} must be a list")
        return list(zip(value, value.item_lines, strict=True))
