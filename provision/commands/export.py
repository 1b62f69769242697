"""``provision export``: Rocket.Chat's email inboxes as an inbox file that ``set`` accepts.

Every inbox is read (paging through ``email-inbox.list``) and written in Rocket.Chat's
own words under ``inboxes:``. Passwords are never written: each one becomes a
``${VAR}`` reference whose name is derived from the inbox's address
(``support@example.com`` -> ``SUPPORT_EXAMPLE_COM_SMTP_PASSWORD``), and the header of
the file lists the variables to set. With them set to the stored passwords, a
following ``provision set`` of the file finds every inbox ``unchanged``.

The stored passwords that ``email-inbox.list`` returns are dropped as soon as the
answer is read; they never reach the file, the result, a message or a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import re
import tempfile
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provision._version import __version__
from provision.errors import ConfigError, ConfigProblem
from provision.inbox.fields import FIELDS, field
from provision.inbox.stored import file_mapping

if TYPE_CHECKING:
    from provision.rocketchat.credentials import Credentials

__all__ = ["ExportResult", "PasswordReference", "export_inboxes", "render_inbox_file"]

_SECTIONS = tuple(spec for spec in FIELDS if spec.fields)
_MAX_RETRIES = field("imap.maxRetries")
_NOT_NAME = re.compile(r"[^A-Za-z0-9]+")


@dataclass(frozen=True, slots=True)
class PasswordReference:
    """One ``${VAR}`` that stands for a stored password in the exported file.

    Attributes:
        variable: the environment variable's name.
        email: the address of the inbox.
        field: ``smtp.password`` or ``imap.password``.
    """

    variable: str
    email: str
    field: str


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What :func:`export_inboxes` produced.

    Attributes:
        text: the inbox file (YAML), header comment included; no secret is in it.
        passwords: the ``${VAR}`` references in file order, two per inbox.
        count: how many inboxes the file holds.
        warnings: what a following ``set`` of the file would not leave unchanged, or
            what needs a look (an inbox stored without ``imap.maxRetries``, a
            department id Rocket.Chat does not list).
        problems: where the file breaks the inbox file rules because of what
            Rocket.Chat had stored (a port stored as text, say); ``file`` is None,
            ``line`` is a line of ``text``. Empty when ``set`` accepts the file.
    """

    text: str
    passwords: tuple[PasswordReference, ...]
    count: int
    warnings: tuple[str, ...] = ()
    problems: tuple[ConfigProblem, ...] = ()

    @property
    def variables(self) -> tuple[str, ...]:
        """The names of the environment variables the file needs, in file order."""
        return tuple(ref.variable for ref in self.passwords)

    def write(self, path: Path, *, overwrite: bool = False) -> None:
        """Write :attr:`text` to ``path``.

        Without ``overwrite`` the file must not exist (it is created exclusively);
        with it, an existing file is replaced atomically (a reader sees the old file
        or the new one, never a part).

        Raises:
            FileExistsError: ``path`` exists and ``overwrite`` is false.
            OSError: the file cannot be written.
        """
        if not overwrite:
            with path.open("x", encoding="utf-8") as handle:
                handle.write(self.text)
            return
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(self.text)
            os.chmod(temp, 0o644)  # no secret inside; mkstemp made it owner-only
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise


async def export_inboxes(
    server: str,
    credentials: Credentials,
    *,
    ca_file: Path | None = None,
    allow_http: bool = False,
    time_limit: float = 60.0,
    http_timeout: float = 10.0,
    page_size: int = 100,
) -> ExportResult:
    """Read every email inbox of a Rocket.Chat server and render it as an inbox file.

    Args:
        server: Rocket.Chat base URL (HTTPS; plain HTTP only to loopback or with
            ``allow_http``).
        credentials: a :class:`~provision.rocketchat.TokenAuth` or
            :class:`~provision.rocketchat.PasswordAuth` of a user with
            ``manage-email-inbox``.
        ca_file: extra CA certificates (PEM) for the Rocket.Chat connection.
        allow_http: plain HTTP to a non-loopback server.
        time_limit: deadline for the whole export, in seconds.
        http_timeout: cap on each HTTP connect/read/write, in seconds.
        page_size: inboxes asked for per ``email-inbox.list`` page (the server may
            cap it; paging follows what it answers).

    Returns:
        The file text and the variables it needs; see :class:`ExportResult`.

    Raises:
        ConfigError: the URL is refused (before any I/O).
        RocketChatCallError: Rocket.Chat failed (authentication, permission,
            transport, the deadline).
    """
    from provision.errors import RocketChatCallError, RocketChatUnavailableError
    from provision.rocketchat.client import open_rocketchat
    from provision.rocketchat.transport import RocketChatOptions

    deadline = time.monotonic() + time_limit
    try:
        async with asyncio.timeout(time_limit):
            async with open_rocketchat(
                server,
                credentials,
                RocketChatOptions(
                    step_timeout=http_timeout, ca_file=ca_file, allow_http=allow_http
                ),
                deadline=deadline,
            ) as rc:
                stored = [
                    _without_passwords(doc) for doc in await rc.list_inboxes(page_size=page_size)
                ]
                department_ids: set[str] | None
                try:
                    department_ids = {
                        str(d.get("_id")) for d in await rc.list_departments(page_size=page_size)
                    }
                except RocketChatCallError:
                    department_ids = None  # a check only; not every exporter may list them
    except TimeoutError:
        raise RocketChatUnavailableError(
            f"the export did not finish within {time_limit:g} s",
            hint="raise --timeout",
            method="GET",
            path="/api/v1/email-inbox.list",
        ) from None
    return render_inbox_file(stored, server=server, department_ids=department_ids)


def render_inbox_file(
    stored: Sequence[Mapping[str, Any]],
    *,
    server: str | None = None,
    department_ids: set[str] | None = None,
) -> ExportResult:
    """Render stored inboxes (as ``email-inbox.list`` returns them) as an inbox file.

    Pure: no I/O. Passwords in ``stored`` are ignored; each becomes a ``${VAR}``.
    The inboxes are sorted by name, then address, so that the same server state
    always gives the same file.

    Args:
        stored: the inbox documents.
        server: named in the header comment, when given.
        department_ids: the departments Rocket.Chat lists; an inbox naming another
            id draws a warning. ``None`` skips the check.
    """
    docs = sorted(
        (_without_passwords(doc) for doc in stored),
        key=lambda d: (str(d.get("name", "")), str(d.get("email", ""))),
    )
    used: set[str] = set()
    passwords: list[PasswordReference] = []
    warnings: list[str] = []
    inboxes: list[dict[str, Any]] = []
    for index, doc in enumerate(docs):
        email = doc.get("email")
        label = _printable(str(email if email is not None else doc.get("name", f"#{index}")))
        base = _unique(_variable_base(doc, index), used)
        # The password's place is kept (None); the ${VAR} goes there.
        inbox = file_mapping(doc, passwords=False)
        for section in _SECTIONS:
            settings = inbox.get(section.key)
            if not isinstance(settings, dict):
                continue
            for spec in section.fields:
                if spec.secret:
                    # smtp.password -> SUPPORT_EXAMPLE_COM_SMTP_PASSWORD
                    variable = f"{base}_{spec.path.replace('.', '_').upper()}"
                    settings[spec.key] = f"${{{variable}}}"
                    passwords.append(PasswordReference(variable, str(email), spec.path))
        section_key, _, retries_key = _MAX_RETRIES.path.partition(".")
        imap = doc.get(section_key)
        if isinstance(imap, Mapping) and retries_key not in imap:
            warnings.append(
                f"{label}: stored without {_MAX_RETRIES.path}; the file gets the default "
                f"({_MAX_RETRIES.default}), so `provision set` will update the inbox"
            )
        department = doc.get("department")
        if department_ids is not None and department and str(department) not in department_ids:
            warnings.append(
                f"{label}: department {_printable(str(department))!r} is not among the "
                "departments Rocket.Chat lists; `provision set` will refuse it"
            )
        inboxes.append(inbox)
    if not inboxes:
        warnings.append("Rocket.Chat has no email inboxes; `provision set` needs at least one")
    text = _header(server, passwords) + _dump({"inboxes": inboxes})
    problems = _validate(text, passwords) if inboxes else ()
    return ExportResult(
        text=text,
        passwords=tuple(passwords),
        count=len(inboxes),
        warnings=tuple(warnings),
        problems=problems,
    )


def _without_passwords(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a stored inbox without its passwords (which are never needed here)."""
    out = dict(doc)
    for section in _SECTIONS:
        settings = out.get(section.key)
        if isinstance(settings, Mapping):
            secret = {spec.key for spec in section.fields if spec.secret}
            out[section.key] = {k: v for k, v in settings.items() if k not in secret}
    return out


def _variable_base(doc: Mapping[str, Any], index: int) -> str:
    """``support@example.com`` -> ``SUPPORT_EXAMPLE_COM``: a valid variable name."""
    for candidate in (doc.get("email"), doc.get("name")):
        if not isinstance(candidate, str):
            continue
        ascii_text = unicodedata.normalize("NFKD", candidate).encode("ascii", "ignore").decode()
        base = _NOT_NAME.sub("_", ascii_text).strip("_").upper()
        if base:
            return base if not base[0].isdigit() else f"INBOX_{base}"
    return f"INBOX_{index + 1}"


def _unique(base: str, used: set[str]) -> str:
    # Names end in _SMTP_PASSWORD / _IMAP_PASSWORD, so distinct bases give distinct names.
    name, n = base, 1
    while name in used:
        n += 1
        name = f"{base}_{n}"
    used.add(name)
    return name


def _printable(text: str) -> str:
    """Text safe inside a comment or message: no line breaks or control characters."""
    return "".join(char if char.isprintable() else "?" for char in text)


def _header(server: str | None, passwords: Sequence[PasswordReference]) -> str:
    where = f" from {_printable(server)}" if server else ""
    lines = [f"# Email inboxes exported{where} by provision {__version__}."]
    if passwords:
        width = max(len(ref.variable) for ref in passwords)
        lines += [
            "# The passwords are not in this file. Set these environment variables before",
            "# `provision check` or `provision set` (or write ${file:PATH} instead):",
            *(
                f"#   {ref.variable:<{width}}  {ref.field} of {_printable(ref.email)}"
                for ref in passwords
            ),
        ]
    lines.append("# department is the Omnichannel department id; its name works too.")
    return "\n".join(lines) + "\n"


def _dump(document: Mapping[str, Any]) -> str:
    import yaml

    class _Dumper(yaml.SafeDumper):
        # Indent list items under their key, as the README's examples are written.
        def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
            super().increase_indent(flow, False)

    def represent_text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        # Double quotes escape line breaks and control characters (\x85, \u2028, \t);
        # PyYAML writes some of them raw in other styles, and a reader folds them.
        style = None if value.isprintable() else '"'
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, represent_text)
    text: str = yaml.dump(
        dict(document),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 16,
    )
    return text


def _validate(text: str, passwords: Sequence[PasswordReference]) -> tuple[ConfigProblem, ...]:
    """Load the file as ``set`` would (placeholder passwords); return what it refuses."""
    from provision.inbox import load_inboxes

    environ = {ref.variable: "placeholder" for ref in passwords}
    try:
        load_inboxes(["-"], environ=environ, stdin=io.StringIO(text))
    except ConfigError as exc:
        return tuple(dataclasses.replace(problem, file=None) for problem in exc.problems)
    return ()
