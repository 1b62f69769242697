"""The Dockerfile's structure (no Docker engine here): a slim Python base, build tools only in
the build stage, an unprivileged user, `provision` as the entry point, a minimal context."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def _stages(text: str) -> list[Stage]:
    """Split a Dockerfile into stages of (INSTRUCTION, arguments), continuation lines joined."""
    logical = re.sub(r"\\\n", " ", text)
    stages: list[Stage] = []
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, rest.strip()))
    return stages


STAGES = _stages((ROOT / "Dockerfile").read_text())
FINAL = STAGES[-1]


def _args(keyword: str, stage: Stage = FINAL) -> list[str]:
    return [rest for k, rest in stage.instructions if k == keyword]


def test_both_stages_use_a_slim_python_the_project_supports() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(p) for p in re.fullmatch(r">=(\d+)\.(\d+)", requires).groups())  # type: ignore[union-attr]
    for stage in STAGES:
        match = re.fullmatch(r"python:(\d+)\.(\d+)-slim", stage.base)
        assert match, stage.base
        assert tuple(int(p) for p in match.groups()) >= minimum


def test_the_image_runs_provision_as_an_unprivileged_user() -> None:
    kinds = [k for k, _ in FINAL.instructions]
    (user,) = _args("USER")
    assert user.split(":")[0] not in {"root", "0"}
    assert kinds.index("USER") < kinds.index("ENTRYPOINT")
    (entrypoint,) = _args("ENTRYPOINT")
    assert json.loads(entrypoint) == ["provision"]  # exec form: signals reach provision
    (created,) = [r for r in _args("RUN") if "useradd" in r]
    uid = re.search(r"--uid (\d+)", created)
    assert uid
    assert user.split(":")[0] == uid.group(1)


def test_no_build_tool_or_source_tree_reaches_the_final_image() -> None:
    everything = " ".join(rest for stage in STAGES for _, rest in stage.instructions)
    for tool in ("apt-get", "apk ", "gcc", "build-essential", "git "):
        assert tool not in everything
    assert _args("COPY") == []  # the wheels arrive through a bind mount, not a layer
    (install,) = [r for r in _args("RUN") if "pip install" in r]
    words = shlex.split(install)
    assert "--no-index" in words  # only the wheels built in the first stage
    assert "--no-cache-dir" in words
    assert "from=build" in install


def test_the_build_context_holds_only_what_the_wheel_needs() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"
    allowed = {line.removeprefix("!").rstrip("/") for line in ignore if line.startswith("!")}
    assert "**/__pycache__" in ignore
    copied = {
        word.rstrip("/").removeprefix("./")
        for rest in _args("COPY", STAGES[0])
        for word in rest.split()[:-1]
    }
    assert copied == allowed == {"pyproject.toml", "README.md", "provision"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["readme"] in allowed
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["provision"]
