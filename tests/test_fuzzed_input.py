"""Fuzzed input through the command line: one clear error and exit 2, never a traceback.

``tests/test_config.py`` fuzzes the loader as a library (random text, bytes and JSON
values) and pins every rule with a unit test. Here the same kinds of damage reach
``provision check`` and ``provision set`` as files, in YAML and JSON: wrong types at
any field, deep nesting, aliases and tags (the unsafe ``!!python`` ones included),
bytes that are not UTF-8, ``${...}`` edge cases and duplicate keys, drawn by
hypothesis, plus documents past the size limit. Every run must exit 2 with problems
that name a file, print no traceback, keep ``--json`` output parseable, and finish
quickly. A field that is always wrong keeps every drawn document invalid, so nothing
is ever probed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from provision.cli import app

runner = CliRunner()
SLOW = 5.0  # seconds: far above what a refused file takes
PROPERTIES = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: A valid inbox but for ``imap.port`` (a string): every document built on it is refused.
BASE: dict[str, Any] = {
    "name": "Support",
    "email": "support@example.com",
    "smtp": {
        "server": "smtp.invalid",
        "port": 587,
        "username": "support@example.com",
        "password": "fuzz-secret-1f3c",
        "secure": False,
    },
    "imap": {
        "server": "imap.invalid",
        "port": "993",
        "username": "support@example.com",
        "password": "fuzz-secret-1f3c",
        "secure": True,
        "maxRetries": 10,
    },
}
PATHS = [
    ("name",),
    ("email",),
    ("description",),
    ("department",),
    ("active",),
    ("smtp",),
    ("smtp", "server"),
    ("smtp", "port"),
    ("smtp", "password"),
    ("smtp", "secure"),
    ("imap", "username"),
    ("imap", "maxRetries"),
    ("inboxes",),
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(
        [
            "${",
            "${}",
            "${X",
            "${file:}",
            "${file:/nonexistent/secret}",
            "${file:.}",
            "${A-B}",
            "$${X}",
            "${${X}}",
            "x${NOPE}y",
            "${file:" + "a" * 300 + "}",
            "\x00",
            "\u2028",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def set_path(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(doc))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


# Damage done to the text of a valid-looking YAML document.
YAML_DAMAGE = [
    "nesting",
    "alias",
    "billion-laughs",
    "python-tag",
    "custom-tag",
    "not-utf8",
    "duplicate-key",
    "merge-key",
    "tab",
    "control",
]


def damaged_yaml(damage: str, text: str, n: int) -> bytes:
    """``text`` (a YAML document) damaged one way; ``n`` scales the damage."""
    if damage == "nesting":
        return (text + "description: " + "[" * (30 * n) + "]" * (30 * n) + "\n").encode()
    if damage == "alias":
        return (text.replace("name: Support", "name: &n Support") + "description: *n\n").encode()
    if damage == "billion-laughs":
        lines = ["a0: &a0 [lol]"] + [
            f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 4 + n)
        ]
        return ("\n".join(lines) + "\n" + text).encode()
    if damage == "python-tag":
        return (text + "description: !!python/object/apply:os.system ['exit 99']\n").encode()
    if damage == "custom-tag":
        return (text + f"description: !vault{n} secret\n").encode()
    if damage == "not-utf8":
        raw = text.encode()
        at = (n * 7) % max(1, len(raw))
        return raw[:at] + b"\xff\xfe\xc3" + raw[at:]
    if damage == "duplicate-key":
        return (text + "name: Again\n").encode()
    if damage == "merge-key":
        return (text + "<<: {name: x}\n").encode()
    if damage == "tab":
        return text.replace("  server", "\tserver", 1).encode()
    return (text + f'description: "\\x{n % 32:02x}"\n').encode()


def run(args: list[str]) -> tuple[int, str, str, float]:
    started = time.perf_counter()
    result = runner.invoke(app, args, catch_exceptions=True)
    elapsed = time.perf_counter() - started
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.exit_code, result.stdout, result.stderr, elapsed


def assert_refused(path: Path, *, command: str = "check") -> None:
    """Exit 2, no traceback, errors that name the file, valid JSON with --json."""
    extra = ["--server", "https://chat.example.com"] if command == "set" else []
    code, stdout, stderr, elapsed = run([command, str(path), *extra])
    assert code == 2, (stdout, stderr)
    assert "Traceback" not in stdout + stderr
    assert stderr.startswith("error: "), stderr
    assert str(path) in stderr
    assert elapsed < SLOW
    code, stdout, stderr, elapsed = run([command, str(path), "--json", *extra])
    assert code == 2
    doc = json.loads(stdout)
    assert doc["ok"] is False
    assert doc["exit_code"] == 2
    assert doc["errors"]
    for error in doc["errors"]:
        assert isinstance(error["message"], str)
        assert error["message"]
        assert error["file"] == str(path)
    assert elapsed < SLOW


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials for ``set`` (never used: the input is refused first)."""
    monkeypatch.setenv("ROCKETCHAT_USER_ID", "fuzz")
    monkeypatch.setenv("ROCKETCHAT_AUTH_TOKEN", "fuzz-token-8e2a")


@PROPERTIES
@given(
    path=st.sampled_from(PATHS),
    value=values,
    form=st.sampled_from(["yaml", "json", "json-list"]),
    command=st.sampled_from(["check", "set"]),
)
def test_property_wrong_values_anywhere_are_refused(
    tmp_path: Path, env: None, path: tuple[str, ...], value: Any, form: str, command: str
) -> None:
    doc = set_path(BASE, path, value)
    if form == "yaml":
        file = tmp_path / "inbox.yaml"
        file.write_text(yaml.safe_dump(doc, allow_unicode=True))
    else:
        file = tmp_path / "inbox.json"
        body: Any = {"inboxes": [doc, doc]} if form == "json-list" else doc
        file.write_text(json.dumps(body))
    assert_refused(file, command=command)


@PROPERTIES
@given(damage=st.sampled_from(YAML_DAMAGE), n=st.integers(min_value=1, max_value=40))
def test_property_damaged_yaml_is_refused(tmp_path: Path, damage: str, n: int) -> None:
    file = tmp_path / "inbox.yaml"
    file.write_bytes(damaged_yaml(damage, yaml.safe_dump(BASE), n))
    assert_refused(file)


def many_inboxes(count: int) -> list[dict[str, Any]]:
    """Distinct inboxes (identical ones would be dumped as YAML aliases)."""
    return [
        set_path(set_path(BASE, ("name",), f"Inbox {i}"), ("email",), f"inbox{i}@example.com")
        for i in range(count)
    ]


LIMIT = 1024 * 1024  # the loader's size limit


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param("huge.yaml", b"# padding\n" * 2_000_000, id="20-MB-of-comments"),
        pytest.param("over.json", b" " * LIMIT + b"{}", id="one-byte-over-the-limit"),
        pytest.param(
            "long-string.yaml",
            (yaml.safe_dump(BASE) + "description: " + "x" * (LIMIT - 1000) + "\n").encode(),
            id="a-string-of-almost-1-MiB",
        ),
        pytest.param(
            "many.yaml",
            yaml.safe_dump({"inboxes": many_inboxes(600)}).encode(),
            id="600-inboxes-each-with-an-error",
        ),
        pytest.param(
            "many.json",
            json.dumps({"inboxes": many_inboxes(5_000)}).encode(),
            id="5000-inboxes-over-the-limit",
        ),
        pytest.param("deep.json", b"[" * 200_000 + b"]" * 200_000, id="deep-json"),
        pytest.param("deep.yaml", b"a:\n  " + b"- " * 100_000 + b"x\n", id="deep-yaml"),
    ],
)
def test_huge_and_deep_documents_are_refused_quickly(
    tmp_path: Path, name: str, content: bytes
) -> None:
    file = tmp_path / name
    file.write_bytes(content)
    assert_refused(file)


def test_python_tag_is_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    file = tmp_path / "inbox.yaml"
    path = f"!!python/object/apply:pathlib.Path ['{marker}']"
    file.write_text(
        yaml.safe_dump(BASE) + f"description: !!python/object/apply:pathlib.Path.touch [{path}]\n"
    )
    assert_refused(file)
    assert not marker.exists()


@pytest.mark.parametrize(
    "line",
    [
        "smtp: {server: s, port: 1, username: u, password:Hidden-9c1, secure: true}",
        "smtp: {server: s, port: 1, username: u, password=Hidden-9c1: x, secure: true}",
        "smtp: {server: s, port: 1, username: u, password Hidden-9c1: x, secure: true}",
    ],
)
def test_key_that_swallowed_its_value_is_shown_cut(tmp_path: Path, line: str) -> None:
    """A lost separator turns ``password: value`` into a key: never echo the part after it."""
    file = tmp_path / "inbox.yaml"
    file.write_text(f"name: x\nemail: x@example.com\n{line}\n")
    code, stdout, stderr, _ = run(["check", str(file), "--json"])
    assert code == 2
    assert "Hidden-9c1" not in stdout + stderr
    fields = [e["field"] for e in json.loads(stdout)["errors"]]
    assert "smtp.password…" in fields
