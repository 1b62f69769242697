"""``audit --metrics`` and ``audit --serve``: the stored inboxes' probes and Rocket.Chat's
active flag as Prometheus metrics, against the Rocket.Chat double and real mail servers
(``tests/test_audit.py``'s world: inboxes created with ``set``, then broken)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from typer.testing import CliRunner

from provision.cli import app
from provision.watch import Exporter
from tests.test_audit import NAMES, TOKEN, World, email, password, world
from tests.test_metrics import _samples, _value
from tests.test_watch import _metrics, _poll, _running, _start, _stop, _until

__all__ = ["world"]  # the fixture, imported to be used here
runner = CliRunner()


def _secrets() -> list[str]:
    return [TOKEN, *(password(name) for name in NAMES)]


async def test_audit_metrics_carry_the_reports_values_and_rocketchats_state(
    world: World, tmp_path: Path
) -> None:
    await world.hosts["Sales"].rotate_password("rotated-at-provider-77")
    world.double.imap_keeps_failing(email("Sales"))  # Rocket.Chat switches it off
    world.double.switch_off(email("Helpdesk"))  # left off after an outage that is over
    out = tmp_path / "audit.prom"
    result = await asyncio.to_thread(world.cli, "--json", "--metrics", str(out))
    assert result.exit_code == 14, result.stdout + result.stderr
    report = json.loads(result.stdout)
    text = out.read_text()
    for secret in _secrets():
        assert secret not in text
    samples = _samples(text)
    assert _value(samples, "provision_last_run_exit_code", command="audit") == 14
    assert _value(samples, "provision_inboxes", command="audit") == len(NAMES)
    active = {}
    for inbox in report["inboxes"]:
        who = {"command": "audit", "inbox": inbox["name"], "email": inbox["email"]}
        active[inbox["name"]] = _value(samples, "provision_rocketchat_inbox_active", **who)
        assert active[inbox["name"]] == inbox["rocketchat"]["active"]
        for stage in inbox["stages"]:
            if stage["stage"] not in ("smtp", "imap"):
                continue  # audit's rocketchat stage: its state is the active gauge
            up = _value(samples, "provision_probe_up", **who, stage=stage["stage"])
            assert up == (stage["status"] != "failed")
    assert active == {"Billing": 1, "Helpdesk": 0, "Sales": 0, "Support": 1}
    sales = {"command": "audit", "inbox": "Sales", "email": email("Sales")}
    assert _value(samples, "provision_probe_up", **sales, stage="imap") == 0


async def test_audit_against_files_gives_a_drift_gauge(world: World, tmp_path: Path) -> None:
    world.env["NEW_SUPPORT_PW"] = "another-password-9"
    changed = world.write(
        "changed.yaml", world.inbox_yaml(Support={"smtp_password": "NEW_SUPPORT_PW"})
    )
    out = tmp_path / "audit.prom"
    result = await asyncio.to_thread(
        world.cli, "--against", str(changed), "--json", "--metrics", str(out)
    )
    assert result.exit_code == 18, result.stdout + result.stderr
    text = out.read_text()
    assert "another-password-9" not in text
    samples = _samples(text)
    drifted = {
        name: _value(
            samples, "provision_inbox_drift", command="audit", inbox=name, email=email(name)
        )
        for name in NAMES
    }
    assert drifted == {"Billing": 0, "Helpdesk": 0, "Sales": 0, "Support": 1}
    assert _value(samples, "provision_last_run_exit_code", command="audit") == 18


async def test_audit_metrics_say_so_when_rocketchat_refuses(world: World, tmp_path: Path) -> None:
    """Rocket.Chat cannot be read (a wrong token): exit 20, and the metrics file says so
    instead of keeping an older run's good news."""
    out = tmp_path / "audit.prom"
    out.write_text("# an older run\n")
    env = {
        "ROCKETCHAT_URL": world.rocketchat.url,
        "ROCKETCHAT_USER_ID": world.user_id,
        "ROCKETCHAT_AUTH_TOKEN": "not-the-token-1f",
    }
    result = await asyncio.to_thread(
        runner.invoke, app, ["audit", "--metrics", str(out), "--timeout", "30"], env=env
    )
    assert result.exit_code == 20, result.stdout + result.stderr
    samples = _samples(out.read_text())
    assert _value(samples, "provision_last_run_exit_code", command="audit") == 20
    assert _value(samples, "provision_last_run_success", command="audit") == 0
    assert _value(samples, "provision_inboxes", command="audit") == 0


def test_audit_serve_without_credentials_is_exit_2_before_listening() -> None:
    result = runner.invoke(
        app,
        ["audit", "--serve", "127.0.0.1:0"],
        env={"ROCKETCHAT_URL": "https://chat.example.com"},
    )
    assert result.exit_code == 2
    assert "ROCKETCHAT_" in result.stderr
    assert "serving" not in result.stderr


async def test_audit_rounds_refresh_rocketchats_state(world: World) -> None:
    """An exporter whose round is the audit: switching an inbox off shows in a later round."""
    exporter = Exporter(
        world.audit, command="audit", every=0.01, deadline=30, log=lambda _line: None
    )
    helpdesk = {"command": "audit", "inbox": "Helpdesk", "email": email("Helpdesk")}
    async with _running(exporter) as port:
        await _until(exporter, lambda: exporter.completed >= 1)
        before = await _metrics(port)
        world.double.switch_off(email("Helpdesk"))
        after_switch = exporter.completed + 2  # this one started after the switch
        await _until(exporter, lambda: exporter.completed >= after_switch)
        after = await _metrics(port)
    assert _value(before, "provision_rocketchat_inbox_active", **helpdesk) == 1
    assert _value(after, "provision_rocketchat_inbox_active", **helpdesk) == 0


async def test_audit_serve_as_a_process(world: World, tmp_path: Path) -> None:
    env = {
        "ROCKETCHAT_URL": world.rocketchat.url,
        "ROCKETCHAT_USER_ID": world.user_id,
        "ROCKETCHAT_AUTH_TOKEN": TOKEN,
    }
    args = ["audit", "--ca-file", str(world.ca_file), "--step-timeout", "3"]
    # A round an hour away: SIGTERM lands between rounds, never mid-probe of this
    # process's servers.
    child, port, early = await _start(
        *args, "--serve", "127.0.0.1:0", "--every", "1h", cwd=tmp_path, env=env
    )
    try:
        samples = await _poll(
            port, lambda s: _value(s, "provision_exporter_rounds_total", command="audit") >= 1
        )
    finally:
        out, err = await _stop(child, signal.SIGTERM)
    assert child.returncode == 0, err
    for name in NAMES:
        who = {"command": "audit", "inbox": name, "email": email(name)}
        assert _value(samples, "provision_rocketchat_inbox_active", **who) == 1
        assert _value(samples, "provision_probe_up", **who, stage="smtp") == 1
    logged = "".join(early) + err
    assert "round 1: 4 inboxes, 0 failed, exit 0" in logged
    assert "stopped by SIGTERM after 1 rounds" in logged
    for secret in _secrets():
        assert secret not in logged + out
