"""docker-compose.test.yml cannot run here (no Docker engine); check its structure."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.test.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_services_are_the_documented_ones() -> None:
    assert set(_compose()["services"]) == {"mongodb", "rocketchat", "mail", "seed"}


def test_images_are_pinned() -> None:
    for name, service in _compose()["services"].items():
        image = service["image"]
        tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert re.fullmatch(r"\d+(\.\d+)+", tag), f"{name}: {image} is not pinned to a version"


def test_mongodb_is_a_replica_set_with_a_health_check() -> None:
    mongo = _compose()["services"]["mongodb"]
    assert "--replSet" in mongo["command"]
    assert "rs.initiate" in " ".join(mongo["healthcheck"]["test"])


def test_rocketchat_uses_the_replica_set_and_waits_for_it() -> None:
    rc = _compose()["services"]["rocketchat"]
    env = rc["environment"]
    assert "replicaSet=rs0" in env["MONGO_URL"]
    assert "replicaSet=rs0" in env["MONGO_OPLOG_URL"]
    assert rc["depends_on"]["mongodb"]["condition"] == "service_healthy"
    assert env["ADMIN_USERNAME"]
    assert env["ADMIN_PASS"]
    assert "/api/info" in " ".join(rc["healthcheck"]["test"])
    assert "127.0.0.1:3000:3000" in rc["ports"]


def test_mail_server_offers_smtp_and_imap_with_auth() -> None:
    mail = _compose()["services"]["mail"]
    ports = {p.split(":")[-1] for p in mail["ports"]}
    assert {"3025", "3143", "3465", "3993"} <= ports
    assert "greenmail.users=" in mail["environment"]["GREENMAIL_OPTS"]
    assert "auth.disabled" not in mail["environment"]["GREENMAIL_OPTS"]


def test_seed_writes_the_token_file_the_integration_tier_reads() -> None:
    seed = _compose()["services"]["seed"]
    assert seed["depends_on"]["rocketchat"]["condition"] == "service_healthy"
    script = "\n".join(seed["command"])
    assert "users.generatePersonalAccessToken" in script
    assert "/seed/seed.env" in script
    assert "./.compose:/seed" in seed["volumes"]
    conftest = (ROOT / "tests" / "integration" / "conftest.py").read_text()
    assert '".compose" / "seed.env"' in conftest


def test_integration_tier_is_not_collected_without_compose() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/integration"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert "test_compose.py" not in out.stdout
