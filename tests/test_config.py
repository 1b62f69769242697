"""Tests for provision.inbox: loading, validating and interpolating inbox files."""

from __future__ import annotations

import io
import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from provision.errors import ConfigError, ConfigProblem
from provision.inbox import LoadResult, load_inboxes
from provision.models import DEFAULT_MAX_RETRIES, Inbox, Secret
from provision.results import ExitCode

CANARY = "CANARY-s3cr3t-value-9f1e"

BASE = """\
name: Support
email: support@example.com
smtp:
  server: smtp.example.com
  port: 587
  username: support
  password: smtp-pass
  secure: false
imap:
  server: imap.example.com
  port: 993
  username: support
  password: imap-pass
  secure: true
"""

BASE_DICT = {
    "name": "Support",
    "email": "support@example.com",
    "smtp": {
        "server": "smtp.example.com",
        "port": 587,
        "username": "support",
        "password": "smtp-pass",
        "secure": False,
    },
    "imap": {
        "server": "imap.example.com",
        "port": 993,
        "username": "support",
        "password": "imap-pass",
        "secure": True,
    },
}


def edit(text: str, path: str, raw: str | None) -> str:
    """Set ``path`` (``name`` or ``smtp.port``) to the raw YAML ``raw``; None deletes it."""
    section, _, key = path.rpartition(".")
    lines = text.splitlines()
    indent = "  " if section else ""
    start = lines.index(f"{section}:") + 1 if section else 0
    end = start
    while end < len(lines) and (not section or lines[end].startswith("  ")):
        if lines[end].startswith(f"{indent}{key}:"):
            if raw is None:
                del lines[end]
            else:
                lines[end] = f"{indent}{key}: {raw}".rstrip()
            return "\n".join(lines) + "\n"
        end += 1
    assert raw is not None, f"{path} not in text"
    lines.insert(end, f"{indent}{key}: {raw}".rstrip())
    return "\n".join(lines) + "\n"


def to_yaml(data: object, *, sort_keys: bool = True) -> str:
    """Dump as YAML without anchors: dicts shared between inboxes would become aliases."""
    return yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=sort_keys)


def write(directory: Path, name: str, content: str | bytes) -> str:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def load_text(text: str, **kwargs: object) -> LoadResult:
    """Load ``text`` through ``-`` with an empty environment unless one is given."""
    kwargs.setdefault("environ", {})
    return load_inboxes(["-"], stdin=io.StringIO(text), **kwargs)  # type: ignore[arg-type]


def problems_of(text: str, **kwargs: object) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        load_text(text, **kwargs)
    return info.value.problems


def only_problem(text: str, **kwargs: object) -> ConfigProblem:
    problems = problems_of(text, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


# --- loading valid input ------------------------------------------------------------


def test_load_single_yaml_inbox_builds_models(tmp_path: Path) -> None:
    path = write(tmp_path, "support.yaml", BASE)

    result = load_inboxes([path], environ={})

    assert result.warnings == {}
    [inbox] = result.inboxes
    assert inbox.name == "Support"
    assert inbox.email == "support@example.com"
    assert inbox.active is True
    assert (inbox.description, inbox.sender_info, inbox.department) == (None, None, None)
    assert inbox.smtp.server == "smtp.example.com"
    assert inbox.smtp.port == 587
    assert inbox.smtp.username == "support"
    assert inbox.smtp.password == Secret("smtp-pass")
    assert inbox.smtp.secure is False
    assert inbox.imap.port == 993
    assert inbox.imap.secure is True
    assert inbox.imap.password.reveal() == "imap-pass"
    assert inbox.imap.max_retries == DEFAULT_MAX_RETRIES


def test_load_records_source_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "support.yaml", BASE)

    [inbox] = load_inboxes([path], environ={}).inboxes

    assert inbox.source.file == path
    assert inbox.source.index == 0
    assert inbox.source.line == 1
    assert inbox.source.lines["name"] == 1
    assert inbox.source.lines["smtp"] == 3
    assert inbox.source.lines["smtp.port"] == 5
    assert inbox.source.lines["imap.secure"] == 14
    assert inbox.source.line_of("imap.maxRetries") == 9  # falls back to "imap"


def test_load_optional_fields(tmp_path: Path) -> None:
    text = BASE + "active: false\ndescription: Front desk\nsenderInfo: Support Team\n"
    text += "department: dep123\n"
    text = edit(text, "imap.maxRetries", "-1")

    [inbox] = load_text(text).inboxes

    assert inbox.active is False
    assert inbox.description == "Front desk"
    assert inbox.sender_info == "Support Team"
    assert inbox.department == "dep123"
    assert inbox.imap.max_retries == -1


def test_load_null_optional_fields_are_none() -> None:
    text = BASE + "description: null\nsenderInfo: ~\ndepartment:\n"

    [inbox] = load_text(text).inboxes

    assert (inbox.description, inbox.sender_info, inbox.department) == (None, None, None)


def test_load_empty_strings_kept_for_optional_fields() -> None:
    [inbox] = load_text(BASE + 'description: ""\n').inboxes

    assert inbox.description == ""


@pytest.mark.parametrize("word", ["yes", "on", "true", "True"])
def test_load_yaml_boolean_words_are_booleans(word: str) -> None:
    [inbox] = load_text(edit(BASE, "smtp.secure", word)).inboxes

    assert inbox.smtp.secure is True


def test_load_json_inbox_with_tabs_and_lines(tmp_path: Path) -> None:
    text = json.dumps(BASE_DICT, indent="\t")
    path = write(tmp_path, "support.json", text)

    [inbox] = load_inboxes([path], environ={}).inboxes

    assert inbox.smtp.port == 587
    assert inbox.source.lines["name"] == 2
    assert inbox.source.lines["smtp.port"] == 6
    assert inbox.source.lines["imap"] == 11


def test_load_json_content_in_yaml_file_uses_json_rules(tmp_path: Path) -> None:
    body = {**BASE_DICT, "description": "1e5"}
    path = write(tmp_path, "support.yaml", json.dumps(body, indent="\t"))

    [inbox] = load_inboxes([path], environ={}).inboxes

    assert inbox.description == "1e5"


def test_load_inboxes_list(tmp_path: Path) -> None:
    second = {**BASE_DICT, "name": "Sales", "email": "sales@example.com"}
    text = to_yaml({"inboxes": [BASE_DICT, second]}, sort_keys=False)
    path = write(tmp_path, "all.yaml", text)

    inboxes = load_inboxes([path], environ={}).inboxes

    assert [i.name for i in inboxes] == ["Support", "Sales"]
    assert [i.source.index for i in inboxes] == [0, 1]
    assert inboxes[1].source.line == text.splitlines().index("- name: Sales") + 1


def test_load_several_files_in_order(tmp_path: Path) -> None:
    second = {**BASE_DICT, "name": "Sales", "email": "sales@example.com"}
    first_path = write(tmp_path, "a.yaml", BASE)
    second_path = write(tmp_path, "b.json", json.dumps({"inboxes": [second]}))

    inboxes = load_inboxes([second_path, first_path], environ={}).inboxes

    assert [(i.name, i.source.file) for i in inboxes] == [
        ("Sales", second_path),
        ("Support", first_path),
    ]


def test_load_stdin_with_dash(tmp_path: Path) -> None:
    file_path = write(tmp_path, "file.yaml", BASE)
    stdin_text = edit(BASE, "email", "other@example.com")

    inboxes = load_inboxes([file_path, "-"], environ={}, stdin=io.StringIO(stdin_text)).inboxes

    assert [i.email for i in inboxes] == ["support@example.com", "other@example.com"]
    assert inboxes[1].source.file == "<stdin>"


def test_load_stdin_reads_bytes_of_a_text_wrapper() -> None:
    # Reading through the latin-1 text layer would give "BÃ¼ro".
    data = edit(BASE, "name", "Büro").encode()
    stream = io.TextIOWrapper(io.BytesIO(data), encoding="latin-1")

    [inbox] = load_inboxes(["-"], environ={}, stdin=stream).inboxes

    assert inbox.name == "Büro"


def test_load_utf8_bom_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "bom.yaml", b"\xef\xbb\xbf" + edit(BASE, "name", "Büro").encode())

    [inbox] = load_inboxes([path], environ={}).inboxes

    assert inbox.name == "Büro"


def test_load_anchor_without_alias_is_fine() -> None:
    [inbox] = load_text(edit(BASE, "name", "&n Support")).inboxes

    assert inbox.name == "Support"


# --- input-level problems ----------------------------------------------------------


def test_load_paths_must_not_be_one_string() -> None:
    with pytest.raises(TypeError, match="not one string"):
        load_inboxes("inbox.yaml", environ={})


def test_load_no_paths_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no inbox files given"):
        load_inboxes([], environ={})


@pytest.mark.parametrize("content", ["", "   \n\n", "# only a comment\n", "---\n"])
def test_load_empty_file(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, "empty.yaml", content)

    with pytest.raises(ConfigError) as info:
        load_inboxes([path], environ={})

    [problem] = info.value.problems
    assert problem.file == path
    assert problem.message.startswith("file is empty")


def test_load_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.yaml")

    with pytest.raises(ConfigError) as info:
        load_inboxes([path], environ={})

    assert info.value.problems == [ConfigProblem("no such file", file=path)]


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_inboxes([str(tmp_path)], environ={})


def test_load_non_utf8_file_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "latin1.yaml", BASE.replace("Support", "B\xfcro").encode("latin-1"))

    with pytest.raises(ConfigError) as info:
        load_inboxes([path], environ={})

    [problem] = info.value.problems
    assert problem.line == 1
    assert "not valid UTF-8 (byte 0xfc at line 1)" in problem.message


def test_load_non_utf8_stdin() -> None:
    stream = io.TextIOWrapper(io.BytesIO(b"name: \xff\n"), encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        load_inboxes(["-"], environ={}, stdin=stream)

    [problem] = info.value.problems
    assert problem.file == "<stdin>"
    assert "not valid UTF-8" in problem.message


def test_load_stdin_twice_is_an_error() -> None:
    with pytest.raises(ConfigError, match="'-' given more than once"):
        load_inboxes(["-", "-"], environ={}, stdin=io.StringIO(BASE))


def test_load_malformed_yaml_reports_line_and_column() -> None:
    text = 'name: Support\nemail: "support@example.com\nsmtp: {}\n'

    problem = only_problem(text)

    assert problem.line == 4
    assert problem.message == (
        "invalid YAML at column 1: while scanning a quoted scalar at line 2, "
        "found unexpected end of stream"
    )


def test_load_malformed_yaml_bad_indentation() -> None:
    problem = only_problem("name: a\n  email: b\n")

    assert problem.line == 2
    assert problem.message.startswith("invalid YAML at column 8:")


def test_load_malformed_json_reports_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.json", '{\n  "name": "Support",\n  "email": "x@example.com",\n}\n')

    with pytest.raises(ConfigError) as info:
        load_inboxes([path], environ={})

    [problem] = info.value.problems
    assert (problem.file, problem.line) == (path, 4)
    assert problem.message == (
        "invalid JSON at column 1: expecting property name enclosed in double quotes"
    )


def test_load_yaml_in_json_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "inbox.json", BASE)

    with pytest.raises(ConfigError, match="invalid JSON at column 1"):
        load_inboxes([path], environ={})


def test_load_multiple_documents_refused() -> None:
    problem = only_problem(BASE + "---\n" + BASE)

    assert "expected a single document" in problem.message


def test_load_control_character_refused() -> None:
    problem = only_problem("name: a\nemail: b\x07\n")

    assert problem.line == 2
    assert "U+0007 is not allowed" in problem.message


def test_load_deep_nesting_refused() -> None:
    problem = only_problem("[" * 50_000)

    assert problem.message == "nested too deeply"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("- a\n- b\n", "got a list (put the list under 'inboxes:')", id="list"),
        pytest.param("hello\n", "got string", id="string"),
        pytest.param("42\n", "got integer", id="integer"),
    ],
)
def test_load_top_level_must_be_a_mapping(text: str, expected: str) -> None:
    problem = only_problem(text)

    assert problem.message.startswith("expected one inbox (a mapping with name, email")
    assert problem.message.endswith(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("inboxes:\n", "expected a list of inbox mappings, got null", id="null"),
        pytest.param("inboxes: []\n", "got an empty list", id="empty"),
        pytest.param("inboxes: {a: 1}\n", "got mapping", id="mapping"),
    ],
)
def test_load_inboxes_key_needs_a_list(text: str, message: str) -> None:
    problem = only_problem(text)

    assert problem.field == "inboxes"
    assert message in problem.message


def test_load_inboxes_item_not_a_mapping() -> None:
    text = to_yaml({"inboxes": [BASE_DICT, "oops"]}, sort_keys=False)

    problem = only_problem(text)

    assert problem.inbox == "#1"
    assert problem.message == "expected an inbox mapping, got string"


def test_load_inboxes_with_sibling_key() -> None:
    text = "name: stray\ninboxes:\n" + textwrap.indent(to_yaml([BASE_DICT], sort_keys=False), "  ")

    problem = only_problem(text)

    assert (problem.line, problem.field) == (1, "name")
    assert "next to 'inboxes'" in problem.message


# --- fields: types, ranges, formats ---------------------------------------------------


@pytest.mark.parametrize(
    ("path", "raw", "message"),
    [
        pytest.param(
            "smtp.port",
            '"587"',
            "expected an integer from 1 to 65535, got string '587' (remove the quotes)",
            id="port-quoted",
        ),
        pytest.param(
            "smtp.port",
            "true",
            "expected an integer from 1 to 65535, got boolean true",
            id="port-bool",
        ),
        pytest.param(
            "imap.port",
            "993.0",
            "expected an integer from 1 to 65535, got float 993.0 "
            "(write it without a decimal point)",
            id="port-float",
        ),
        pytest.param(
            "imap.port",
            "[993]",
            "expected an integer from 1 to 65535, got a list",
            id="port-list",
        ),
        pytest.param(
            "smtp.secure",
            '"true"',
            "expected true or false, got string 'true' (remove the quotes)",
            id="secure-quoted",
        ),
        pytest.param(
            "imap.secure",
            "1",
            "expected true or false, got integer 1 (write true or false)",
            id="secure-int",
        ),
        pytest.param(
            "active",
            "'yes'",
            "expected true or false, got string 'yes' (write true or false)",
            id="active-quoted-yes",
        ),
        pytest.param(
            "name",
            "yes",
            "expected a non-empty string, got boolean yes "
            "(quote it so that it is read as a string)",
            id="name-yaml-bool",
        ),
        pytest.param(
            "name",
            "2024",
            "expected a non-empty string, got integer 2024 "
            "(quote it so that it is read as a string)",
            id="name-int",
        ),
        pytest.param("name", "", "expected a non-empty string, got null", id="name-null"),
        pytest.param("name", '"  "', "expected a non-empty string, got '  '", id="name-blank"),
        pytest.param(
            "email",
            "2024-01-01",
            "expected an email address like name@example.com, got date 2024-01-01 "
            "(quote it so that it is read as a string)",
            id="email-date",
        ),
        pytest.param(
            "description",
            "12",
            "expected a string or null, got integer 12 (quote it so that it is read as a string)",
            id="description-int",
        ),
        pytest.param(
            "senderInfo", "[a, b]", "expected a string or null, got a list", id="senderinfo-list"
        ),
        pytest.param(
            "department",
            "off",
            "expected a string or null, got boolean off (quote it so that it is read as a string)",
            id="department-bool",
        ),
        pytest.param(
            "smtp.username",
            "1.5",
            "expected a non-empty string, got float 1.5 (quote it so that it is read as a string)",
            id="username-float",
        ),
        pytest.param(
            "smtp.username",
            "{a: 1}",
            "expected a non-empty string, got a mapping",
            id="username-mapping",
        ),
        pytest.param(
            "smtp.server", '""', "expected a host name, got an empty string", id="server-empty"
        ),
        pytest.param(
            "smtp.server",
            "smtp://mail.example.com",
            "expected a host name, got 'smtp://mail.example.com' (a URL; write only the host "
            "name in smtp.server, the port in smtp.port and TLS in smtp.secure)",
            id="server-url",
        ),
        pytest.param(
            "imap.server",
            '"imap example.com"',
            "expected a host name, got 'imap example.com' (contains whitespace)",
            id="server-space",
        ),
        pytest.param(
            "imap.maxRetries",
            '"10"',
            "expected -1 (retry forever) or an integer from 0 up, got string '10' "
            "(remove the quotes)",
            id="retries-quoted",
        ),
        pytest.param(
            "imap.maxRetries",
            "-2",
            "expected -1 (retry forever) or an integer from 0 up, got -2 (out of range)",
            id="retries-below",
        ),
        pytest.param(
            "imap.port",
            '"${IMAP_PORT}"',
            "expected an integer from 1 to 65535, got string '${IMAP_PORT}' "
            "(${...} works only in string fields)",
            id="port-interpolation",
        ),
        pytest.param(
            "smtp.port",
            "!!int x",
            "the value tagged 'tag:yaml.org,2002:int' is not a valid integer",
            id="bad-explicit-int",
        ),
        pytest.param(
            "smtp.port", "!port 587", "unsupported YAML tag '!port'; remove the tag", id="tag"
        ),
    ],
)
def test_field_type_errors(path: str, raw: str, message: str) -> None:
    problem = only_problem(edit(BASE, path, raw), environ={"IMAP_PORT": "993"})

    assert problem.field == path
    assert problem.message == message
    assert problem.inbox in {"Support", "#0"}


@pytest.mark.parametrize("port", [0, 65536, -25])
def test_port_out_of_range(port: int) -> None:
    problem = only_problem(edit(BASE, "smtp.port", str(port)))

    assert problem.message == (f"expected an integer from 1 to 65535, got {port} (out of range)")


@pytest.mark.parametrize("port", [1, 65535])
def test_port_range_edges_accepted(port: int) -> None:
    [inbox] = load_text(edit(BASE, "imap.port", str(port))).inboxes

    assert inbox.imap.port == port


def test_port_bool_refused_in_json(tmp_path: Path) -> None:
    body = {**BASE_DICT, "smtp": {**BASE_DICT["smtp"], "port": True}}  # type: ignore[dict-item]
    path = write(tmp_path, "inbox.json", json.dumps(body))

    with pytest.raises(ConfigError) as info:
        load_inboxes([path], environ={})

    [problem] = info.value.problems
    assert problem.message == "expected an integer from 1 to 65535, got boolean true"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        pytest.param("123456", "integer", id="int"),
        pytest.param("yes", "boolean", id="bool"),
        pytest.param("0x1F", "integer", id="hex"),
    ],
)
def test_password_resolved_as_non_string_says_quote_it(raw: str, shown: str) -> None:
    problem = only_problem(edit(BASE, "imap.password", raw))

    assert problem.field == "imap.password"
    assert problem.message == (
        f"expected a non-empty string, got {shown} "
        "(quote the password so that it is read as a string)"
    )
    assert raw not in str(problem)


def test_password_null_is_an_error() -> None:
    problem = only_problem(edit(BASE, "smtp.password", "~"))

    assert problem.message == "expected a non-empty string, got null"


def test_yaml_python_tag_refused_not_executed() -> None:
    problem = only_problem(edit(BASE, "name", "!!python/object/apply:os.system ['true']"))

    assert problem.message.startswith("unsupported YAML tag 'tag:yaml.org,2002:python/object")


@pytest.mark.parametrize(
    ("email", "reason"),
    [
        ("plain.example.com", "no '@'"),
        ("a@b@example.com", "more than one '@'"),
        ("@example.com", "nothing before '@'"),
        ("support@", "nothing after '@'"),
        ("sup port@example.com", "contains whitespace"),
        ("support@exa mple.com", "contains whitespace"),
        ("support@-example.com", "not a valid domain after '@'"),
        ("support@example..com", "not a valid domain after '@'"),
        ("support@example.com.", "not a valid domain after '@'"),
        ("support@exa_mple.com", "not a valid domain after '@'"),
    ],
)
def test_email_format_refused(email: str, reason: str) -> None:
    problem = only_problem(edit(BASE, "email", json.dumps(email)))

    assert problem.field == "email"
    assert problem.message == (
        f"expected an email address like name@example.com, got {email!r} ({reason})"
    )


@pytest.mark.parametrize(
    "email",
    [
        "support@example.com",
        "first.last+tag@mail.example.co.uk",
        "root@localhost",
        "kontakt@bücher.de",
        "x@1.2.3.4",
    ],
)
def test_email_format_accepted(email: str) -> None:
    [inbox] = load_text(edit(BASE, "email", json.dumps(email))).inboxes

    assert inbox.email == email


# --- keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "suggestion"),
    [
        pytest.param("smtp.sercure", "secure", id="typo"),
        pytest.param("descripton", "description", id="typo-top"),
        pytest.param("sender_info", "senderInfo", id="snake"),
        pytest.param("imap.max_retries", "maxRetries", id="snake-nested"),
        pytest.param("imap.max-retries", "maxRetries", id="kebab"),
        pytest.param("Name", "name", id="case"),
        pytest.param("smtp.host", "server", id="host"),
        pytest.param("imap.hostname", "server", id="hostname"),
        pytest.param("smtp.user", "username", id="user"),
        pytest.param("smtp.tls", "secure", id="tls"),
        pytest.param("imap.ssl", "secure", id="ssl"),
        pytest.param("imap.pass", "password", id="pass"),
        pytest.param("enabled", "active", id="enabled"),
        pytest.param("inboxs", "inboxes", id="inboxes"),
    ],
)
def test_unknown_key_suggests(path: str, suggestion: str) -> None:
    problem = only_problem(edit(BASE, path, "x"))

    assert problem.field == path
    assert problem.message == f"unknown key (did you mean {suggestion!r}?)"


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("nmae", "name"), ("smtp.sever", "server"), ("imap.pasword", "password"), ("emial", "email")],
)
def test_a_typo_of_a_required_key_is_one_error_not_two(typo: str, meant: str) -> None:
    """The misspelt key is unknown and the key it was meant to be is then missing: one
    mistake, so one error, naming both."""
    section = typo.rpartition(".")[0]
    target = f"{section}.{meant}" if section else meant
    original = dict(line.strip().split(": ", 1) for line in BASE.splitlines() if ": " in line)
    text = edit(edit(BASE, target, None), typo, original[meant])

    problem = only_problem(text)

    assert problem.field == typo
    assert problem.message == f"unknown key (did you mean {meant!r}?)"


def test_alias_for_a_key_of_another_level_lists_keys() -> None:
    problem = only_problem(edit(BASE, "smtp.maxRetries", "3"))

    assert problem.message == (
        "unknown key; expected one of: server, port, username, password, secure"
    )


def test_unknown_key_without_match_lists_keys() -> None:
    problem = only_problem(BASE + "zzz: 1\n")

    assert problem.message.startswith("unknown key; expected one of: name, email, active,")
    assert "inboxes" not in problem.message


def test_missing_required_keys() -> None:
    text = edit(edit(BASE, "email", None), "imap.port", None)

    with pytest.raises(ConfigError) as info:
        load_text(text)

    by_field = {p.field: p for p in info.value.problems}
    assert set(by_field) == {"email", "imap.port"}
    assert by_field["email"].message == ("missing; expected an email address like name@example.com")
    assert by_field["email"].line == 1
    assert by_field["imap.port"].line == 9


def test_empty_mapping_reports_each_required_key() -> None:
    problems = problems_of("{}\n")

    assert [p.field for p in problems] == ["name", "email", "smtp", "imap"]
    assert problems[2].message == (
        "missing; expected a mapping with server, port, username, password, secure"
    )
    assert all(p.inbox == "#0" for p in problems)


def test_smtp_must_be_a_mapping() -> None:
    text = BASE.split("smtp:")[0] + "smtp: smtp.example.com\nimap:" + BASE.split("imap:")[1]

    problem = only_problem(text)

    assert problem.field == "smtp"
    assert problem.message == (
        "expected a mapping with server, port, username, password, secure, "
        "got string 'smtp.example.com'"
    )


def test_duplicate_key_names_key_and_both_lines() -> None:
    problem = only_problem(edit(BASE, "smtp.server", "a.example.com\n  server: b.example.com"))

    assert (problem.field, problem.line) == ("smtp.server", 5)
    assert problem.message == "duplicate key 'server' (first at line 4, again at line 5)"


def test_duplicate_key_in_json(tmp_path: Path) -> None:
    path = write(tmp_path, "dup.json", '{"name": "a",\n "name": "b"}')

    with pytest.raises(ConfigError) as info:
        load_inboxes([path], environ={})

    duplicates = [p for p in info.value.problems if p.message.startswith("duplicate")]
    assert [(p.line, p.field) for p in duplicates] == [(2, "name")]
    assert duplicates[0].message == "duplicate key 'name' (first at line 1, again at line 2)"


def test_alias_refused_with_line() -> None:
    text = BASE.replace("imap:\n", "imap: &imap\n") + "other: *imap\n"

    problem = only_problem(text)

    assert problem.line == 15
    assert problem.message == "aliases (*name) are not supported; write the value out instead"


def test_billion_laughs_refused_quickly() -> None:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]

    problem = only_problem("\n".join(lines) + "\n")

    assert problem.line == 2
    assert "aliases" in problem.message


def test_merge_key_is_just_an_unknown_key() -> None:
    problem = only_problem(BASE + "<<: {name: x}\n")

    assert problem.field == "<<"


def test_non_string_key() -> None:
    problem = only_problem(BASE + "? [a, b]\n: c\n")

    assert problem.message == "keys must be plain strings"


# --- interpolation -------------------------------------------------------------------


def test_env_interpolation() -> None:
    text = edit(BASE, "smtp.password", '"${SMTP_PW}"')
    text = edit(text, "smtp.username", "pre-${USER_X}-post")

    [inbox] = load_text(text, environ={"SMTP_PW": "pw!", "USER_X": "u"}).inboxes

    assert inbox.smtp.password.reveal() == "pw!"
    assert inbox.smtp.username == "pre-u-post"


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISION_TEST_PW", "from-os")

    result = load_inboxes(
        ["-"], stdin=io.StringIO(edit(BASE, "imap.password", "${PROVISION_TEST_PW}"))
    )

    assert result.inboxes[0].imap.password.reveal() == "from-os"


def test_empty_env_value_for_password_is_an_error() -> None:
    # Rocket.Chat's mail clients send no empty credentials: it could never log in.
    problem = only_problem(edit(BASE, "smtp.password", "${EMPTY}"), environ={"EMPTY": ""})

    assert (problem.field, problem.line) == ("smtp.password", 7)
    assert problem.message == (
        "expected a non-empty string, got an empty string (Rocket.Chat cannot log in without it)"
    )


def test_file_interpolation_relative_to_inbox_file(tmp_path: Path) -> None:
    write(tmp_path, "secrets/imap.pw", "imap-secret\n")
    path = write(
        tmp_path, "conf/inbox.yaml", edit(BASE, "imap.password", "${file:../secrets/imap.pw}")
    )

    [inbox] = load_inboxes([path], environ={}).inboxes

    assert inbox.imap.password.reveal() == "imap-secret"


def test_file_interpolation_absolute_path(tmp_path: Path) -> None:
    secret = write(tmp_path, "pw", "abs-secret")

    [inbox] = load_text(edit(BASE, "smtp.password", f"${{file:{secret}}}")).inboxes

    assert inbox.smtp.password.reveal() == "abs-secret"


def test_file_interpolation_from_stdin_is_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "pw.txt", "cwd-secret\n")
    monkeypatch.chdir(tmp_path)

    [inbox] = load_text(edit(BASE, "smtp.password", "${file:pw.txt}")).inboxes

    assert inbox.smtp.password.reveal() == "cwd-secret"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"pw\n", "pw", id="lf"),
        pytest.param(b"pw\r\n", "pw", id="crlf"),
        pytest.param(b"pw\n\n", "pw\n", id="only-one-newline"),
        pytest.param(b"pw", "pw", id="none"),
        pytest.param(b"p w \n", "p w ", id="spaces-kept"),
    ],
)
def test_file_interpolation_drops_one_trailing_newline(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    write(tmp_path, "pw", content)
    path = write(tmp_path, "inbox.yaml", edit(BASE, "smtp.password", "${file:pw}"))

    [inbox] = load_inboxes([path], environ={}).inboxes

    assert inbox.smtp.password.reveal() == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param('"$${NOT_A_VAR}"', "${NOT_A_VAR}", id="escape"),
        pytest.param('"a$${X}b${X}"', "a${X}bx", id="escape-and-ref"),
        pytest.param('"cost: $5"', "cost: $5", id="lone-dollar"),
        pytest.param('"$$"', "$$", id="double-dollar"),
        pytest.param('"${X}${X}"', "xx", id="twice"),
    ],
)
def test_interpolation_escapes(raw: str, expected: str) -> None:
    [inbox] = load_text(edit(BASE, "description", raw), environ={"X": "x"}).inboxes

    assert inbox.description == expected


def test_interpolation_not_applied_to_keys() -> None:
    problem = only_problem(BASE + "${X}: 1\n", environ={"X": "name"})

    assert problem.field == "${X}"
    assert problem.message.startswith("unknown key")


def test_interpolated_value_is_not_interpolated_again() -> None:
    [inbox] = load_text(edit(BASE, "description", "${A}"), environ={"A": "${B}", "B": "b"}).inboxes

    assert inbox.description == "${B}"


def test_missing_env_variable_names_variable_and_field() -> None:
    problem = only_problem(edit(BASE, "smtp.password", "${SMTP_PASSWORD}"))

    assert str(problem) == (
        "<stdin>:7: inbox 'Support': smtp.password: environment variable SMTP_PASSWORD is not set"
    )


def test_missing_file_names_path(tmp_path: Path) -> None:
    path = write(tmp_path, "inbox.yaml", edit(BASE, "imap.password", "${file:secret.txt}"))

    with pytest.raises(ConfigError) as info:
        load_inboxes([path], environ={})

    [problem] = info.value.problems
    assert problem.field == "imap.password"
    assert problem.message == (
        f"cannot read file 'secret.txt' ({tmp_path / 'secret.txt'}): no such file"
    )


def test_file_interpolation_not_utf8(tmp_path: Path) -> None:
    write(tmp_path, "pw", b"\xff" + CANARY.encode())
    path = write(tmp_path, "inbox.yaml", edit(BASE, "imap.password", "${file:pw}"))

    with pytest.raises(ConfigError) as info:
        load_inboxes([path], environ={})

    assert "is not valid UTF-8" in str(info.value)
    assert CANARY not in str(info.value)
    assert "0xff" not in str(info.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(
            '"${UNCLOSED"',
            "unterminated '${' (close it with '}', or write '$${' for a literal '${')",
            id="unterminated",
        ),
        pytest.param('"${}"', "empty reference '${}'; use ${NAME} or ${file:PATH}", id="empty"),
        pytest.param('"${file:}"', "empty path in '${file:}'", id="empty-path"),
        pytest.param(
            '"${1BAD}"', "invalid reference '${1BAD}'; use ${NAME} or ${file:PATH}", id="name"
        ),
        pytest.param(
            '"${A:-default}"',
            "invalid reference '${A:-default}'; use ${NAME} or ${file:PATH}",
            id="default-syntax",
        ),
    ],
)
def test_malformed_references(raw: str, message: str) -> None:
    problem = only_problem(edit(BASE, "description", raw), environ={"A": "a"})

    assert problem.field == "description"
    assert problem.message == message


def test_every_missing_variable_reported() -> None:
    text = edit(edit(BASE, "smtp.password", "${ONE}"), "imap.password", "${TWO}${THREE}")

    problems = problems_of(text)

    assert [p.message.split()[2] for p in problems] == ["ONE", "TWO", "THREE"]


# --- warnings ------------------------------------------------------------------------


@pytest.mark.parametrize("retries", [0, 1, 4])
def test_low_max_retries_warns(retries: int) -> None:
    result = load_text(edit(BASE, "imap.maxRetries", str(retries)))

    [finding] = result.warnings_for(0)
    assert result.warnings == {0: [finding]}
    assert finding.code == "low-max-retries"
    assert finding.field == "imap.maxRetries"
    assert finding.hint == "set imap.maxRetries to 10 (the admin UI's default) or more"
    assert "spurious early timeouts" in finding.message
    assert finding.strict_exit is ExitCode.USAGE


@pytest.mark.parametrize("retries", [-1, 5, 10, 1000])
def test_max_retries_without_warning(retries: int) -> None:
    result = load_text(edit(BASE, "imap.maxRetries", str(retries)))

    assert result.inboxes[0].imap.max_retries == retries
    assert result.warnings == {}
    assert result.warnings_for(0) == []


def test_warnings_keyed_by_position_in_result(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", BASE)
    low = edit(edit(BASE, "email", "b@example.com"), "imap.maxRetries", "2")
    second = write(tmp_path, "b.yaml", low)

    result = load_inboxes([first, second], environ={})

    assert list(result.warnings) == [1]


# --- across inputs -------------------------------------------------------------------


def test_duplicate_email_across_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", BASE)
    second = write(tmp_path, "b.yaml", edit(BASE, "name", "Other"))

    with pytest.raises(ConfigError) as info:
        load_inboxes([first, second], environ={})

    [problem] = info.value.problems
    assert (problem.file, problem.line, problem.inbox, problem.field) == (
        second,
        2,
        "Other",
        "email",
    )
    assert problem.message == (
        f"same address as inbox 'Support' ({first}:2); "
        "Rocket.Chat allows each email address only once"
    )


def test_emails_differing_in_case_are_distinct() -> None:
    second = {**BASE_DICT, "email": "Support@example.com"}
    text = to_yaml({"inboxes": [BASE_DICT, second]})

    assert len(load_text(text).inboxes) == 2


def test_all_problems_at_once() -> None:
    text = edit(edit(BASE, "smtp.port", '"587"'), "imap.secure", "maybe")
    text = edit(text, "email", "not-an-address")

    problems = problems_of(text)

    assert [(p.line, p.field) for p in problems] == [
        (2, "email"),
        (5, "smtp.port"),
        (14, "imap.secure"),
    ]


def test_problems_from_every_file_and_duplicates(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", edit(BASE, "smtp.port", "0"))
    missing = str(tmp_path / "missing.yaml")
    good = write(tmp_path, "good.yaml", BASE)
    again = write(tmp_path, "again.json", json.dumps(BASE_DICT))

    with pytest.raises(ConfigError) as info:
        load_inboxes([bad, missing, good, again], environ={})

    assert [(p.file, p.field) for p in info.value.problems] == [
        (bad, "smtp.port"),
        (missing, None),
        (good, "email"),
        (again, "email"),
    ]


def test_problem_string_format(tmp_path: Path) -> None:
    path = write(tmp_path, "inbox.yaml", edit(BASE, "smtp.port", '"587"'))

    with pytest.raises(ConfigError) as info:
        load_inboxes([path], environ={})

    assert str(info.value) == (
        f"{path}:5: inbox 'Support': smtp.port: expected an integer from 1 to 65535, "
        "got string '587' (remove the quotes)"
    )


def test_inbox_label_falls_back_to_index() -> None:
    text = to_yaml(
        {"inboxes": [BASE_DICT, {**BASE_DICT, "name": 7, "email": "x@example.com"}]},
        sort_keys=False,
    )

    problem = only_problem(text)

    assert problem.inbox == "#1"


# --- secrets never appear in messages ------------------------------------------------


def assert_hidden(error: ConfigError, *values: str) -> None:
    text = str(error) + repr(error.problems)
    for value in values:
        assert value not in text


def test_literal_password_not_in_errors() -> None:
    text = edit(BASE, "smtp.password", CANARY)
    text = edit(text, "smtp.port", '"x"') + "extra: 1\n"

    with pytest.raises(ConfigError) as info:
        load_text(text)

    assert len(info.value.problems) == 2
    assert_hidden(info.value, CANARY)


def test_password_in_yaml_syntax_error_not_echoed() -> None:
    text = edit(BASE, "imap.password", f'"{CANARY}')

    with pytest.raises(ConfigError) as info:
        load_text(text)

    assert "invalid YAML" in str(info.value)
    assert_hidden(info.value, CANARY)


def test_interpolated_values_not_in_errors(tmp_path: Path) -> None:
    write(tmp_path, "bad-email", f"{CANARY} at example")
    text = edit(BASE, "email", "${file:bad-email}")
    text = edit(text, "name", "${NAME}")
    text = edit(text, "smtp.server", "${SERVER}")
    text = edit(text, "imap.password", "${PW}")
    text = edit(text, "imap.port", "${PW}")
    path = write(tmp_path, "inbox.yaml", text)
    environ = {"NAME": CANARY + "n", "SERVER": CANARY + " s", "PW": CANARY + "p"}

    with pytest.raises(ConfigError) as info:
        load_inboxes([path], environ=environ)

    assert [p.field for p in info.value.problems] == ["email", "smtp.server", "imap.port"]
    assert all(p.inbox == "#0" for p in info.value.problems)
    assert "a value from ${...} (not shown)" in info.value.problems[0].message
    assert_hidden(info.value, CANARY)


def test_duplicate_interpolated_email_not_echoed() -> None:
    second = {**BASE_DICT, "name": "Two", "email": "${MAIL}"}
    first = {**BASE_DICT, "email": "${MAIL}"}
    text = to_yaml({"inboxes": [first, second]})

    problem = only_problem(text, environ={"MAIL": CANARY + "@example.com"})

    assert problem.field == "email"
    assert CANARY not in str(problem)


def test_invalid_reference_in_password_not_echoed() -> None:
    problem = only_problem(edit(BASE, "smtp.password", f'"x${{{CANARY}"'))

    assert problem.message.startswith("unterminated")
    problem = only_problem(edit(BASE, "smtp.password", f'"x${{{CANARY}}}"'))

    assert problem.message == "invalid reference; use ${NAME} or ${file:PATH}"
    assert CANARY not in str(problem)


# --- properties ------------------------------------------------------------------------

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def load_or_config_error(paths: list[str], stdin: io.TextIOBase | None = None) -> None:
    """Load; a ConfigError full of ConfigProblems is fine, any other exception fails."""
    problems: list[ConfigProblem] = []
    try:
        result = load_inboxes(paths, environ={}, stdin=stdin)  # type: ignore[arg-type]
    except ConfigError as exc:
        problems = exc.problems
        assert problems, "a ConfigError without problems"
    else:
        assert all(isinstance(i, Inbox) for i in result.inboxes)
    assert all(isinstance(p, ConfigProblem) and p.message for p in problems)


# Pieces of YAML and interpolation syntax, so that random documents get past the scanner.
# fmt: off
YAML_PIECES = [
    "name: ", "email: ", "smtp:", "imap:", "inboxes:", "- ", "  ", "port: ", "yes", "2024-13-45",
    "0x", "1:2", "<<: ", "é", "!!int ", "!!bool ", "!foo ", "&a ", "*a", "${", "}", "${file:",
    "$${", "[", "]", "{", ",", ":", "'", '"', "? ", "#", ">", "|", "\n", "\t", "\x00", "---\n",
    "%YAML 1.1\n",
]
# fmt: on
yamlish = st.lists(st.sampled_from(YAML_PIECES)).map("".join)


@FAST
@given(st.one_of(st.text(), yamlish))
def test_property_random_text_loads_or_config_error(text: str) -> None:
    load_or_config_error(["-"], io.StringIO(text))


@FAST
@given(st.binary())
def test_property_random_bytes_loads_or_config_error(data: bytes) -> None:
    load_or_config_error(["-"], io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


@FAST
@given(st.one_of(st.text(), yamlish, st.binary().map(lambda b: b.decode("latin-1"))))
def test_property_random_json_file_loads_or_config_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.getbasetemp() / "random.json"
    path.write_text(text, encoding="utf-8")
    load_or_config_error([str(path)])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@FAST
@given(json_values, st.sampled_from([None, 0, 2, "\t"]))
def test_property_any_json_document_loads_or_config_error(
    tmp_path_factory: pytest.TempPathFactory, value: object, indent: int | str | None
) -> None:
    path = tmp_path_factory.getbasetemp() / "value.json"
    path.write_text(json.dumps(value, indent=indent), encoding="utf-8")
    load_or_config_error([str(path)])


@FAST
@given(
    st.text(min_size=1),
    st.text(),
    st.sampled_from(["yaml", "json-compact", "json-tabs", "json-ascii"]),
)
def test_property_strings_round_trip(name: str, description: str, form: str) -> None:
    assume(name.strip() and "${" not in name + description)
    body = {**BASE_DICT, "name": name, "description": description}
    if form == "yaml":
        # PyYAML writes U+0085 and U+2028 raw and then reads them as line breaks.
        text = to_yaml(body)
    else:
        text = json.dumps(
            body, ensure_ascii=form == "json-ascii", indent="\t" if form == "json-tabs" else None
        )

    [inbox] = load_text(text).inboxes

    assert (inbox.name, inbox.description) == (name, description)


def test_file_reference_to_a_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    import os
    import subprocess

    fifo = tmp_path / "secret.fifo"
    os.mkfifo(fifo)
    inbox = tmp_path / "inbox.yaml"
    inbox.write_text(BASE.replace("smtp-pass", "${file:secret.fifo}"))
    code = (
        "import sys\n"
        "from provision.inbox import load_inboxes\n"
        "from provision.errors import ConfigError\n"
        "try:\n"
        "    load_inboxes([sys.argv[1]])\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    # In a child process: if the pipe were opened, the loader would wait forever.
    out = subprocess.run(
        [sys.executable, "-c", code, str(inbox)],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    assert "smtp.password" in out
    assert "a pipe, not a regular file" in out
