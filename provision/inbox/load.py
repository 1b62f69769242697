"""The whole load: inbox files -> documents -> validated inboxes, every problem of every
file raised as one :class:`~provision.errors.ConfigError`, warnings kept per inbox."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as _dataclass_field
from typing import IO, Any

from provision.errors import ConfigError, ConfigProblem
from provision.inbox.fields import FIELDS, IMAP_FIELDS, SMTP_FIELDS, Field
from provision.inbox.lines import InvalidNode, MappingNode, Node, ScalarNode, SequenceNode, parse
from provision.inbox.read import (
    STDIN_NAME,
    Input,
    ReadError,
    display_name,
    file_identity,
    read_input,
)
from provision.inbox.show import show
from provision.inbox.validate import InboxReader
from provision.models import ImapSettings, Inbox, SmtpSettings, Source
from provision.results import ExitCode, Finding

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
    warnings: dict[int, list[Finding]] = _dataclass_field(default_factory=dict)

    def warnings_for(self, index: int) -> list[Finding]:
        """Return the findings of ``inboxes[index]`` (empty if none)."""
        return self.warnings.get(index, [])


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
    seen: dict[tuple[int, int], str] = {}
    for path in paths:
        if path == "-":
            if stdin_seen:
                problems.append(ConfigProblem("'-' given more than once", file=STDIN_NAME))
                continue
            stdin_seen = True
        elif (identity := file_identity(path)) is not None:
            # Read once: a second reading would only clash with the first, inbox by inbox.
            if identity in seen:
                problems.append(_given_twice(path, seen[identity]))
                continue
            seen[identity] = path
        file_problems: list[ConfigProblem] = []
        loaded.extend(_load_file(path, stdin, environ, file_problems))
        problems.extend(sorted(file_problems, key=lambda problem: problem.line or 0))
    problems.extend(_duplicate_emails(loaded))
    if problems:
        raise ConfigError(problems)
    inboxes = [item.inbox for item in loaded if item.inbox is not None]
    warnings = {index: item.warnings for index, item in enumerate(loaded) if item.warnings}
    return LoadResult(inboxes=inboxes, warnings=warnings)


def _given_twice(path: str, first: str) -> ConfigProblem:
    again = "" if path == first else f" (as {first!r}: the same file by another path or link)"
    return ConfigProblem(
        f"given more than once{again}; it was read once: give each file only once", file=path
    )


@dataclass(slots=True)
class _Loaded:
    """One inbox as read: the model if valid, and what the duplicate check needs."""

    inbox: Inbox | None
    label: str  # as ConfigProblem.inbox: the name, or #index
    shown: str  # the label in a message
    file: str
    email: str | None
    email_line: int | None
    warnings: list[Finding]


def _load_file(
    path: str,
    stdin: IO[str] | None,
    environ: Mapping[str, str],
    problems: list[ConfigProblem],
) -> list[_Loaded]:
    try:
        source = read_input(path, stdin)
        document = parse(source.text, json_only=source.json_only)
    except ReadError as exc:
        problems.append(ConfigProblem(exc.message, file=display_name(path), line=exc.line))
        return []
    mappings, single = _document_inboxes(document, source, problems)
    return [
        _read_inbox(source, index, mapping, single=single, environ=environ, problems=problems)
        for index, mapping in mappings
    ]


def _document_inboxes(
    document: Node | None, source: Input, problems: list[ConfigProblem]
) -> tuple[list[tuple[int, MappingNode]], bool]:
    """Return the inbox mappings of a document by index, and whether it is a single inbox."""

    def report(message: str, line: int | None, path: str | None = None) -> None:
        problems.append(ConfigProblem(message, file=source.name, line=line, field=path))

    expected = "one inbox (a mapping with name, email, smtp, imap) or 'inboxes:' with a list"
    if document is None or (isinstance(document, ScalarNode) and document.kind == "null"):
        report(f"file is empty; expected {expected}", None)
        return [], False
    if isinstance(document, InvalidNode):
        report(document.message, document.line)
        return [], False
    if not isinstance(document, MappingNode):
        hint = " (put the list under 'inboxes:')" if isinstance(document, SequenceNode) else ""
        got = f"a {document.kind}" if isinstance(document, SequenceNode) else document.kind
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
    if not isinstance(value, SequenceNode) or not value.items:
        got = "an empty list" if isinstance(value, SequenceNode) else value.kind
        report(f"expected a list of inbox mappings, got {got}", value.line, "inboxes")
        return [], False
    found: list[tuple[int, MappingNode]] = []
    for index, item in enumerate(value.items):
        if isinstance(item, MappingNode):
            found.append((index, item))
        else:
            got = f"a {item.kind}" if isinstance(item, SequenceNode) else item.kind
            problems.append(
                ConfigProblem(
                    f"expected an inbox mapping, got {got}",
                    file=source.name,
                    line=item.line,
                    inbox=f"#{index}",
                )
            )
    return found, False


def _inbox_label(mapping: MappingNode, index: int) -> tuple[str, str]:
    """The inbox's name, or ``#index``, as data and as a message shows it (quoted);
    never a value from ``${...}``."""
    names = [entry.value for entry in mapping.entries if entry.key == "name"]
    name = names[0].value if names and isinstance(names[0], ScalarNode) else None
    if isinstance(name, str) and name.strip() and "$" not in name:
        return name, show(name)
    return f"#{index}", f"#{index}"


def _read_inbox(
    source: Input,
    index: int,
    mapping: MappingNode,
    *,
    single: bool,
    environ: Mapping[str, str],
    problems: list[ConfigProblem],
) -> _Loaded:
    label, shown = _inbox_label(mapping, index)
    reader = InboxReader(source, label, environ, problems)
    values = reader.read_mapping(mapping, FIELDS, also_suggest=("inboxes",) if single else ())
    inbox = None
    if not reader.failed:
        location = Source(file=source.name, index=index, line=mapping.line, lines=reader.lines)
        inbox = _build_inbox(values, location)
    return _Loaded(
        inbox=inbox,
        label=label,
        shown=shown,
        file=source.name,
        email=values.get("email"),
        email_line=reader.lines.get("email"),
        warnings=_input_findings(inbox) if inbox is not None else [],
    )


def _attributes(values: Mapping[str, Any], fields: tuple[Field, ...]) -> dict[str, Any]:
    """A model's keyword arguments from validated values: absent keys take their default."""
    return {spec.attr: values.get(spec.key, spec.default) for spec in fields if not spec.fields}


def _build_inbox(values: Mapping[str, Any], source: Source) -> Inbox:
    return Inbox(
        **_attributes(values, FIELDS),
        smtp=SmtpSettings(**_attributes(values["smtp"], SMTP_FIELDS)),
        imap=ImapSettings(**_attributes(values["imap"], IMAP_FIELDS)),
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
                    f"same address as inbox {earlier.shown} ({earlier.file}:{earlier.email_line}); "
                    "Rocket.Chat allows each email address only once",
                    file=item.file,
                    line=item.email_line,
                    inbox=item.label,
                    field="email",
                )
            )
    return problems
