"""`provision schema`: the JSON Schema of the inbox file, built from the loader's own table.

The schema and the loader must agree: every document here is accepted by both or
refused by both, the examples and the sandbox's file validate, and so does a file
that `provision export` wrote.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from provision.cli import app
from provision.commands.export import export_inboxes
from provision.errors import ConfigError
from provision.inbox import inbox_file_schema, load_inboxes
from provision.rocketchat.credentials import TokenAuth
from provision.rocketchat.payload import inbox_payload
from provision.sandbox.runner import running_sandbox

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
VALIDATOR = Draft202012Validator(inbox_file_schema())


def _inbox(**changes: Any) -> dict[str, Any]:
    inbox: dict[str, Any] = {
        "name": "Support",
        "email": "support@example.com",
        "smtp": {
            "server": "smtp.example.com",
            "port": 587,
            "username": "support",
            "password": "${PW}",
            "secure": False,
        },
        "imap": {
            "server": "imap.example.com",
            "port": 993,
            "username": "support",
            "password": "${PW}",
            "secure": True,
        },
    }
    for path, value in changes.items():
        *parents, key = path.split("__")
        target = inbox
        for parent in parents:
            target = target[parent]
        if value is _DELETE:
            del target[key]
        else:
            target[key] = value
    return inbox


_DELETE = object()


def _loader_accepts(document: Any) -> bool:
    try:
        load_inboxes(
            ["-"],
            environ={"PW": "secret", "EMAIL": "x@example.com"},
            stdin=io.StringIO(json.dumps(document)),
        )
    except ConfigError:
        return False
    return True


VALID = {
    "single": _inbox(),
    "list": {"inboxes": [_inbox(), _inbox(email="sales@example.com")]},
    "every optional key": _inbox(
        active=False,
        description="text",
        senderInfo="Support Team",
        department="Support",
        imap__maxRetries=-1,
    ),
    "nulls where allowed": _inbox(description=None, senderInfo=None, department=None),
    "reference in email": _inbox(email="${EMAIL}"),
    "ip address as server": _inbox(smtp__server="192.0.2.1"),
}

INVALID = {
    "unknown key": _inbox(host="smtp.example.com"),
    "unknown key in smtp": _inbox(smtp__tls=True),
    "port as string": _inbox(smtp__port="587"),
    "port zero": _inbox(smtp__port=0),
    "port too large": _inbox(imap__port=65536),
    "maxRetries below -1": _inbox(imap__maxRetries=-2),
    "maxRetries as string": _inbox(imap__maxRetries="10"),
    "missing smtp": _inbox(smtp=_DELETE),
    "missing imap password": _inbox(imap__password=_DELETE),
    "secure as string": _inbox(smtp__secure="true"),
    "active as integer": _inbox(active=1),
    "empty name": _inbox(name=""),
    "blank name": _inbox(name="   "),
    "name null": _inbox(name=None),
    "email without at": _inbox(email="support.example.com"),
    "email with space": _inbox(email="sup port@example.com"),
    "server as URL": _inbox(smtp__server="smtp://smtp.example.com"),
    "server with space": _inbox(imap__server="imap example.com"),
    "description as number": _inbox(description=5),
    "password as number": _inbox(smtp__password=1234),
    "smtp as string": _inbox(smtp="smtp.example.com"),
    "empty list": {"inboxes": []},
    "list entry not a mapping": {"inboxes": ["support"]},
    "key beside inboxes": {"inboxes": [_inbox()], "defaults": {}},
    "top-level list": [_inbox()],
}


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = inbox_file_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("name", list(VALID))
def test_schema_and_loader_accept(name: str) -> None:
    document = VALID[name]
    assert list(VALIDATOR.iter_errors(document)) == []
    assert _loader_accepts(document)


@pytest.mark.parametrize("name", list(INVALID))
def test_schema_and_loader_refuse(name: str) -> None:
    document = INVALID[name]
    assert not VALIDATOR.is_valid(document)
    assert not _loader_accepts(document)


def test_defaults_in_the_schema_are_the_loaders() -> None:
    inbox = VALIDATOR.schema["$defs"]["inbox"]
    loaded = load_inboxes(
        ["-"], environ={"PW": "x"}, stdin=io.StringIO(json.dumps(_inbox()))
    ).inboxes[0]
    assert loaded.active is inbox["properties"]["active"]["default"]
    imap = inbox["properties"]["imap"]["properties"]
    assert loaded.imap.max_retries == imap["maxRetries"]["default"]


def test_schema_keys_are_the_rocketchat_body_keys() -> None:
    """The file is the POST body: same keys at every level (``_id`` aside)."""
    everything = _inbox(
        active=True, description="d", senderInfo="s", department="d", imap__maxRetries=3
    )
    loaded = load_inboxes(
        ["-"], environ={"PW": "x"}, stdin=io.StringIO(json.dumps(everything))
    ).inboxes[0]
    body = inbox_payload(loaded)
    inbox = VALIDATOR.schema["$defs"]["inbox"]["properties"]
    assert set(body) == set(inbox)
    for section in ("smtp", "imap"):
        assert set(body[section]) == set(inbox[section]["properties"])


def _inbox_documents() -> list[Path]:
    """The inbox files under examples/ (CI workflows there are YAML too, but not these)."""
    found = []
    for path in sorted((ROOT / "examples").glob("**/*.y*ml")):
        documents = list(yaml.safe_load_all(path.read_text()))  # Kubernetes: several
        if any(isinstance(d, dict) and ("inboxes" in d or "smtp" in d) for d in documents):
            found.append(path)
    return found


def test_the_examples_validate() -> None:
    for path in _inbox_documents():
        document = yaml.safe_load(path.read_text())
        errors = [e.message for e in VALIDATOR.iter_errors(document)]
        assert errors == [], path


async def test_the_sandbox_file_and_an_exported_file_validate(tmp_path: Path) -> None:
    async with running_sandbox(tmp_path / "box") as box:
        document = yaml.safe_load(box.inbox_file.read_text())
        assert list(VALIDATOR.iter_errors(document)) == []
        double = box.rocketchat
        sales = double.add_department("Sales")
        for n, department in enumerate((None, sales["_id"])):
            body: dict[str, Any] = {
                "active": bool(n),
                "name": f"Inbox {n}",
                "email": f"inbox{n}@example.com",
                "description": "",
                "senderInfo": "Team" if n else "",
                "smtp": {
                    "server": "localhost",
                    "port": 465,
                    "username": "u",
                    "password": "p",
                    "secure": True,
                },
                "imap": {
                    "server": "localhost",
                    "port": 993,
                    "username": "u",
                    "password": "p",
                    "secure": True,
                    "maxRetries": 10,
                },
            }
            if department:
                body["department"] = department
            double.add_inbox(body)
        exported = await export_inboxes(
            box.rocketchat_url, TokenAuth(user_id=box.user_id, token=box.token)
        )
    document = yaml.safe_load(exported.text)
    assert len(document["inboxes"]) == 2
    assert list(VALIDATOR.iter_errors(document)) == []


def test_cli_prints_the_schema() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == inbox_file_schema()
