"""The one field table of an inbox: every key of Rocket.Chat's ``POST /api/v1/email-inbox``
body (spec §1.2) with its type, presence, default, secrecy, meaning and value rules.

The loader validates with it, the JSON Schema is generated from it, and the request
payload, ``export`` and the Rocket.Chat double can walk it instead of listing keys.
An inbox file uses Rocket.Chat's words, so a field's ``path`` is both its place in the
file and in the request body; ``attr`` is its attribute on the models (``provision.models``).

    for spec in walk():                # every field, depth first
        spec.path, spec.kind, spec.secret
    field("imap.maxRetries").default   # 10
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as _dataclass_field
from enum import Enum
from typing import Any

from provision.models import DEFAULT_MAX_RETRIES

__all__ = [
    "FIELDS",
    "IMAP_FIELDS",
    "SMTP_FIELDS",
    "Field",
    "Kind",
    "e5_required",
    "field",
    "secret_paths",
    "server_order",
    "walk",
]


class Kind(Enum):
    """A field's JSON type; the value is how messages name it."""

    STRING = "a string"
    INTEGER = "an integer"
    BOOLEAN = "true or false"
    MAPPING = "a mapping"

    @property
    def js_type(self) -> str:
        """JavaScript's ``typeof`` name: what Rocket.Chat's ``check()`` and AJV compare."""
        return _JS_TYPES[self]


_JS_TYPES: dict[Kind, str] = {
    Kind.STRING: "string",
    Kind.INTEGER: "number",
    Kind.BOOLEAN: "boolean",
    Kind.MAPPING: "object",
}


@dataclass(frozen=True, slots=True)
class Field:
    """One key of the inbox body.

    Attributes:
        path: dotted key path, the same in the file and in Rocket.Chat's body
            (``"imap.maxRetries"``).
        kind: the JSON type.
        attr: the attribute on ``Inbox``/``SmtpSettings``/``ImapSettings``
            (``"max_retries"``); defaults to the key.
        required: the key must be present.
        nullable: ``null`` is accepted; for these optional texts absent, null and
            empty all mean none. Rocket.Chat takes them as ``Match.Maybe`` (E4)
            and does not require them (E5); it requires every other key.
        default: what an absent optional key means (None: none).
        e5_default: what Rocket.Chat's E5 handler stores for an absent key that AJV
            no longer requires (``imap.maxRetries``: 5, spec §1.2); None: required.
        secret: never shown, logged or diffed by value.
        doc: what the field means (the JSON Schema's description).
        expected: what a valid value looks like, for messages (derived when empty).
        check: a rule beyond the type; returns None when the value is fine, else a
            short reason ("" for none).
        schema: JSON Schema keywords stating ``check`` as far as a schema can.
        fields: the keys inside a mapping field.
    """

    path: str
    kind: Kind
    attr: str = ""
    required: bool = True
    nullable: bool = False
    default: bool | int | None = None
    e5_default: int | None = None
    secret: bool = False
    doc: str = ""
    expected: str = ""
    check: Callable[[Any], str | None] | None = None
    schema: Mapping[str, Any] = _dataclass_field(default_factory=dict)
    fields: tuple[Field, ...] = ()

    def __post_init__(self) -> None:
        if not self.attr:
            object.__setattr__(self, "attr", self.key)

    @property
    def key(self) -> str:
        """The last part of the path: the key inside its mapping."""
        return self.path.rpartition(".")[2]

    @property
    def expects(self) -> str:
        """What a valid value looks like, for messages."""
        if self.expected:
            return self.expected
        if self.fields:
            return f"a mapping with {', '.join(f.key for f in self.fields)}"
        return f"{self.kind.value} or null" if self.nullable else self.kind.value


def walk(fields: tuple[Field, ...] | None = None) -> Iterator[Field]:
    """Every field of ``fields`` (default :data:`FIELDS`), each mapping before its keys."""
    for spec in FIELDS if fields is None else fields:
        yield spec
        yield from walk(spec.fields)


def field(path: str) -> Field:
    """The field at a dotted path; raise :class:`KeyError` for an unknown one."""
    for spec in walk():
        if spec.path == path:
            return spec
    raise KeyError(path)


def secret_paths() -> frozenset[str]:
    """The paths of the secret fields (``smtp.password``, ``imap.password``)."""
    return frozenset(spec.path for spec in walk() if spec.secret)


def server_order(fields: tuple[Field, ...] | None = None) -> tuple[Field, ...]:
    """``fields`` (default :data:`FIELDS`) in Rocket.Chat's own key order.

    Its ``check()`` pattern and update ``$set`` (``email-inbox.ts``, spec §1.2) put
    ``active`` before ``name`` and ``email``; the table keeps the file's order.
    """
    fields = FIELDS if fields is None else fields
    return tuple(sorted(fields, key=lambda spec: spec.key != "active"))


def e5_required(fields: tuple[Field, ...] | None = None) -> tuple[Field, ...]:
    """The keys of ``fields`` (default :data:`FIELDS`) that AJV requires (E5), in its order.

    AJV reports the first missing key of its schema's ``required`` list (rest-typings
    ``isEmailInbox``, spec §1.2): the table's order at the top level, alphabetical
    inside ``smtp``/``imap``.
    """
    fields = FIELDS if fields is None else fields
    required = [spec for spec in fields if not spec.nullable and spec.e5_default is None]
    if all("." in spec.path for spec in required):
        required.sort(key=lambda spec: spec.key)
    return tuple(required)


# --- value rules -----------------------------------------------------------------

_DOMAIN_LABEL = r"[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?"


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
    if not all(re.fullmatch(_DOMAIN_LABEL, label) for label in domain.split(".")):
        return "not a valid domain after '@'"
    return None


# "host:587", "[2001:db8::1]:587"; a bare IPv6 address has more than one colon.
_HOST_AND_PORT = r"(?:\[[^\]]*\]|[^:\[\]]+):[0-9]*"


def _host_rule(protocol: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        # Messages never repeat the value: it may come from ${...}.
        if not value.strip():
            return ""
        if "://" in value:
            return (
                f"a URL; write only the host name in {protocol}.server, "
                f"the port in {protocol}.port and TLS in {protocol}.secure"
            )
        if re.fullmatch(_HOST_AND_PORT, value):
            return f"a port after the host; write only the host here, the port in {protocol}.port"
        if any(char.isspace() for char in value):
            return "contains whitespace"
        return None

    return check


def _check_not_empty(value: str) -> str | None:
    return "" if not value.strip() else None


def _check_credential(value: str) -> str | None:
    # Rocket.Chat's mail clients do not send empty credentials: it could never log in.
    return "Rocket.Chat cannot log in without it" if value == "" else None


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


def _server_fields(protocol: str, *extra: Field) -> tuple[Field, ...]:
    name = protocol.upper()
    return (
        Field(
            f"{protocol}.server",
            Kind.STRING,
            expected="a host name",
            check=_host_rule(protocol),
            doc=f"{name} server host name or address (not a URL)",
            schema={"pattern": _HOST_PATTERN},
        ),
        Field(
            f"{protocol}.port",
            Kind.INTEGER,
            expected="an integer from 1 to 65535",
            check=_check_port,
            doc=f"{name} server port",
            schema={"minimum": 1, "maximum": 65535},
        ),
        Field(
            f"{protocol}.username",
            Kind.STRING,
            expected="a non-empty string",
            check=_check_credential,
            doc=f"{name} login name",
            schema={"minLength": 1},
        ),
        Field(
            f"{protocol}.password",
            Kind.STRING,
            secret=True,
            expected="a non-empty string",
            check=_check_credential,
            doc=f"{name} password; write ${{VAR}} or ${{file:PATH}} rather than the secret",
            schema={"minLength": 1},
        ),
        Field(f"{protocol}.secure", Kind.BOOLEAN, doc=_SECURE_DOC[protocol]),
        *extra,
    )


#: The keys of ``smtp`` (``SmtpSettings``).
SMTP_FIELDS = _server_fields("smtp")

#: The keys of ``imap`` (``ImapSettings``).
IMAP_FIELDS = _server_fields(
    "imap",
    Field(
        "imap.maxRetries",
        Kind.INTEGER,
        attr="max_retries",
        required=False,
        default=DEFAULT_MAX_RETRIES,
        e5_default=5,
        expected="-1 (retry forever) or an integer from 0 up",
        check=_check_max_retries,
        doc="Failed IMAP reconnects after which Rocket.Chat switches the inbox off",
        schema={"minimum": -1},
    ),
)

#: The top-level keys of an inbox, in the file's order (``Inbox``); Rocket.Chat's own
#: order is :func:`server_order`.
FIELDS: tuple[Field, ...] = (
    Field(
        "name",
        Kind.STRING,
        expected="a non-empty string",
        check=_check_not_empty,
        doc="Name of the inbox in Rocket.Chat",
        schema={"pattern": r"\S"},
    ),
    Field(
        "email",
        Kind.STRING,
        expected="an email address like name@example.com",
        check=_check_email,
        doc="Address of the inbox; it identifies the inbox on Rocket.Chat",
        schema={"pattern": _EMAIL_PATTERN},
    ),
    Field(
        "active",
        Kind.BOOLEAN,
        required=False,
        default=True,
        doc="Whether Rocket.Chat uses the inbox",
    ),
    Field(
        "description",
        Kind.STRING,
        required=False,
        nullable=True,
        doc="Free text; missing means none",
    ),
    Field(
        "senderInfo",
        Kind.STRING,
        attr="sender_info",
        required=False,
        nullable=True,
        doc="Display name in the From: header; missing means none",
    ),
    Field(
        "department",
        Kind.STRING,
        required=False,
        nullable=True,
        doc="Omnichannel department id or name; missing means none",
    ),
    Field("smtp", Kind.MAPPING, fields=SMTP_FIELDS, doc="Outgoing mail"),
    Field("imap", Kind.MAPPING, fields=IMAP_FIELDS, doc="Incoming mail"),
)
