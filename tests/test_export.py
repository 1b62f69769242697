"""`provision export`: Rocket.Chat's inboxes as an inbox file, passwords as ${VAR}.

The round trip is the contract: export, set the variables to the stored passwords,
`provision set` the file, and every inbox is `unchanged` with no write at all.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from provision.cli import app
from provision.commands.export import export_inboxes, render_inbox_file
from provision.commands.set import SetOptions, set_inboxes
from provision.errors import RocketChatAuthError, RocketChatUnavailableError
from provision.inbox import load_inboxes
from provision.models import ProbeOptions, Secret
from provision.rocketchat.credentials import TokenAuth
from provision.sandbox.runner import Sandbox, running_sandbox
from tests.doubles.rocketchat_faults import Fault, FaultyRocketChat

runner = CliRunner()
CANARY = "Canary-Stored-Pw-7d41"
POST = ("POST", "/api/v1/email-inbox")


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with running_sandbox(tmp_path / "box", double=FaultyRocketChat()) as sandbox:
        yield sandbox


def _password(box: Sandbox) -> str:
    return (box.directory / "password").read_text().strip()


def _credentials(box: Sandbox) -> TokenAuth:
    return TokenAuth(user_id=box.user_id, token=box.token)


async def _set_sandbox_file(box: Sandbox) -> None:
    loaded = load_inboxes([str(box.inbox_file)])
    report = await set_inboxes(
        loaded.inboxes,
        ProbeOptions(ca_file=box.ca_file, step_timeout=3, timeout=30),
        SetOptions(server=box.rocketchat_url, credentials=_credentials(box)),
    )
    assert [i.extra["action"] for i in report.inboxes] == ["created", "created"]


def _seed_like_support(box: Sandbox, **changes: Any) -> str:
    """Store an inbox on the double with the sandbox's working mail settings."""
    support = next(d for d in box.rocketchat.inboxes.values() if d["name"] == "Support")
    body = {
        k: copy.deepcopy(v)
        for k, v in support.items()
        if k in ("active", "name", "email", "description", "senderInfo", "smtp", "imap")
    }
    body.update(changes)
    return box.rocketchat.add_inbox(body)


def _env(box: Sandbox, variables: tuple[str, ...] | list[str]) -> dict[str, str]:
    env = {"ROCKETCHAT_USER_ID": box.user_id, "ROCKETCHAT_AUTH_TOKEN": box.token.reveal()}
    env.update({name: _password(box) for name in variables})
    return env


# ----------------------------------------------------------------- the round trip


async def test_round_trip_through_the_cli_is_unchanged_without_any_write(
    box: Sandbox, tmp_path: Path
) -> None:
    await _set_sandbox_file(box)
    # Inboxes configured "by hand": odd texts, no department, off, colliding names.
    _seed_like_support(
        box,
        name="Ünïcode ${literal} $${twice}",
        email="o'brien+help@example.com",
        description="costs $5, written ${like_this}",
        senderInfo="",
        active=False,
    )
    _seed_like_support(box, name="Dots", email="a.b@example.com", senderInfo="yes")
    _seed_like_support(box, name="Underscore", email="a_b@example.com", description="1.0")
    exported = tmp_path / "exported.yaml"
    env = _env(box, [])
    result = await asyncio.to_thread(
        runner.invoke,
        app,
        ["export", "--server", box.rocketchat_url, "-o", str(exported)],
        env=env,
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert "exported 5 inboxes" in result.stderr
    text = exported.read_text()
    variables = re.findall(r"\$\{([A-Z0-9_]+)\}", text)
    assert len(variables) == len(set(variables)) == 10
    assert "A_B_EXAMPLE_COM_SMTP_PASSWORD" in variables
    assert "A_B_EXAMPLE_COM_2_SMTP_PASSWORD" in variables
    assert "O_BRIEN_HELP_EXAMPLE_COM_IMAP_PASSWORD" in variables
    for name in variables:  # the header lists every variable
        assert re.search(rf"^#\s+{name}\s", text, re.MULTILINE)
    password = _password(box)
    for out in (text, result.stdout, result.stderr):
        assert password not in out
        assert box.token.reveal() not in out

    before = len(box.rocketchat.requests)
    second = await asyncio.to_thread(
        runner.invoke,
        app,
        [
            "set",
            str(exported),
            "--server",
            box.rocketchat_url,
            "--ca-file",
            str(box.ca_file),
            "--json",
        ],
        env=_env(box, variables),
    )
    assert second.exit_code == 0, second.stdout + second.stderr
    doc = json.loads(second.stdout)
    assert len(doc["inboxes"]) == 5
    assert {i["action"] for i in doc["inboxes"]} == {"unchanged"}, [
        (i["email"], [s.get("facts", {}).get("changes") for s in i["stages"]])
        for i in doc["inboxes"]
    ]
    later = box.rocketchat.requests[before:]
    assert not [r for r in later if (r.method, r.path) == POST]
    assert password not in second.stdout + second.stderr


async def test_round_trip_through_the_library(box: Sandbox, tmp_path: Path) -> None:
    await _set_sandbox_file(box)
    result = await export_inboxes(box.rocketchat_url, _credentials(box))
    assert result.count == 2
    assert result.problems == ()
    assert result.warnings == ()
    assert result.variables == (
        "SALES_EXAMPLE_COM_SMTP_PASSWORD",
        "SALES_EXAMPLE_COM_IMAP_PASSWORD",
        "SUPPORT_EXAMPLE_COM_SMTP_PASSWORD",
        "SUPPORT_EXAMPLE_COM_IMAP_PASSWORD",
    )
    file = tmp_path / "inboxes.yaml"
    result.write(file)
    loaded = load_inboxes([str(file)], environ=dict.fromkeys(result.variables, _password(box)))
    posts = len(box.rocketchat.requests_to(*POST))
    report = await set_inboxes(
        loaded.inboxes,
        ProbeOptions(ca_file=box.ca_file, step_timeout=3, timeout=30),
        SetOptions(server=box.rocketchat_url, credentials=_credentials(box)),
    )
    assert [i.extra["action"] for i in report.inboxes] == ["unchanged", "unchanged"]
    assert len(box.rocketchat.requests_to(*POST)) == posts


async def test_each_reference_sits_in_its_own_inbox_and_field(box: Sandbox) -> None:
    for n in range(3):
        _seed_inbox(box, f"inbox{n}@example.com", name=f"Inbox {n}")
    result = await export_inboxes(box.rocketchat_url, _credentials(box))
    doc = yaml.safe_load(result.text)
    by_email = {inbox["email"]: inbox for inbox in doc["inboxes"]}
    assert len(result.passwords) == 6
    for ref in result.passwords:
        section, _, key = ref.field.partition(".")
        assert by_email[ref.email][section][key] == f"${{{ref.variable}}}"


# ------------------------------------------------------------------- paging, data


def _seed_inbox(box: Sandbox, email: str, **changes: Any) -> str:
    body: dict[str, Any] = {
        "active": True,
        "name": email.split("@")[0],
        "email": email,
        "description": "",
        "senderInfo": "",
        "smtp": {
            "server": "smtp.example.com",
            "port": 587,
            "username": email,
            "password": CANARY,
            "secure": False,
        },
        "imap": {
            "server": "imap.example.com",
            "port": 993,
            "username": email,
            "password": CANARY,
            "secure": True,
            "maxRetries": 10,
        },
    }
    body.update(changes)
    return box.rocketchat.add_inbox(body)


async def test_pages_through_every_inbox(box: Sandbox) -> None:
    box.rocketchat.list_count_limit = 2  # the server caps each page below what we ask
    for n in range(5):
        _seed_inbox(box, f"user{n}@example.com")
    result = await export_inboxes(box.rocketchat_url, _credentials(box))
    assert result.count == 5
    emails = [i["email"] for i in yaml.safe_load(result.text)["inboxes"]]
    assert emails == [f"user{n}@example.com" for n in range(5)]
    assert len(box.rocketchat.requests_to("GET", "/api/v1/email-inbox.list")) >= 3
    assert CANARY not in result.text
    assert CANARY not in repr(result)


async def test_data_set_refuses_and_stored_quirks_are_reported(box: Sandbox) -> None:
    support = box.rocketchat.add_department("Elsewhere")
    _seed_inbox(
        box,
        "old@example.com",
        imap={
            "server": "imap.example.com",
            "port": 993,
            "username": "old",
            "password": CANARY,
            "secure": True,
        },
    )
    _seed_inbox(box, "gone@example.com", department="no-such-department-id")
    _seed_inbox(box, "kept@example.com", department=support["_id"])
    _seed_inbox(
        box,
        "text-port@example.com",
        smtp={
            "server": "smtp.example.com",
            "port": "587",
            "username": "u",
            "password": CANARY,
            "secure": False,
        },
    )
    result = await export_inboxes(box.rocketchat_url, _credentials(box))
    warnings = "\n".join(result.warnings)
    assert "old@example.com: stored without imap.maxRetries" in warnings
    assert "gone@example.com: department 'no-such-department-id'" in warnings
    assert "kept@example.com" not in warnings
    [problem] = result.problems
    assert problem.field == "smtp.port"
    assert problem.line is not None
    assert "port: '587'" in result.text.splitlines()[problem.line - 1]
    assert CANARY not in result.text + warnings + str(problem)


def test_render_escapes_references_and_is_stable() -> None:
    stored = [
        {
            "_id": "1",
            "name": "Zed ${HOME}",
            "email": "9lives@example.com",
            "active": True,
            "description": "a $${b} c",
            "department": "",
            "smtp": {
                "server": "s",
                "port": 465,
                "username": "u",
                "password": CANARY,
                "secure": True,
            },
            "imap": {
                "server": "i",
                "port": 993,
                "username": "u",
                "password": CANARY,
                "secure": True,
                "maxRetries": -1,
            },
        },
        {
            "_id": "2",
            "name": "Alpha",
            "email": "ünï@exämple.com",
            "active": True,
            "smtp": {
                "server": "s",
                "port": 587,
                "username": "u",
                "password": "pw",
                "secure": False,
            },
            "imap": {
                "server": "i",
                "port": 143,
                "username": "u",
                "password": "pw",
                "secure": False,
                "maxRetries": 3,
            },
        },
    ]
    first = render_inbox_file(stored, server="https://chat.example.com")
    again = render_inbox_file(list(reversed(stored)), server="https://chat.example.com")
    assert first.text == again.text
    assert first.variables[:2] == ("UNI_EXAMPLE_COM_SMTP_PASSWORD", "UNI_EXAMPLE_COM_IMAP_PASSWORD")
    assert first.variables[2:] == (
        "INBOX_9LIVES_EXAMPLE_COM_SMTP_PASSWORD",
        "INBOX_9LIVES_EXAMPLE_COM_IMAP_PASSWORD",
    )
    assert all(re.fullmatch(r"[A-Z_][A-Z0-9_]*", name) for name in first.variables)
    assert first.problems == ()
    assert CANARY not in first.text
    assert "pw" not in re.sub(r"PASSWORD|password", "", first.text)
    environ = dict.fromkeys(first.variables, "x")
    loaded = load_inboxes(["-"], environ=environ, stdin=io.StringIO(first.text))
    zed = next(i for i in loaded.inboxes if i.email == "9lives@example.com")
    assert zed.name == "Zed ${HOME}"
    assert zed.description == "a $${b} c"
    assert zed.department is None
    assert zed.imap.max_retries == -1
    assert zed.smtp.password == Secret("x")


_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)


@settings(max_examples=200, deadline=None)
# PyYAML writes NEL and LS raw in quoted scalars unless told to use double quotes.
@example(name="n\u2028", description="\x85", sender="", username="\t")
@given(
    name=_TEXT.filter(str.strip),
    description=_TEXT,
    sender=st.text("${}$ ab", max_size=12),
    username=st.text("${}$ab:#'\"", min_size=1, max_size=12),
)
def test_any_stored_text_reads_back_exactly(
    name: str, description: str, sender: str, username: str
) -> None:
    stored = {
        "name": name,
        "email": "any@example.com",
        "active": True,
        "description": description,
        "senderInfo": sender,
        "smtp": {"server": "s", "port": 25, "username": username, "password": "p", "secure": False},
        "imap": {
            "server": "i",
            "port": 143,
            "username": username,
            "password": "p",
            "secure": False,
        },
    }
    result = render_inbox_file([stored])
    assert result.problems == ()
    environ = dict.fromkeys(result.variables, "x")
    [inbox] = load_inboxes(["-"], environ=environ, stdin=io.StringIO(result.text)).inboxes
    assert inbox.name == name
    assert inbox.description == (description or None)
    assert inbox.sender_info == (sender or None)
    assert inbox.smtp.username == inbox.imap.username == username


def test_a_line_break_in_stored_text_stays_out_of_the_header() -> None:
    stored = {
        "name": "Broken",
        "email": "x@example.com\nnot-a-comment: x",
        "active": True,
        "smtp": {"server": "s", "port": 587, "username": "u", "password": "p", "secure": False},
        "imap": {"server": "i", "port": 993, "username": "u", "password": "p", "secure": True},
    }
    result = render_inbox_file([stored])
    assert not [line for line in result.text.splitlines() if line.startswith("not-a-comment")]
    assert yaml.safe_load(result.text)["inboxes"][0]["email"] == stored["email"]
    assert [p.field for p in result.problems] == ["email"]


def test_render_without_inboxes_warns() -> None:
    result = render_inbox_file([])
    assert result.count == 0
    assert result.variables == ()
    assert "no email inboxes" in result.warnings[0]
    assert yaml.safe_load(result.text) == {"inboxes": []}


# ------------------------------------------------------------------------ the CLI


async def test_cli_writes_to_stdout_and_never_the_password(
    box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed_inbox(box, "help@example.com")
    monkeypatch.setenv("ROCKETCHAT_URL", box.rocketchat_url)
    result = await asyncio.to_thread(runner.invoke, app, ["export"], env=_env(box, []))
    assert result.exit_code == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    assert doc["inboxes"][0]["smtp"]["password"] == "${HELP_EXAMPLE_COM_SMTP_PASSWORD}"
    assert "to <stdout>" in result.stderr
    assert CANARY not in result.stdout + result.stderr
    assert box.token.reveal() not in result.stdout + result.stderr


async def test_cli_refuses_to_overwrite_without_force(box: Sandbox, tmp_path: Path) -> None:
    _seed_inbox(box, "help@example.com")
    target = tmp_path / "inboxes.yaml"
    target.write_text("# mine\n")
    args = ["export", "--server", box.rocketchat_url, "-o", str(target)]
    before = len(box.rocketchat.requests)
    refused = await asyncio.to_thread(runner.invoke, app, args, env=_env(box, []))
    assert refused.exit_code == 2
    assert "--force" in refused.stderr
    assert target.read_text() == "# mine\n"
    assert len(box.rocketchat.requests) == before  # refused before any request
    forced = await asyncio.to_thread(runner.invoke, app, [*args, "--force"], env=_env(box, []))
    assert forced.exit_code == 0, forced.stderr
    assert "help@example.com" in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box", "inboxes.yaml"]  # no temp file


async def test_cli_bad_token_is_exit_20_without_the_token(box: Sandbox, tmp_path: Path) -> None:
    env = {"ROCKETCHAT_USER_ID": box.user_id, "ROCKETCHAT_AUTH_TOKEN": "wrong-token-5c1e"}
    result = await asyncio.to_thread(
        runner.invoke,
        app,
        ["export", "--server", box.rocketchat_url, "-o", str(tmp_path / "x.yaml")],
        env=env,
    )
    assert result.exit_code == 20
    assert "error:" in result.stderr
    assert "wrong-token-5c1e" not in result.stdout + result.stderr
    assert not (tmp_path / "x.yaml").exists()


async def test_library_bad_token_raises(box: Sandbox) -> None:
    with pytest.raises(RocketChatAuthError):
        await export_inboxes(
            box.rocketchat_url, TokenAuth(user_id=box.user_id, token=Secret("nope-nope"))
        )


async def test_the_time_limit_bounds_a_stalled_server(box: Sandbox) -> None:
    box.rocketchat.inject("GET", "/api/v1/email-inbox.list", Fault.slow(30))
    started = time.monotonic()
    with pytest.raises(RocketChatUnavailableError, match=r"within 0\.5 s"):
        await export_inboxes(box.rocketchat_url, _credentials(box), time_limit=0.5)
    assert time.monotonic() - started < 5


def test_cli_without_server_or_credentials_is_a_usage_error() -> None:
    result = runner.invoke(app, ["export"])
    assert result.exit_code == 2
    assert "ROCKETCHAT_URL" in result.stderr
    result = runner.invoke(app, ["export", "--server", "https://chat.example.com"])
    assert result.exit_code == 2
    assert "ROCKETCHAT_AUTH_TOKEN" in result.stderr
    result = runner.invoke(
        app,
        ["export", "--server", "http://chat.example.com"],
        env={"ROCKETCHAT_USER_ID": "u", "ROCKETCHAT_AUTH_TOKEN": "t"},
    )
    assert result.exit_code == 2
    assert "--allow-http" in result.stderr
