"""The docker-compose tier: a real Rocket.Chat, MongoDB and mail server.

Collected only with ``PROVISION_COMPOSE=1`` (after ``docker compose -f
docker-compose.test.yml up -d --wait``); otherwise absent, not skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

collect_ignore_glob = [] if os.environ.get("PROVISION_COMPOSE") == "1" else ["test_*.py"]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def seed_env() -> dict[str, str]:
    """ROCKETCHAT_URL, ROCKETCHAT_USER_ID and ROCKETCHAT_AUTH_TOKEN written by the seed service."""
    path = ROOT / ".compose" / "seed.env"
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: run `docker compose -f docker-compose.test.yml up -d --wait`"
        )
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs}
