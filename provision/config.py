"""Load inbox files (YAML or JSON) into validated :class:`~provision.models.Inbox` objects.

A file holds either one inbox, written with the keys of ``POST /api/v1/email-inbox``
(spec §1.2), or ``inboxes:`` with a list of them::

    name: Support
    email: support@example.com
    senderInfo: Support Team
    smtp: {server: smtp.example.com, port: 587, username: support, password: "${SMTP_PW}",
           secure: false}
    imap: {server: imap.example.com, port: 993, username: support,
           password: "${file:imap.pw}", secure: true, maxRetries: 10}

Types are as strict as Rocket.Chat's Meteor ``check()`` (``"587"`` is not a port, ``yes``
is not a string). String values may use ``${VAR}`` (environment), ``${file:PATH}`` (a
file's content, one trailing newline dropped) and ``$${`` (a literal ``${``).

Every problem in every file is collected and raised as one
:class:`~provision.errors.ConfigError`. No message shows a password or a value that came
from ``${...}``. Nothing here touches the network.
"""

from __future__ import annotations

import bisect
import codecs
import difflib
import io
import json
import os
import re
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Any, ClassVar, TypeAlias

import yaml

from provision.errors import ConfigError, ConfigProblem
from provision.models import (
    DEFAULT_MAX_RETRIES,
    ImapSettings,
    Inbox,
    Secret,
    SmtpSettings,
    Source,
)
from provision.results import ExitCode, Finding

__all__ = ["LoadResult", "inbox_file_schema", "load_inboxes"]

#: File name shown for ``-``.
STDIN_NAME = "<stdin>"

# Inbox files and secret files are tiny; the cap keeps `provision check /dev/zero` finite.
_MAX_BYTES = 1 << 20
_SHOW_MAX = 40
# Rocket.Chat's IMAP wrapper switches an inbox off after maxRetries failed reconnects
# (spec §3.2); below this many a few slow logins are enough.
_LOW_MAX_RETRIES = 5


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What :func:`load_inboxes` found.

    Attributes:
        inboxes: every inbox, in input order (files in the order given, then file order).
        warnings: findings about the input, keyed by index in ``inboxes``; inboxes
            without findings have no entry.
    """

    inboxes: list[Inbox]
    warnings: dict[int, list[Finding]] = field(default_factory=dict)

    def warnings_for(self, index: int) -> list[Finding]:
        """Return the findings of ``inboxes[index]`` (empty if none)."""
        return self.warnings.get(index, [])


# --- the document tree, the same whether it came from YAML or JSON --------------------


@dataclass(frozen=True, slots=True)
class _Scalar:
    """A scalar value with its kind as messages name it and its source text."""

    value: str | int | float | bool | None
    kind: str  # string, integer, float, boolean, null or date (a date stays text)
    line: int
    text: str
    plain: bool  # written without quotes, so the parser chose the type


@dataclass(frozen=True, slots=True)
class _Invalid:
    """A value the reader refused (an unsupported YAML tag, a bad ``!!int``)."""

    message: str
    line: int
    kind: ClassVar[str] = "invalid value"


@dataclass(frozen=True, slots=True)
class _Entry:
    """One ``key: value`` of a mapping; ``key`` is None when the key is not a scalar."""

    key: str | None
    line: int
    value: _Node


@dataclass(frozen=True, slots=True)
class _Mapping:
    entries: tuple[_Entry, ...]
    line: int
    kind: ClassVar[str] = "mapping"


@dataclass(frozen=True, slots=True)
class _Sequence:
    items: tuple[_Node, ...]
    line: int
    kind: ClassVar[str] = "list"


_Node: TypeAlias = "_Scalar | _Mapping | _Sequence | _Invalid"


class _ReadError(Exception):
    """A problem with a whole input (unreadable, not UTF-8, not YAML/JSON)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


# --- reading inputs ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Input:
    name: str  # as shown in messages
    text: str
    base_dir: Path  # relative ${file:...} paths start here
    json_only: bool


def _display_name(path: str) -> str:
    return STDIN_NAME if path == "-" else path


def _read_bytes(path: Path) -> bytes:
    """Read at most ``_MAX_BYTES`` from ``path``; raise :class:`_ReadError` on failure."""
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        raise _ReadError("no such file") from None
    except IsADirectoryError:
        raise _ReadError("is a directory, not a file") from None
    except PermissionError:
        raise _ReadError("permission denied") from None
    except OSError as exc:
        raise _ReadError(
            f"cannot read: {_lower_first(exc.strerror or type(exc).__name__)}"
        ) from None
    if len(data) > _MAX_BYTES:
        raise _ReadError(f"larger than {_MAX_BYTES // 1024} KiB")
    return data


def _is_pipe(path: Path) -> bool:
    try:
        return stat.S_ISFIFO(path.stat().st_mode)
    except OSError:
        return False  # reading it reports the problem


def _decode(data: bytes) -> str:
    """Decode UTF-8 (a leading byte-order mark is allowed); raise :class:`_ReadError`."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _ReadError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at line {line}); save it as UTF-8",
            line=line,
        ) from None


def _read_stdin(stream: IO[str] | None) -> str:
    stream = sys.stdin if stream is None else stream
    try:
        if isinstance(stream, io.TextIOWrapper):
            # Bytes, so that non-UTF-8 input is reported like a file's whatever the locale.
            return _decode(stream.buffer.read(_MAX_BYTES + 1))
        text = stream.read(_MAX_BYTES + 1)
    except UnicodeDecodeError:
        raise _ReadError("not valid UTF-8; send UTF-8 text") from None
    except OSError as exc:
        raise _ReadError(
            f"cannot read: {_lower_first(exc.strerror or type(exc).__name__)}"
        ) from None
    if len(text) > _MAX_BYTES:
        raise _ReadError(f"larger than {_MAX_BYTES // 1024} KiB")
    return text


def _read_input(path: str, stdin: IO[str] | None) -> _Input:
    if path == "-":
        return _Input(STDIN_NAME, _read_stdin(stdin), Path(), json_only=False)
    text = _decode(_read_bytes(Path(path)))
    return _Input(path, text, Path(path).parent, json_only=path.lower().endswith(".json"))


# --- parsing: JSON and YAML front ends --------------------------------------------------


def _parse(text: str, *, json_only: bool) -> _Node | None:
    """Parse a document into a tree; None if it is empty. Raise :class:`_ReadError`."""
    if not text.strip():
        return None
    try:
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            if json_only:
                raise _ReadError(
                    f"invalid JSON at column {exc.colno}: {_lower_first(exc.msg)}", line=exc.lineno
                ) from None
        except ValueError as exc:  # e.g. an integer longer than Python converts
            if json_only:
                raise _ReadError(f"invalid JSON: {exc}") from None
        else:
            # Valid JSON is read as JSON, not as YAML 1.1 (tabs, 1e5, exact escapes).
            return _JsonTree(text).build()
        return _parse_yaml(text)
    except RecursionError:
        raise _ReadError("nested too deeply") from None


class _JsonTree:
    """Builds the tree, with lines, from text that :func:`json.loads` has accepted."""

    _SPACE = re.compile(r"[ \t\n\r]*")

    def __init__(self, text: str) -> None:
        self._text = text
        self._decoder = json.JSONDecoder()
        self._line_starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def build(self) -> _Node:
        return self._node(0)[0]

    def _line(self, pos: int) -> int:
        return bisect.bisect_right(self._line_starts, pos)

    def _skip(self, pos: int) -> int:
        match = self._SPACE.match(self._text, pos)
        assert match is not None  # the pattern matches the empty string
        return match.end()

    def _node(self, pos: int) -> tuple[_Node, int]:
        pos = self._skip(pos)
        if self._text[pos] == "{":
            return self._mapping(pos)
        if self._text[pos] == "[":
            return self._sequence(pos)
        value, end = self._decoder.raw_decode(self._text, pos)
        text = self._text[pos:end]
        scalar = _Scalar(value, _kind_of(value), self._line(pos), text, plain=text[0] != '"')
        return scalar, end

    def _mapping(self, pos: int) -> tuple[_Node, int]:
        entries: list[_Entry] = []
        line = self._line(pos)
        pos = self._skip(pos + 1)
        while self._text[pos] != "}":
            key, end = self._decoder.raw_decode(self._text, pos)
            value, end = self._node(self._skip(end) + 1)  # + 1 skips the ":"
            entries.append(_Entry(key, self._line(pos), value))
            pos = self._skip(end)
            if self._text[pos] == ",":
                pos = self._skip(pos + 1)
        return _Mapping(tuple(entries), line), pos + 1

    def _sequence(self, pos: int) -> tuple[_Node, int]:
        items: list[_Node] = []
        line = self._line(pos)
        pos = self._skip(pos + 1)
        while self._text[pos] != "]":
            item, end = self._node(pos)
            items.append(item)
            pos = self._skip(end)
            if self._text[pos] == ",":
                pos = self._skip(pos + 1)
        return _Sequence(tuple(items), line), pos + 1


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


_YAML_TAG = "tag:yaml.org,2002:"
_YAML_SCALAR_KINDS = {
    f"{_YAML_TAG}str": "string",
    f"{_YAML_TAG}int": "integer",
    f"{_YAML_TAG}float": "float",
    f"{_YAML_TAG}bool": "boolean",
    f"{_YAML_TAG}null": "null",
    f"{_YAML_TAG}timestamp": "date",
}


class _YamlLoader(yaml.SafeLoader):
    """A safe loader used only to compose nodes; it refuses aliases."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            # An alias can repeat a node exponentially ("billion laughs").
            raise _ReadError(
                "aliases (*name) are not supported; write the value out instead",
                line=mark.line + 1 if mark is not None else None,
            )
        return super().compose_node(parent, index)


# Plain "=" and "<<" (YAML 1.1 value and merge keys) stay strings: nothing here uses them.
_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag in _YAML_SCALAR_KINDS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _parse_yaml(text: str) -> _Node | None:
    try:
        loader = _YamlLoader(text)
        try:
            node = loader.get_single_node()
            return None if node is None else _from_yaml(node, loader)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc) from None
    except yaml.reader.ReaderError as exc:
        character = f"U+{exc.character:04X}" if isinstance(exc.character, int) else "a character"
        raise _ReadError(
            f"invalid YAML: {character} is not allowed in YAML",
            line=text.count("\n", 0, exc.position) + 1,
        ) from None
    except yaml.YAMLError as exc:
        raise _ReadError(f"invalid YAML: {type(exc).__name__}") from None


def _yaml_error(exc: yaml.MarkedYAMLError) -> _ReadError:
    # Built from `problem`/`context` only: str(exc) quotes the source line, which can
    # hold a password.
    mark = exc.problem_mark or exc.context_mark
    where = f" at column {mark.column + 1}" if mark is not None else ""
    context = exc.context or ""
    if context and exc.context_mark and mark and exc.context_mark.line != mark.line:
        context += f" at line {exc.context_mark.line + 1}"
    # PyYAML's halves read as one sentence: "while scanning a quoted scalar, found ...".
    reason = ", ".join(part for part in (context, exc.problem) if part) or "syntax error"
    return _ReadError(
        f"invalid YAML{where}: {reason}", line=mark.line + 1 if mark is not None else None
    )


def _from_yaml(node: yaml.Node, loader: _YamlLoader) -> _Node:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode) and node.tag == f"{_YAML_TAG}map":
        entries = tuple(
            _Entry(
                key.value if isinstance(key, yaml.ScalarNode) else None,
                key.start_mark.line + 1,
                _from_yaml(value, loader),
            )
            for key, value in node.value
        )
        return _Mapping(entries, line)
    if isinstance(node, yaml.SequenceNode) and node.tag == f"{_YAML_TAG}seq":
        return _Sequence(tuple(_from_yaml(item, loader) for item in node.value), line)
    if isinstance(node, yaml.ScalarNode) and node.tag in _YAML_SCALAR_KINDS:
        return _yaml_scalar(node, loader, line)
    return _Invalid(f"unsupported YAML tag {_show(node.tag)}; remove the tag", line)


def _yaml_scalar(node: yaml.ScalarNode, loader: _YamlLoader, line: int) -> _Node:
    kind = _YAML_SCALAR_KINDS[node.tag]
    value: str | int | float | bool | None
    try:
        if kind == "integer":
            value = loader.construct_yaml_int(node)
        elif kind == "float":
            value = loader.construct_yaml_float(node)
        elif kind == "boolean":
            value = loader.construct_yaml_bool(node)
        elif kind == "null":
            value = None
        else:
            value = str(node.value)
    # Only explicit tags get here with text that does not fit (`!!int x`, `!!bool ""`).
    except (ValueError, KeyError, IndexError):
        return _Invalid(f"the value tagged {_show(node.tag)} is not a valid {kind}", line)
    return _Scalar(value, kind, line, str(node.value), plain=node.style is None)


# --- the schema ----------------------------------------------------------------------


class _Kind(Enum):
    STRING = "a string"
    INTEGER = "an integer"
    BOOLEAN = "true or false"
    MAPPING = "a mapping"


@dataclass(frozen=True, slots=True)
class _Field:
    """One key of the POST body: its type, whether it is required, how it is checked.

    ``check`` returns None when the value is fine, else a short reason ("" for none).
    """

    key: str
    kind: _Kind
    required: bool = True
    nullable: bool = False
    secret: bool = False
    expected: str = ""
    check: Callable[[Any], str | None] | None = None
    fields: tuple[_Field, ...] = ()
    #: What the field means, for the JSON Schema (editors show it).
    doc: str = ""
    #: JSON Schema keywords that state ``check`` (as far as a schema can) and defaults.
    schema: Mapping[str, Any] = field(default_factory=dict)

    @property
    def expects(self) -> str:
        """What a valid value looks like, for messages."""
        if self.expected:
            return self.expected
        if self.fields:
            return f"a mapping with {', '.join(f.key for f in self.fields)}"
        return f"{self.kind.value} or null" if self.nullable else self.kind.value


_DOMAIN_LABEL = re.compile(r"[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?")


def _check_email(value: str) -> str | None:
    # A sanity check, not RFC 5322: Rocket.Chat does none server-side, its UI a similar one.
    if not value.isprintable():
        return "contains control characters"
    if any(char.isspace() for char in value):
        return "contains whitespace"
    local, at, domain = value.rpartition("@")
    if not at:
        return "no '@'"
    if "@" in local:
        return "more than one '@'"
    if not local:
        return "nothing before '@'"
    if not domain:
        return "nothing after '@'"
    if not all(_DOMAIN_LABEL.fullmatch(label) for label in domain.split(".")):
        return "not a valid domain after '@'"
    return None


def _check_host(value: str) -> str | None:
    if not value.strip():
        return ""
    if "://" in value:
        return "a URL; give only the host name"
    if any(char.isspace() for char in value):
        return "contains whitespace"
    return None


def _check_not_empty(value: str) -> str | None:
    return "" if not value.strip() else None


def _check_port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "out of range"


def _check_max_retries(value: int) -> str | None:
    return None if value >= -1 else "out of range"


# JSON Schema patterns for ``check``: a value with ``${`` is checked only after
# interpolation, so it always passes the schema (ECMA-262 syntax, unanchored search).
_HOST_PATTERN = r"^(?!.*://)\S+$|\$\{"
_EMAIL_PATTERN = r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)*$|\$\{"
_SECURE_DOC = {
    "smtp": (
        "true: TLS from the first byte (port 465); false: plaintext, then STARTTLS "
        "if the server offers it (port 587)"
    ),
    "imap": (
        "true: TLS from the first byte (port 993), certificate not verified by "
        "Rocket.Chat; false: plaintext, never STARTTLS"
    ),
}


def _server_fields(protocol: str, *extra: _Field) -> tuple[_Field, ...]:
    name = protocol.upper()
    return (
        _Field(
            "server",
            _Kind.STRING,
            expected="a host name",
            check=_check_host,
            doc=f"{name} server host name or address (not a URL)",
            schema={"pattern": _HOST_PATTERN},
        ),
        _Field(
            "port",
            _Kind.INTEGER,
            expected="an integer from 1 to 65535",
            check=_check_port,
            doc=f"{name} server port",
            schema={"minimum": 1, "maximum": 65535},
        ),
        _Field("username", _Kind.STRING, doc=f"{name} login name"),
        _Field(
            "password",
            _Kind.STRING,
            secret=True,
            doc=f"{name} password; write ${{VAR}} or ${{file:PATH}} rather than the secret",
        ),
        _Field("secure", _Kind.BOOLEAN, doc=_SECURE_DOC[protocol]),
        *extra,
    )


_INBOX_FIELDS = (
    _Field(
        "name",
        _Kind.STRING,
        expected="a non-empty string",
        check=_check_not_empty,
        doc="Name of the inbox in Rocket.Chat",
        schema={"pattern": r"\S"},
    ),
    _Field(
        "email",
        _Kind.STRING,
        expected="an email address like name@example.com",
        check=_check_email,
        doc="Address of the inbox; it identifies the inbox on Rocket.Chat",
        schema={"pattern": _EMAIL_PATTERN},
    ),
    _Field(
        "active",
        _Kind.BOOLEAN,
        required=False,
        doc="Whether Rocket.Chat uses the inbox",
        schema={"default": True},
    ),
    _Field(
        "description",
        _Kind.STRING,
        required=False,
        nullable=True,
        doc="Free text; missing means none",
    ),
    _Field(
        "senderInfo",
        _Kind.STRING,
        required=False,
        nullable=True,
        doc="Display name in the From: header; missing means none",
    ),
    _Field(
        "department",
        _Kind.STRING,
        required=False,
        nullable=True,
        doc="Omnichannel department id or name; missing means none",
    ),
    _Field("smtp", _Kind.MAPPING, fields=_server_fields("smtp"), doc="Outgoing mail"),
    _Field(
        "imap",
        _Kind.MAPPING,
        fields=_server_fields(
            "imap",
            _Field(
                "maxRetries",
                _Kind.INTEGER,
                required=False,
                expected="-1 (retry forever) or an integer from 0 up",
                check=_check_max_retries,
                doc="Failed IMAP reconnects after which Rocket.Chat switches the inbox off",
                schema={"minimum": -1, "default": DEFAULT_MAX_RETRIES},
            ),
        ),
        doc="Incoming mail",
    ),
)

_JSON_TYPES = {
    _Kind.STRING: "string",
    _Kind.INTEGER: "integer",
    _Kind.BOOLEAN: "boolean",
    _Kind.MAPPING: "object",
}


def _field_schema(spec: _Field) -> dict[str, Any]:
    kind = _JSON_TYPES[spec.kind]
    out: dict[str, Any] = {"type": [kind, "null"] if spec.nullable else kind}
    if spec.doc:
        out["description"] = spec.doc
    out.update(spec.schema)
    if spec.fields:
        out.update(_object_schema(spec.fields))
    return out


def _object_schema(fields: Sequence[_Field]) -> dict[str, Any]:
    return {
        "properties": {spec.key: _field_schema(spec) for spec in fields},
        "required": [spec.key for spec in fields if spec.required],
        "additionalProperties": False,
    }


def inbox_file_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of an inbox file, built from the loader's own rules.

    It accepts one inbox or ``{"inboxes": [...]}``, with the keys, types, required
    fields and ranges that :func:`load_inboxes` enforces. A few rules stay with the
    loader: values using ``${...}`` are checked after interpolation, the domain of an
    address is checked in detail, and addresses must be unique across inboxes.

    Returns:
        A new dict each call, ready for ``json.dumps``.
    """
    inbox = {"type": "object", "description": "One email inbox", **_object_schema(_INBOX_FIELDS)}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "provision inbox file",
        "description": (
            "Rocket.Chat omnichannel email inboxes, in the words of POST /api/v1/email-inbox: "
            "one inbox, or a list of them under 'inboxes'. String values may use ${VAR} "
            "(environment), ${file:PATH} (a file's content) and $${ (a literal ${)."
        ),
        "oneOf": [
            {"$ref": "#/$defs/inbox"},
            {
                "type": "object",
                "properties": {
                    "inboxes": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/inbox"}}
                },
                "required": ["inboxes"],
                "additionalProperties": False,
            },
        ],
        "$defs": {"inbox": inbox},
    }


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


def _normalize_key(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


# A key with a space, ":" or "=" in it is a line that lost its separator
# ("password:s3cret" in a flow mapping, "password s3cret:"): the part after it may be the
# value, a password included, so messages show only the part before it.
_KEY_CUT = re.compile(r"[\s:=]")
_LONGEST_SHOWN_KEY = 64


def _shown_key(key: str) -> str:
    """``key`` as messages show it: cut before a space, ``:`` or ``=``, and clipped."""
    head = _KEY_CUT.split(key, maxsplit=1)[0][:_LONGEST_SHOWN_KEY]
    return key if head == key else head + "…"


def _unknown_key_message(key: str, allowed: Sequence[str], also: Sequence[str] = ()) -> str:
    """Say that ``key`` is unknown, suggesting the closest of ``allowed`` or ``also``."""
    candidates = [*allowed, *also]
    by_normal = {_normalize_key(name): name for name in candidates}
    normal = _normalize_key(key)
    suggestion = by_normal.get(normal) or by_normal.get(_KEY_ALIASES.get(normal, "").lower())
    if suggestion is None:
        close = difflib.get_close_matches(key, candidates, n=1)
        suggestion = close[0] if close else None
    if suggestion is not None:
        return f"unknown key (did you mean {suggestion!r}?)"
    return f"unknown key; expected one of: {', '.join(allowed)}"


# --- validating one inbox ------------------------------------------------------------


class _Bad(Enum):
    """Marks a value that was reported as a problem (None is a valid value)."""

    VALUE = 0


_BAD = _Bad.VALUE
_REFERENCE = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)(?P<end>\}?)")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INTEGER_TEXT = re.compile(r"\s*[+-]?\d+\s*")


class _InboxReader:
    """Validates one inbox mapping against the schema, reporting every problem."""

    def __init__(
        self,
        source: _Input,
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
        mapping: _Mapping,
        fields: Sequence[_Field],
        prefix: str = "",
        also_suggest: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Return the valid values of ``mapping`` by key; report the rest."""
        by_key = {spec.key: spec for spec in fields}
        first_line: dict[str, int] = {}
        values: dict[str, Any] = {}
        for entry in mapping.entries:
            if entry.key is None:
                self.problem(entry.line, prefix.rstrip("."), "keys must be plain strings")
                continue
            shown = _shown_key(entry.key)
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
                message = _unknown_key_message(named, list(by_key), also_suggest)
                if shown != entry.key:
                    message += (
                        "; the rest of the key is not shown, it may hold a value "
                        "(is a space missing after ':'?)"
                    )
                self.problem(entry.line, path, message)
                continue
            self.lines[path] = entry.line
            value = self.read_value(spec, entry.value, path)
            if value is not _BAD:
                values[entry.key] = value
        for spec in fields:
            if spec.required and spec.key not in first_line:
                self.problem(mapping.line, prefix + spec.key, f"missing; expected {spec.expects}")
        return values

    def read_value(self, spec: _Field, node: _Node, path: str) -> Any:
        """Return the checked value of one field, or ``_BAD`` after reporting it."""
        if isinstance(node, _Invalid):
            self.problem(node.line, path, node.message)
            return _BAD
        if spec.kind is _Kind.MAPPING:
            if isinstance(node, _Mapping):
                return self.read_mapping(node, spec.fields, f"{path}.")
            return self.type_problem(spec, node, path)
        if not isinstance(node, _Scalar):
            return self.type_problem(spec, node, path)
        if spec.kind is _Kind.STRING:
            return self.read_string(spec, node, path)
        wanted = "integer" if spec.kind is _Kind.INTEGER else "boolean"
        if node.kind != wanted:
            return self.type_problem(spec, node, path)
        detail = spec.check(node.value) if spec.check else None
        if detail is not None:
            self.problem(node.line, path, _expected(spec, _show(node.value), detail))
            return _BAD
        return node.value

    def read_string(self, spec: _Field, node: _Scalar, path: str) -> Any:
        if node.kind == "null" and spec.nullable:
            return None
        if not isinstance(node.value, str) or node.kind != "string":
            return self.type_problem(spec, node, path)
        text, interpolated = self.interpolate(node.value, path, node.line, secret=spec.secret)
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
                shown = _show(text)
            self.problem(node.line, path, _expected(spec, shown, detail))
            return _BAD
        return Secret(text) if spec.secret else text

    def type_problem(self, spec: _Field, node: _Node, path: str) -> _Bad:
        got = f"a {node.kind}" if isinstance(node, _Mapping | _Sequence) else node.kind
        if isinstance(node, _Scalar) and node.kind != "null" and not spec.secret:
            got += f" {_show(node.value) if node.kind == 'string' else _shorten(node.text)}"
        self.problem(node.line, path, _expected(spec, got, _type_hint(spec, node)))
        return _BAD

    def interpolate(
        self, raw: str, path: str, line: int, *, secret: bool
    ) -> tuple[str | None, bool]:
        """Resolve ``${...}`` in ``raw``; return (text or None if reported, whether used)."""
        if "${" not in raw:
            return raw, False
        parts: list[str] = []
        used, ok = False, True
        pos = 0
        for match in _REFERENCE.finditer(raw):
            parts.append(raw[pos : match.start()])
            pos = match.end()
            if match.group() == "$${":
                parts.append("${")
                continue
            used = True
            value = self._resolve(match["body"], bool(match["end"]), path, line, secret=secret)
            ok = ok and value is not None
            parts.append(value or "")
        parts.append(raw[pos:])
        return ("".join(parts) if ok else None), used

    def _resolve(
        self, body: str, closed: bool, path: str, line: int, *, secret: bool
    ) -> str | None:
        if not closed:
            self.problem(
                line,
                path,
                "unterminated '${' (close it with '}', or write '$${' for a literal '${')",
            )
            return None
        if not body.strip():
            self.problem(line, path, "empty reference '${}'; use ${NAME} or ${file:PATH}")
            return None
        if body.startswith("file:"):
            return self._read_file(body.removeprefix("file:"), path, line)
        if _VARIABLE.fullmatch(body):
            value = self._environ.get(body)
            if value is None:
                self.problem(line, path, f"environment variable {body} is not set")
            return value
        shown = "" if secret else f" {_show('${' + body + '}')}"
        self.problem(line, path, f"invalid reference{shown}; use ${{NAME}} or ${{file:PATH}}")
        return None

    def _read_file(self, name: str, path: str, line: int) -> str | None:
        if not name:
            self.problem(line, path, "empty path in '${file:}'")
            return None
        file = Path(name).expanduser()
        if not file.is_absolute():
            file = self._source.base_dir / file
        where = f"{name!r}" if str(file) == name else f"{name!r} ({file})"
        if _is_pipe(file):
            # Opening a FIFO waits for a writer, and loading runs before any deadline.
            self.problem(line, path, f"cannot read file {where}: a pipe, not a regular file")
            return None
        try:
            text = _read_bytes(file).decode("utf-8")
        except _ReadError as exc:
            self.problem(line, path, f"cannot read file {where}: {exc.message}")
            return None
        except UnicodeDecodeError:
            self.problem(line, path, f"file {where} is not valid UTF-8")
            return None
        for ending in ("\r\n", "\n"):
            if text.endswith(ending):
                return text[: -len(ending)]
        return text


def _type_hint(spec: _Field, node: _Node) -> str:
    if not isinstance(node, _Scalar):
        return ""
    text = node.text.strip().lower()
    if spec.kind is _Kind.STRING:
        if node.plain and node.kind != "null":
            what = "the password" if spec.secret else "it"
            return f"quote {what} so that it is read as a string"
        return ""
    if node.kind == "string" and "${" in str(node.value):
        return "${...} works only in string fields"
    if spec.kind is _Kind.INTEGER:
        if node.kind == "string" and not node.plain and _INTEGER_TEXT.fullmatch(text):
            return "remove the quotes"
        if node.kind == "float" and isinstance(node.value, float) and node.value.is_integer():
            return "write it without a decimal point"
        return ""
    if node.kind == "string" and not node.plain and text in {"true", "false"}:
        return "remove the quotes"
    if node.kind in {"string", "integer"} and text in {"yes", "no", "on", "off", "0", "1"}:
        return "write true or false"
    return ""


def _expected(spec: _Field, got: str, detail: str) -> str:
    return f"expected {spec.expects}, got {got}" + (f" ({detail})" if detail else "")


def _shorten(text: str) -> str:
    return text if len(text) <= _SHOW_MAX else text[: _SHOW_MAX - 1] + "…"


def _show(value: object) -> str:
    """A value for a message: repr for strings, shortened."""
    return repr(_shorten(value)) if isinstance(value, str) else _shorten(repr(value))


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


# --- documents, files, the whole load ----------------------------------------------


@dataclass(slots=True)
class _Loaded:
    """One inbox as read: the model if valid, and what the duplicate check needs."""

    inbox: Inbox | None
    label: str
    file: str
    email: str | None
    email_line: int | None
    warnings: list[Finding]


def _inbox_label(mapping: _Mapping, index: int) -> str:
    """The inbox's name for messages, or ``#index``; never a value from ``${...}``."""
    names = [entry.value for entry in mapping.entries if entry.key == "name"]
    name = names[0].value if names and isinstance(names[0], _Scalar) else None
    if isinstance(name, str) and name.strip() and "$" not in name:
        return _show(name)
    return f"#{index}"


def _document_inboxes(
    document: _Node | None, source: _Input, problems: list[ConfigProblem]
) -> tuple[list[tuple[int, _Mapping]], bool]:
    """Return the inbox mappings of a document by index, and whether it is a single inbox."""

    def report(message: str, line: int | None, path: str | None = None) -> None:
        problems.append(ConfigProblem(message, file=source.name, line=line, field=path))

    expected = "one inbox (a mapping with name, email, smtp, imap) or 'inboxes:' with a list"
    if document is None or (isinstance(document, _Scalar) and document.kind == "null"):
        report(f"file is empty; expected {expected}", None)
        return [], False
    if isinstance(document, _Invalid):
        report(document.message, document.line)
        return [], False
    if not isinstance(document, _Mapping):
        hint = " (put the list under 'inboxes:')" if isinstance(document, _Sequence) else ""
        got = f"a {document.kind}" if isinstance(document, _Sequence) else document.kind
        report(f"expected {expected}, got {got}{hint}", document.line)
        return [], False
    lists = [entry for entry in document.entries if entry.key == "inboxes"]
    if not lists:
        return [(0, document)], True
    for entry in document.entries:
        if entry.key != "inboxes":
            report(
                "unexpected key next to 'inboxes'; put it inside an inbox", entry.line, entry.key
            )
    for entry in lists[1:]:
        report(f"duplicate key 'inboxes' (first at line {lists[0].line})", entry.line, "inboxes")
    value = lists[0].value
    if not isinstance(value, _Sequence) or not value.items:
        got = "an empty list" if isinstance(value, _Sequence) else value.kind
        report(f"expected a list of inbox mappings, got {got}", value.line, "inboxes")
        return [], False
    found: list[tuple[int, _Mapping]] = []
    for index, item in enumerate(value.items):
        if isinstance(item, _Mapping):
            found.append((index, item))
        else:
            got = f"a {item.kind}" if isinstance(item, _Sequence) else item.kind
            problems.append(
                ConfigProblem(
                    f"expected an inbox mapping, got {got}",
                    file=source.name,
                    line=item.line,
                    inbox=f"#{index}",
                )
            )
    return found, False


def _read_inbox(
    source: _Input,
    index: int,
    mapping: _Mapping,
    *,
    single: bool,
    environ: Mapping[str, str],
    problems: list[ConfigProblem],
) -> _Loaded:
    label = _inbox_label(mapping, index)
    reader = _InboxReader(source, label, environ, problems)
    values = reader.read_mapping(
        mapping, _INBOX_FIELDS, also_suggest=("inboxes",) if single else ()
    )
    inbox = None
    if not reader.failed:
        location = Source(file=source.name, index=index, line=mapping.line, lines=reader.lines)
        inbox = _build_inbox(values, location)
    return _Loaded(
        inbox=inbox,
        label=label,
        file=source.name,
        email=values.get("email"),
        email_line=reader.lines.get("email"),
        warnings=_input_findings(inbox) if inbox is not None else [],
    )


def _build_inbox(values: dict[str, Any], source: Source) -> Inbox:
    smtp, imap = values["smtp"], values["imap"]
    return Inbox(
        name=values["name"],
        email=values["email"],
        active=values.get("active", True),
        description=values.get("description"),
        sender_info=values.get("senderInfo"),
        department=values.get("department"),
        smtp=SmtpSettings(
            server=smtp["server"],
            port=smtp["port"],
            username=smtp["username"],
            password=smtp["password"],
            secure=smtp["secure"],
        ),
        imap=ImapSettings(
            server=imap["server"],
            port=imap["port"],
            username=imap["username"],
            password=imap["password"],
            secure=imap["secure"],
            max_retries=imap.get("maxRetries", DEFAULT_MAX_RETRIES),
        ),
        source=source,
    )


def _input_findings(inbox: Inbox) -> list[Finding]:
    retries = inbox.imap.max_retries
    if not 0 <= retries < _LOW_MAX_RETRIES:
        return []
    return [
        Finding(
            code="low-max-retries",
            message=(
                f"imap.maxRetries is {retries}: Rocket.Chat's IMAP wrapper can count spurious "
                "early timeouts as failed attempts and switches the inbox off (active: false) "
                "once they reach maxRetries"
            ),
            hint="set imap.maxRetries to 10 (the admin UI's default) or more",
            field="imap.maxRetries",
            strict_exit=ExitCode.USAGE,
        )
    ]


def _load_file(
    path: str,
    stdin: IO[str] | None,
    environ: Mapping[str, str],
    problems: list[ConfigProblem],
) -> list[_Loaded]:
    try:
        source = _read_input(path, stdin)
        document = _parse(source.text, json_only=source.json_only)
    except _ReadError as exc:
        problems.append(ConfigProblem(exc.message, file=_display_name(path), line=exc.line))
        return []
    mappings, single = _document_inboxes(document, source, problems)
    return [
        _read_inbox(source, index, mapping, single=single, environ=environ, problems=problems)
        for index, mapping in mappings
    ]


def _duplicate_emails(loaded: list[_Loaded]) -> list[ConfigProblem]:
    # Exact match only: Rocket.Chat's unique index on `email` is case-sensitive (spec §1.2).
    first: dict[str, _Loaded] = {}
    problems = []
    for item in loaded:
        if item.email is None:
            continue
        earlier = first.setdefault(item.email, item)
        if earlier is not item:
            problems.append(
                ConfigProblem(
                    f"same address as inbox {earlier.label} ({earlier.file}:{earlier.email_line}); "
                    "Rocket.Chat allows each email address only once",
                    file=item.file,
                    line=item.email_line,
                    inbox=item.label,
                    field="email",
                )
            )
    return problems


def load_inboxes(
    paths: Sequence[str],
    *,
    environ: Mapping[str, str] | None = None,
    stdin: IO[str] | None = None,
) -> LoadResult:
    """Read and validate inbox files.

    Args:
        paths: YAML or JSON files; ``-`` reads ``stdin`` (shown as ``<stdin>``). A name
            ending in ``.json`` is parsed as strict JSON.
        environ: variables for ``${VAR}``; defaults to :data:`os.environ`.
        stdin: the stream for ``-``; defaults to :data:`sys.stdin`.

    Returns:
        The inboxes in input order and the warnings about them.

    Raises:
        TypeError: ``paths`` is a single string.
        ConfigError: with every problem found in every file, each naming file, line,
            inbox and field. No message contains a password or a value from ``${...}``.
    """
    if isinstance(paths, str):
        raise TypeError("paths must be a sequence of file names, not one string")
    environ = os.environ if environ is None else environ
    if not paths:
        raise ConfigError([ConfigProblem("no inbox files given")])
    problems: list[ConfigProblem] = []
    loaded: list[_Loaded] = []
    stdin_seen = False
    for path in paths:
        if path == "-":
            if stdin_seen:
                problems.append(ConfigProblem("'-' given more than once", file=STDIN_NAME))
                continue
            stdin_seen = True
        file_problems: list[ConfigProblem] = []
        loaded.extend(_load_file(path, stdin, environ, file_problems))
        problems.extend(sorted(file_problems, key=lambda problem: problem.line or 0))
    problems.extend(_duplicate_emails(loaded))
    if problems:
        raise ConfigError(problems)
    inboxes = [item.inbox for item in loaded if item.inbox is not None]
    warnings = {index: item.warnings for index, item in enumerate(loaded) if item.warnings}
    return LoadResult(inboxes=inboxes, warnings=warnings)
