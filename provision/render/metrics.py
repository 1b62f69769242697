"""The report as Prometheus metrics (text exposition), built with ``prometheus_client``.

Per inbox and probe stage (``smtp``, ``imap``), labelled ``command``, ``inbox`` (its name),
``email`` and ``stage``; per run, labelled ``command``. No label or value ever holds a
secret: names, addresses, stage names and failure classes only. ``command`` keeps a
``check`` file and an ``audit`` file apart in one node_exporter textfile directory.

``prometheus_client`` costs about 55 ms to import (it pulls in ``http.server`` and
``wsgiref``), so this module is imported only when metrics are asked for.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from provision.results import Report, Stage, StageResult, Status

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = ["METRIC_NAMES", "ReportCollector", "render_metrics", "write_metrics"]

_PROBES = (Stage.SMTP, Stage.IMAP)
_STAGE_LABELS = ("command", "inbox", "email", "stage")
_INBOX_LABELS = ("command", "inbox", "email")

#: name -> HELP text, in exposition order (the tests and the README list them from here).
METRIC_NAMES: dict[str, str] = {
    "provision_probe_up": "1 if the stage's probe logged in (passed, or passed with "
    "warnings), 0 if it failed.",
    "provision_probe_duration_seconds": "How long the stage's probe took, in seconds.",
    "provision_probe_warnings": "Number of warnings the stage's probe recorded.",
    "provision_probe_failure_info": "1 for a failed stage, labelled with its failure class.",
    "provision_certificate_expiry_timestamp_seconds": "When the certificate the stage's "
    "server presented expires (notAfter), as a Unix timestamp.",
    "provision_inbox_up": "1 if every stage of the inbox passed (warnings allowed unless "
    "--strict), else 0.",
    "provision_rocketchat_inbox_active": "1 if Rocket.Chat has the inbox switched on, 0 if "
    "it is inactive (audit only).",
    "provision_inbox_drift": "1 if the stored inbox differs from the inbox files, is only "
    "on the server or only in the files, else 0 (audit --against only).",
    "provision_last_run_timestamp_seconds": "When the run finished, as a Unix timestamp.",
    "provision_last_run_duration_seconds": "How long the run took, in seconds.",
    "provision_last_run_success": "1 if the run's exit code was 0, else 0.",
    "provision_last_run_exit_code": "The run's exit code (see the README's exit-code table).",
    "provision_inboxes": "Number of inboxes in the run.",
}


def _expiry(stage: StageResult) -> float | None:
    """The certificate's notAfter from the stage's facts, or ``None`` if none was seen."""
    tls = stage.facts.get("tls")
    cert = tls.get("certificate") if isinstance(tls, dict) else None
    not_after = cert.get("not_after") if isinstance(cert, dict) else None
    if not isinstance(not_after, str):
        return None
    try:
        when = dt.datetime.fromisoformat(not_after)
    except ValueError:
        return None
    if when.tzinfo is None:  # cert_facts writes UTC; never read a naive time as local
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


class ReportCollector:
    """A ``prometheus_client`` collector of one report's metrics.

    Args:
        report: the finished run.
        exit_code: the run's exit code when it differs from the report's (bad input,
            an output that could not be written); ``None``: the report's.
        finished: when the run finished (Unix time); ``None``: now.
    """

    def __init__(
        self, report: Report, *, exit_code: int | None = None, finished: float | None = None
    ) -> None:
        self.report = report
        self.exit_code = int(report.exit_code) if exit_code is None else exit_code
        self.finished = time.time() if finished is None else finished

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import GaugeMetricFamily

        def family(name: str, labels: tuple[str, ...]) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, METRIC_NAMES[name], labels=labels)

        report = self.report
        command = report.command
        up = family("provision_probe_up", _STAGE_LABELS)
        duration = family("provision_probe_duration_seconds", _STAGE_LABELS)
        warnings = family("provision_probe_warnings", _STAGE_LABELS)
        failure = family("provision_probe_failure_info", (*_STAGE_LABELS, "class"))
        expiry = family("provision_certificate_expiry_timestamp_seconds", _STAGE_LABELS)
        inbox_up = family("provision_inbox_up", _INBOX_LABELS)
        active = family("provision_rocketchat_inbox_active", _INBOX_LABELS)
        drift = family("provision_inbox_drift", _INBOX_LABELS)
        for inbox in report.inboxes:
            who = [command, inbox.name, inbox.email]
            for stage in inbox.stages:
                if stage.stage not in _PROBES or stage.status is Status.SKIPPED:
                    continue  # no probe ran: nothing measured
                labels = [*who, stage.stage.value]
                up.add_metric(labels, 0.0 if stage.status is Status.FAILED else 1.0)
                duration.add_metric(labels, max(stage.elapsed_ms, 0.0) / 1000)
                warnings.add_metric(labels, float(len(stage.warnings)))
                if stage.status is Status.FAILED:
                    cls = stage.failure.value if stage.failure else "unknown"
                    failure.add_metric([*labels, cls], 1.0)
                expires = _expiry(stage)
                if expires is not None:
                    expiry.add_metric(labels, expires)
            status = inbox.status(strict=report.strict)
            if status is not Status.SKIPPED:
                inbox_up.add_metric(who, 0.0 if status is Status.FAILED else 1.0)
            if inbox.rocketchat is not None:  # audit's: what Rocket.Chat says of it
                active.add_metric(who, 1.0 if inbox.rocketchat.active else 0.0)
            for stage in inbox.stages:
                if stage.stage is Stage.DRIFT:  # audit --against: file versus server
                    drift.add_metric(who, 1.0 if stage.status is Status.FAILED else 0.0)
        yield from (up, duration, warnings, failure, expiry, inbox_up, active, drift)

        def run(name: str, value: float) -> GaugeMetricFamily:
            metric = family(name, ("command",))
            metric.add_metric([command], value)
            return metric

        yield run("provision_last_run_timestamp_seconds", self.finished)
        yield run("provision_last_run_duration_seconds", max(report.elapsed_ms, 0.0) / 1000)
        yield run("provision_last_run_success", 1.0 if self.exit_code == 0 else 0.0)
        yield run("provision_last_run_exit_code", float(self.exit_code))
        yield run("provision_inboxes", float(len(report.inboxes)))


def _registry(collector: ReportCollector) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render_metrics(
    report: Report, *, exit_code: int | None = None, finished: float | None = None
) -> str:
    """The Prometheus text exposition (format 0.0.4) of ``report``."""
    from prometheus_client import generate_latest

    collector = ReportCollector(report, exit_code=exit_code, finished=finished)
    text: bytes = generate_latest(_registry(collector))
    return text.decode("utf-8")


def write_metrics(
    path: Path, report: Report, *, exit_code: int | None = None, finished: float | None = None
) -> None:
    """Write ``report``'s metrics to ``path`` atomically, for node_exporter's textfile collector.

    ``prometheus_client.write_to_textfile`` writes ``PATH.<pid>.<thread>`` in the same
    directory (so the rename never crosses a file system, and the textfile collector,
    which reads only ``*.prom``, never sees it), then renames it over ``path``: a
    reader sees the old file or the new one, never a part. If writing fails, the temp
    file is removed and the old file stays.

    Raises:
        OSError: the file could not be written.
    """
    from prometheus_client import write_to_textfile

    collector = ReportCollector(report, exit_code=exit_code, finished=finished)
    write_to_textfile(str(path), _registry(collector))
