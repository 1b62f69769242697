"""The metrics examples: a systemd service and timer, a Kubernetes CronJob and exporter, a
Prometheus scrape config. They parse, their provision commands parse with the real CLI,
credentials come only from a Secret or an environment file, and the units pass
``systemd-analyze verify``."""

from __future__ import annotations

import configparser
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer.main
import yaml

from provision.cli import app
from provision.watch import parse_duration, parse_listen

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _parses(args: list[str]) -> None:
    """``provision ARGS`` is accepted by the CLI's parser (nothing runs)."""
    command, *rest = args
    group = typer.main.get_command(app)
    sub = group.commands[command]  # type: ignore[attr-defined]
    sub.make_context(command, list(rest), resilient_parsing=False)


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def _kubernetes() -> dict[str, Any]:
    documents = list(yaml.safe_load_all((EXAMPLES / "kubernetes-audit.yaml").read_text()))
    return {d["kind"]: d for d in documents}


def _containers(kind: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    if kind == "CronJob":
        spec = spec["spec"]["jobTemplate"]
    return list(spec["spec"]["template"]["spec"]["containers"])


def test_kubernetes_audit_takes_credentials_only_from_a_secret() -> None:
    found = _kubernetes()
    assert set(found) == {"CronJob", "Deployment", "Service"}
    assert found["CronJob"]["spec"]["concurrencyPolicy"] == "Forbid"
    for kind in ("CronJob", "Deployment"):
        (container,) = _containers(kind, found[kind])
        args = container["args"]
        assert args[0] == "audit"
        _parses(args)
        assert "env" not in container  # nothing literal, not even the URL
        assert container["envFrom"] == [{"secretRef": {"name": "provision-rocketchat"}}]
        assert not [a for a in args if "ROCKETCHAT" in a or "token" in a.lower()]
    (exporter,) = _containers("Deployment", found["Deployment"])
    host, port = parse_listen(_option(exporter["args"], "--serve"))
    assert host == ""  # every address of the pod
    assert parse_duration(_option(exporter["args"], "--every")) == 300
    assert exporter["ports"][0]["containerPort"] == port
    assert exporter["readinessProbe"]["httpGet"]["path"] == "/metrics"
    assert found["Service"]["spec"]["ports"][0]["port"] == port


def test_prometheus_scrapes_the_exporters_port_and_path() -> None:
    config = yaml.safe_load((EXAMPLES / "prometheus-scrape.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (target,) = jobs["provision"]["static_configs"][0]["targets"]
    (exporter,) = _containers("Deployment", _kubernetes()["Deployment"])
    _, port = parse_listen(_option(exporter["args"], "--serve"))
    assert target == f"{_kubernetes()['Service']['metadata']['name']}:{port}"
    assert jobs["provision"]["metrics_path"] == "/metrics"
    assert "kubernetes_sd_configs" in jobs["provision-kubernetes"]


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((EXAMPLES / name).read_text())
    return parser


def test_systemd_service_writes_metrics_for_the_textfile_collector() -> None:
    service = _unit("provision-audit.service")["Service"]
    program, *args = shlex.split(service["ExecStart"])
    assert program == "/usr/local/bin/provision"
    assert args[0] == "audit"
    _parses(args)
    metrics = Path(_option(args, "--metrics"))
    assert metrics.suffix == ".prom"  # node_exporter reads only *.prom
    assert str(metrics.parent) == service["ReadWritePaths"]
    assert service["EnvironmentFile"] == "/etc/provision/rocketchat.env"
    codes = {int(c) for c in service["SuccessExitStatus"].split()}
    assert codes.isdisjoint({1, 2, 20})  # an audit that could not run fails the unit
    timer = _unit("provision-audit.timer")
    assert timer["Timer"]["OnCalendar"] == "*:0/15"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_systemd_units_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` (Debian's systemd, on this machine) with ExecStart
    pointing at this checkout's provision, since the unit's path is the installed one."""
    provision = Path(sys.executable).parent / "provision"
    assert provision.exists()
    for name in ("provision-audit.service", "provision-audit.timer"):
        text = (EXAMPLES / name).read_text()
        (tmp_path / name).write_text(text.replace("/usr/local/bin/provision", str(provision)))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(p) for p in sorted(tmp_path.iterdir()))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
