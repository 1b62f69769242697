"""Type checks of one inbox mapping against the field table: every problem becomes a
:class:`~provision.errors.ConfigProblem` naming file, line, inbox and field."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

from provision.errors import ConfigProblem
from provision.inbox.fields import Field, Kind
from provision.inbox.interpolate import interpolate
from provision.inbox.lines import InvalidNode, MappingNode, Node, ScalarNode, SequenceNode
from provision.inbox.read import Input
from provision.inbox.show import shorten, show, shown_key
from provision.models import Secret

_INTEGER_TEXT = r"\s*[+-]?\d+\s*"
_DECIMAL = r"[+-]?(?:0|[1-9][0-9]*)"
_LEADING_ZERO = r"[+-]?0[0-9]+"

# Words people reach for instead of Rocket.Chat's; compared after _normalize_key.
_KEY_ALIASES = {
    "host": "server",
    "hostname": "server",
    "user": "username",
    "login": "username",
    "pass": "password",
    "passwd": "password",
    "tls": "secure",
    "ssl": "secure",
    "usetls": "secure",
    "usessl": "secure",
    "retries": "maxRetries",
    "enabled": "active",
    "sender": "senderInfo",
    "sendername": "senderInfo",
    "fromname": "senderInfo",
    "displayname": "senderInfo",
    "departmentid": "department",
}


class _Bad(Enum):
    """Marks a value that was reported as a problem (None is a valid value)."""

    VALUE = 0


_BAD = _Bad.VALUE


class InboxReader:
    """Validates one inbox mapping against the field table, reporting every problem.

    ``lines`` maps each field path read to its line; ``failed`` says whether any
    problem was reported.
    """

    def __init__(
        self,
        source: Input,
        label: str,
        environ: Mapping[str, str],
        problems: list[ConfigProblem],
    ) -> None:
        self._source = source
        self._label = label
        self._environ = environ
        self._problems = problems
        self.lines: dict[str, int] = {}
        self.failed = False

    def problem(self, line: int | None, path: str, message: str) -> None:
        self.failed = True
        self._problems.append(
            ConfigProblem(
                message,
                file=self._source.name,
                line=line,
                inbox=self._label,
                field=path or None,
            )
        )

    def read_mapping(
        self,
        mapping: MappingNode,
        fields: Sequence[Field],
        prefix: str = "",
        also_suggest: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Return the valid values of ``mapping`` by key; report the rest."""
        by_key = {spec.key: spec for spec in fields}
        first_line: dict[str, int] = {}
        values: dict[str, Any] = {}
        # Keys a typo's did-you-mean already names: one typo, one error, not a second
        # "missing" for the key it was meant to be.
        suggested: set[str] = set()
        for entry in mapping.entries:
            if entry.key is None:
                self.problem(entry.line, prefix.rstrip("."), "keys must be plain strings")
                continue
            shown = shown_key(entry.key)
            path = prefix + shown
            if entry.key in first_line:
                self.problem(
                    entry.line,
                    path,
                    f"duplicate key {shown!r} "
                    f"(first at line {first_line[entry.key]}, again at line {entry.line})",
                )
                continue
            first_line[entry.key] = entry.line
            spec = by_key.get(entry.key)
            if spec is None:
                named = entry.key if shown == entry.key else shown.removesuffix("…")
                suggestion = _suggestion(named, [*by_key, *also_suggest])
                if suggestion is not None:
                    suggested.add(suggestion)
                message = _unknown_key_message(named, list(by_key), suggestion)
                if shown != entry.key:
                    message += (
                        "; the rest of the key is not shown, it may hold a value "
                        "(is a space missing after ':'?)"
                    )
                self.problem(entry.line, path, message)
                continue
            self.lines[path] = entry.line
            value = self._read_value(spec, entry.value, path)
            if value is not _BAD:
                values[entry.key] = value
        for spec in fields:
            if spec.required and spec.key not in first_line and spec.key not in suggested:
                self.problem(mapping.line, prefix + spec.key, f"missing; expected {spec.expects}")
        return values

    def _read_value(self, spec: Field, node: Node, path: str) -> Any:
        """Return the checked value of one field, or ``_BAD`` after reporting it."""
        if isinstance(node, InvalidNode):
            self.problem(node.line, path, node.message)
            return _BAD
        if spec.kind is Kind.MAPPING:
            if isinstance(node, MappingNode):
                return self.read_mapping(node, spec.fields, f"{path}.")
            return self._type_problem(spec, node, path)
        if not isinstance(node, ScalarNode):
            return self._type_problem(spec, node, path)
        if spec.kind is Kind.STRING:
            return self._read_string(spec, node, path)
        wanted = "integer" if spec.kind is Kind.INTEGER else "boolean"
        misread = _misread_integer(node) if spec.kind is Kind.INTEGER else None
        if misread is not None:
            self.problem(node.line, path, _expected(spec, node.text.strip(), misread))
            return _BAD
        if node.kind != wanted:
            return self._type_problem(spec, node, path)
        detail = spec.check(node.value) if spec.check else None
        if detail is not None:
            self.problem(node.line, path, _expected(spec, show(node.value), detail))
            return _BAD
        return node.value

    def _read_string(self, spec: Field, node: ScalarNode, path: str) -> Any:
        if node.kind == "null" and spec.nullable:
            return None
        if not isinstance(node.value, str) or node.kind != "string":
            return self._type_problem(spec, node, path)
        text, interpolated = interpolate(
            node.value,
            environ=self._environ,
            base_dir=self._source.base_dir,
            secret=spec.secret,
            problem=lambda message: self.problem(node.line, path, message),
        )
        if text is None:
            return _BAD
        detail = spec.check(text) if spec.check else None
        if detail is not None:
            if text == "":
                shown = "an empty string"
            elif spec.secret:
                shown = "a hidden value"
            elif interpolated:
                shown = "a value from ${...} (not shown)"
            else:
                shown = show(text)
            self.problem(node.line, path, _expected(spec, shown, detail))
            return _BAD
        return Secret(text) if spec.secret else text

    def _type_problem(self, spec: Field, node: Node, path: str) -> _Bad:
        got = f"a {node.kind}" if isinstance(node, MappingNode | SequenceNode) else node.kind
        if isinstance(node, ScalarNode) and node.kind != "null" and not spec.secret:
            got += f" {show(node.value) if node.kind == 'string' else shorten(node.text)}"
        self.problem(node.line, path, _expected(spec, got, _type_hint(spec, node)))
        return _BAD


def _misread_integer(node: ScalarNode) -> str | None:
    """Why an unquoted number does not mean what it says, or None.

    YAML 1.1 (PyYAML) reads ``0465`` as octal 309, ``0x1d1`` as 465 and ``4_65`` as
    465; JSON refuses them all. Only plain decimal digits are taken as an integer.
    """
    text = node.text.strip()
    if not node.plain:
        return None
    if re.fullmatch(_LEADING_ZERO, text):
        read = f"octal {node.value}" if node.kind == "integer" else f"a {node.kind}"
        return f"a leading zero: YAML 1.1 reads {text} as {read}; write {int(text)}"
    if node.kind == "integer" and not re.fullmatch(_DECIMAL, text):
        return f"YAML 1.1 reads {text} as {node.value}; write {node.value} in decimal digits"
    return None


def _normalize_key(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def _suggestion(key: str, candidates: Sequence[str]) -> str | None:
    """The closest of ``candidates`` to the unknown ``key``, if one is close."""
    by_normal = {_normalize_key(name): name for name in candidates}
    normal = _normalize_key(key)
    suggestion = by_normal.get(normal) or by_normal.get(_KEY_ALIASES.get(normal, "").lower())
    if suggestion is None:
        close = difflib.get_close_matches(key, candidates, n=1)
        suggestion = close[0] if close else None
    return suggestion


def _unknown_key_message(key: str, allowed: Sequence[str], suggestion: str | None) -> str:
    if suggestion is not None:
        return f"unknown key (did you mean {suggestion!r}?)"
    return f"unknown key; expected one of: {', '.join(allowed)}"


def _type_hint(spec: Field, node: Node) -> str:
    if not isinstance(node, ScalarNode):
        return ""
    text = node.text.strip().lower()
    if spec.kind is Kind.STRING:
        if node.plain and node.kind != "null":
            what = "the password" if spec.secret else "it"
            return f"quote {what} so that it is read as a string"
        return ""
    if node.kind == "string" and "${" in str(node.value):
        return "${...} works only in string fields"
    if spec.kind is Kind.INTEGER:
        if node.kind == "string" and not node.plain and re.fullmatch(_INTEGER_TEXT, text):
            return "remove the quotes"
        if node.kind == "float" and isinstance(node.value, float) and node.value.is_integer():
            return "write it without a decimal point"
        return ""
    if node.kind == "string" and not node.plain and text in {"true", "false"}:
        return "remove the quotes"
    if node.kind in {"string", "integer"} and text in {"yes", "no", "on", "off", "0", "1"}:
        return "write true or false"
    return ""


def _expected(spec: Field, got: str, detail: str) -> str:
    return f"expected {spec.expects}, got {got}" + (f" ({detail})" if detail else "")
