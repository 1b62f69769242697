"""Input mistakes users still trip on (issue 9): each is one clear input error (exit 2)
naming file, line, field and what to write, through the command line as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from provision.cli import app

runner = CliRunner()

INBOX = """\
name: Support
email: support@example.com
smtp:
  server: {smtp_server}
  port: {smtp_port}
  username: {smtp_username}
  password: smtp-pass
  secure: false
imap:
  server: imap.example.com
  port: 993
  username: support
  password: {imap_password}
  secure: true
"""

_DEFAULTS = {
    "smtp_server": "smtp.example.com",
    "smtp_port": "587",
    "smtp_username": "support",
    "imap_password": "imap-pass",
}


def inbox_file(directory: Path, name: str = "inbox.yaml", **values: str) -> Path:
    path = directory / name
    path.write_text(INBOX.format(**{**_DEFAULTS, **values}))
    return path


def errors_of(*args: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run ``check --offline --json`` and return its errors, asserting exit 2."""
    result = runner.invoke(app, ["check", *args, "--offline", "--json"], env=env)
    assert result.exit_code == 2, result.output
    errors: list[dict[str, Any]] = json.loads(result.stdout)["errors"]
    return errors


def only_error(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    [error] = errors_of(*args, env=env)
    return error


@pytest.mark.parametrize(
    ("raw", "told"),
    [
        ("0465", "a leading zero: YAML 1.1 reads 0465 as octal 309; write 465"),
        ("0587", "a leading zero: YAML 1.1 reads 0587 as a string; write 587"),  # 8: not octal
        ("0x1d1", "YAML 1.1 reads 0x1d1 as 465; write 465 in decimal digits"),
        ("4_65", "YAML 1.1 reads 4_65 as 465; write 465 in decimal digits"),
    ],
)
def test_port_that_yaml_misreads_names_what_to_write(tmp_path: Path, raw: str, told: str) -> None:
    path = inbox_file(tmp_path, smtp_port=raw)

    error = only_error(str(path))

    assert (error["file"], error["line"], error["field"]) == (str(path), 5, "smtp.port")
    assert error["message"] == f"expected an integer from 1 to 65535, got {raw} ({told})"


def test_leading_zero_in_json_text_is_caught_whatever_parser_reads_it(tmp_path: Path) -> None:
    body = json.loads(json.dumps({"name": "S", "email": "s@example.com"}))
    server = {"server": "h.example.com", "username": "u", "password": "p", "secure": False}
    text = json.dumps({**body, "smtp": {**server, "port": 1}, "imap": {**server, "port": 2}})
    text = text.replace('"port": 1', '"port": 0465', 1).replace('"port": 2', '"port": 993')
    # Not valid JSON, so a .yaml name falls back to YAML 1.1 (octal); .json refuses it.
    as_yaml = tmp_path / "inbox.yaml"
    as_yaml.write_text(text)
    as_json = tmp_path / "inbox.json"
    as_json.write_text(text)

    yaml_error = only_error(str(as_yaml))
    json_error = only_error(str(as_json))

    assert yaml_error["field"] == "smtp.port"
    assert "reads 0465 as octal 309; write 465" in yaml_error["message"]
    assert json_error["message"] == (
        "invalid JSON at column 137: port: 0465 has a leading zero, which JSON does not allow; "
        "write 465"
    )


def test_leading_zero_password_in_json_is_not_shown(tmp_path: Path) -> None:
    path = tmp_path / "inbox.json"
    path.write_text('{"smtp": {"password": 0123456}}')

    error = only_error(str(path))

    assert "0123456" not in error["message"]
    assert error["message"].endswith("password: a number with a leading zero; write it in quotes")


def test_quoted_leading_zero_stays_a_type_error(tmp_path: Path) -> None:
    error = only_error(str(inbox_file(tmp_path, smtp_port='"0465"')))

    assert error["field"] == "smtp.port"
    assert "remove the quotes" in error["message"]


@pytest.mark.parametrize(
    ("server", "told"),
    [
        ('"smtp.example.com:587"', "a port after the host; write only the host here"),
        ('"[2001:db8::1]:587"', "a port after the host; write only the host here"),
        ('"smtps://smtp.example.com"', "a URL; write only the host name in smtp.server"),
        ('"smtp://smtp.example.com:587/"', "a URL; write only the host name in smtp.server"),
    ],
)
def test_server_with_port_or_url_says_where_the_port_goes(
    tmp_path: Path, server: str, told: str
) -> None:
    path = inbox_file(tmp_path, smtp_server=server)

    error = only_error(str(path))

    assert (error["line"], error["field"]) == (4, "smtp.server")
    assert told in error["message"]
    assert "smtp.port" in error["message"]


def test_bare_ipv6_address_is_a_valid_server(tmp_path: Path) -> None:
    path = inbox_file(tmp_path, smtp_server='"2001:db8::1"')

    result = runner.invoke(app, ["check", str(path), "--offline", "--json"])

    assert result.exit_code == 0, result.output


def test_empty_credentials_are_input_errors_even_from_variables(tmp_path: Path) -> None:
    path = inbox_file(tmp_path, smtp_username='""', imap_password='"${IMAP_PASSWORD}"')

    errors = errors_of(str(path), env={"IMAP_PASSWORD": ""})

    assert [(e["line"], e["field"]) for e in errors] == [
        (6, "smtp.username"),
        (13, "imap.password"),
    ]
    for error in errors:
        assert error["message"] == (
            "expected a non-empty string, got an empty string "
            "(Rocket.Chat cannot log in without it)"
        )


def test_fifo_without_writer_is_refused_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "inbox.yaml"
    os.mkfifo(fifo)
    # A child process with a timeout: opening the FIFO would block it forever.
    result = subprocess.run(
        [sys.executable, "-m", "provision", "check", str(fifo), "--offline"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 2
    assert f"{fifo}: is a pipe, not a regular file; to read from a pipe, give '-'" in result.stderr


@pytest.mark.parametrize(
    ("path", "told"),
    [("/dev/null", "is a character device, not a regular file"), (".", "is a directory")],
)
def test_device_or_directory_as_inbox_file_is_refused(path: str, told: str) -> None:
    error = only_error(path)

    assert error["file"] == path
    assert told in error["message"]


def test_same_file_twice_by_path_link_or_symlink_is_read_once(tmp_path: Path) -> None:
    path = inbox_file(tmp_path)
    symlink = tmp_path / "link.yaml"
    symlink.symlink_to(path)
    hard = tmp_path / "hard.yaml"
    os.link(path, hard)

    errors = errors_of(str(path), str(symlink), str(path), str(hard))

    assert [e["file"] for e in errors] == [str(symlink), str(path), str(hard)]
    assert errors[0]["message"] == (
        f"given more than once (as {str(path)!r}: the same file by another path or link); "
        "it was read once: give each file only once"
    )
    assert errors[1]["message"].startswith("given more than once; it was read once")
    assert all(e["field"] is None and e["inbox"] is None for e in errors)  # no self-clash


def test_inbox_names_in_json_and_junit_errors_are_unquoted(tmp_path: Path) -> None:
    path = tmp_path / "inbox.yaml"
    path.write_text(INBOX.format(**_DEFAULTS).replace("name: Support", "name: Typo key") + "x: 1\n")
    junit = tmp_path / "r.xml"

    result = runner.invoke(app, ["check", str(path), "--offline", "--json", "--junit", str(junit)])
    text = runner.invoke(app, ["check", str(path), "--offline"])

    assert result.exit_code == text.exit_code == 2
    [error] = json.loads(result.stdout)["errors"]
    assert (error["inbox"], error["field"]) == ("Typo key", "x")
    [case] = ET.parse(junit).getroot().iter("testcase")  # noqa: S314 (our own output)
    assert case.get("classname") == "Typo key"
    assert f"{path}:15: inbox 'Typo key': x: unknown key" in text.stderr  # text quotes it


def test_a_file_that_turns_into_a_fifo_after_the_check_is_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "swapped.yaml"
    os.mkfifo(fifo)
    # The read itself, past the stat check (as if the file was swapped in between).
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from provision.inbox.read import ReadError, _read_bytes\n"
        "try:\n"
        "    _read_bytes(Path(sys.argv[1]))\n"
        "except ReadError as exc:\n"
        "    print(exc.message)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(fifo)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout

    assert out.strip() == "not a regular file"


def test_standard_input_over_the_cap_is_refused_like_a_file() -> None:
    """Piped input is read as bytes (sys.stdin's buffer): the same 1 MiB cap as a file,
    not a silent cut at 1 MiB."""
    big = b'{"inboxes": []}' + b" " * (1 << 20)
    done = subprocess.run(
        [sys.executable, "-m", "provision", "check", "--offline", "-"],
        input=big,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert b"<stdin>: larger than 1024 KiB" in done.stderr
