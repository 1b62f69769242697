"""The one field table (provision.inbox.fields): it covers the models and stays light."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from provision.inbox.fields import (
    FIELDS,
    IMAP_FIELDS,
    SMTP_FIELDS,
    Field,
    Kind,
    field,
    secret_paths,
    walk,
)
from provision.models import ImapSettings, Inbox, SmtpSettings


def _model_fields(model: type) -> dict[str, dataclasses.Field[object]]:
    return {
        f.name: f for f in dataclasses.fields(model) if f.name not in {"smtp", "imap", "source"}
    }


@pytest.mark.parametrize(
    ("model", "fields"),
    [(Inbox, FIELDS), (SmtpSettings, SMTP_FIELDS), (ImapSettings, IMAP_FIELDS)],
)
def test_every_model_attribute_has_one_field_with_the_same_default(
    model: type, fields: tuple[Field, ...]
) -> None:
    table = {spec.attr: spec for spec in fields if spec.kind is not Kind.MAPPING}
    attrs = _model_fields(model)
    assert set(table) == set(attrs)
    for name, attr in attrs.items():
        spec = table[name]
        assert spec.required == (attr.default is dataclasses.MISSING)
        if not spec.required:
            assert spec.default == attr.default


def test_walk_paths_lookup_and_secrets() -> None:
    paths = [spec.path for spec in walk()]
    assert paths[:6] == ["name", "email", "active", "description", "senderInfo", "department"]
    assert "smtp" in paths
    assert "imap.maxRetries" in paths
    assert len(paths) == len(set(paths))
    assert field("imap.maxRetries").attr == "max_retries"
    assert field("senderInfo").attr == "sender_info"
    assert field("smtp.port").key == "port"
    assert secret_paths() == {"smtp.password", "imap.password"}
    with pytest.raises(KeyError):
        field("smtp.maxRetries")


def test_loading_a_json_file_imports_no_yaml_parser(tmp_path: Path) -> None:
    inbox = {
        "name": "Support",
        "email": "support@example.com",
        "smtp": {"server": "a", "port": 587, "username": "u", "password": "p", "secure": False},
        "imap": {"server": "a", "port": 993, "username": "u", "password": "p", "secure": True},
    }
    path = tmp_path / "inbox.json"
    path.write_text(json.dumps(inbox))
    code = (
        "import sys\n"
        "from provision.inbox import load_inboxes\n"
        "load_inboxes([sys.argv[1]])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'yaml'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
