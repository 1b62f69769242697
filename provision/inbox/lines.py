"""The document tree of an inbox file, each node with its line, whether the text was
JSON or YAML. JSON is read here; YAML (``yaml_lines``, PyYAML) only when the text is not
JSON, so a JSON file never imports a YAML parser."""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from provision.inbox.read import ReadError
from provision.inbox.show import lower_first

_SPACE = r"[ \t\n\r]*"
_INTEGER_KEYS = ("port", "maxRetries")


@dataclass(frozen=True, slots=True)
class ScalarNode:
    """A scalar value with its kind as messages name it and its source text."""

    value: str | int | float | bool | None
    kind: str  # string, integer, float, boolean, null or date (a date stays text)
    line: int
    text: str
    plain: bool  # written without quotes, so the parser chose the type


@dataclass(frozen=True, slots=True)
class InvalidNode:
    """A value the reader refused (an unsupported YAML tag, a bad ``!!int``)."""

    message: str
    line: int
    kind: ClassVar[str] = "invalid value"


@dataclass(frozen=True, slots=True)
class Entry:
    """One ``key: value`` of a mapping; ``key`` is None when the key is not a scalar."""

    key: str | None
    line: int
    value: Node


@dataclass(frozen=True, slots=True)
class MappingNode:
    entries: tuple[Entry, ...]
    line: int
    kind: ClassVar[str] = "mapping"


@dataclass(frozen=True, slots=True)
class SequenceNode:
    items: tuple[Node, ...]
    line: int
    kind: ClassVar[str] = "list"


Node: TypeAlias = "ScalarNode | MappingNode | SequenceNode | InvalidNode"


def parse(text: str, *, json_only: bool) -> Node | None:
    """Parse a document into a tree; None if it is empty. Raise :class:`ReadError`."""
    if not text.strip():
        return None
    try:
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            if json_only:
                reason = _leading_zero(text, exc.pos) or lower_first(exc.msg)
                raise ReadError(
                    f"invalid JSON at column {exc.colno}: {reason}", line=exc.lineno
                ) from None
        except ValueError as exc:  # e.g. an integer longer than Python converts
            if json_only:
                raise ReadError(f"invalid JSON: {exc}") from None
        else:
            # Valid JSON is read as JSON, not as YAML 1.1 (tabs, 1e5, exact escapes).
            return _JsonTree(text).build()
        from provision.inbox.yaml_lines import parse_yaml

        return parse_yaml(text)
    except RecursionError:
        raise ReadError("nested too deeply") from None


def _leading_zero(text: str, pos: int) -> str | None:
    """Say so when JSON stopped at a number written with a leading zero (``"port": 0465``)."""
    number = re.compile(r'(?:"([^"\\]{1,64})"\s*:\s*)?(-?0[0-9]+)(?![0-9.eE])')
    for match in number.finditer(text, max(0, pos - 80), pos + 20):
        if match.start(2) < pos <= match.end(2):
            key, digits = match[1], match[2]
            if key == "password":  # the number would be the password: not shown
                return "password: a number with a leading zero; write it in quotes"
            fix = f"write {int(digits)}" + ("" if key in _INTEGER_KEYS else " or quote it")
            where = f"{key}: " if key else ""
            return f"{where}{digits} has a leading zero, which JSON does not allow; {fix}"
    return None


class _JsonTree:
    """Builds the tree, with lines, from text that :func:`json.loads` has accepted."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._decoder = json.JSONDecoder()
        self._space = re.compile(_SPACE)
        self._line_starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def build(self) -> Node:
        return self._node(0)[0]

    def _line(self, pos: int) -> int:
        return bisect.bisect_right(self._line_starts, pos)

    def _skip(self, pos: int) -> int:
        match = self._space.match(self._text, pos)
        assert match is not None  # the pattern matches the empty string
        return match.end()

    def _node(self, pos: int) -> tuple[Node, int]:
        pos = self._skip(pos)
        if self._text[pos] == "{":
            return self._mapping(pos)
        if self._text[pos] == "[":
            return self._sequence(pos)
        value, end = self._decoder.raw_decode(self._text, pos)
        text = self._text[pos:end]
        scalar = ScalarNode(value, _kind_of(value), self._line(pos), text, plain=text[0] != '"')
        return scalar, end

    def _mapping(self, pos: int) -> tuple[Node, int]:
        entries: list[Entry] = []
        line = self._line(pos)
        pos = self._skip(pos + 1)
        while self._text[pos] != "}":
            key, end = self._decoder.raw_decode(self._text, pos)
            value, end = self._node(self._skip(end) + 1)  # + 1 skips the ":"
            entries.append(Entry(key, self._line(pos), value))
            pos = self._skip(end)
            if self._text[pos] == ",":
                pos = self._skip(pos + 1)
        return MappingNode(tuple(entries), line), pos + 1

    def _sequence(self, pos: int) -> tuple[Node, int]:
        items: list[Node] = []
        line = self._line(pos)
        pos = self._skip(pos + 1)
        while self._text[pos] != "]":
            item, end = self._node(pos)
            items.append(item)
            pos = self._skip(end)
            if self._text[pos] == ",":
                pos = self._skip(pos + 1)
        return SequenceNode(tuple(items), line), pos + 1


def _kind_of(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if value is None:
        return "null"
    return "string"
