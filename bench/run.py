"""provision's benchmark: start-up, a cold check against swaks + curl, stalls, a batch, memory.

    .venv/bin/python bench/run.py              # about a minute; Markdown on stdout
    .venv/bin/python bench/run.py --runs 3     # quicker, noisier

It starts its own servers and talks to 127.0.0.1 only:

* the sandbox's aiosmtpd and pymap servers (``provision sandbox``, another process);
* Debian's Postfix and Dovecot, configured as the real-server tests do
  (``tests/real/conftest.py``), when they are installed and the bench runs as root;
* a latency-injecting TCP proxy (``bench/proxy.py``, 20 ms each way) for the batch.

swaks, curl, Dovecot and Postfix come from ``scripts/install-mail-servers``, which is
run first when one of them is missing (``--no-install`` skips that). Every command
is timed as a fresh process, as a pipeline runs it. "before" rows run the same code
with the pre-benchmark TLS context handling patched back in (see ``_BEFORE``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import pwd
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from proxy import Connection, LatencyProxy, ProxyThread

ROOT = Path(__file__).resolve().parent.parent
DELAY = 0.020  # seconds each way through the proxy
BATCH = 100
MEMORY_BATCH = 1000
_SBIN = "/usr/sbin:/sbin:/usr/local/sbin"

# The entry point as the console script runs it; "before" patches back what the
# benchmark changed: a fresh TLS context per connection (the system CA store read each
# time, in the event loop) and the character-by-character escaping of every scrubbed text.
_AFTER = "import sys\nfrom provision.cli import main\nsys.argv[0] = 'provision'\nmain()\n"
_BEFORE = """\
import ssl, sys
import provision.tls as t

async def probe_context(ca_file=None, *, verify=True):
    return t.verifying_context(ca_file, verify=verify)

def imap_context():
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx

t.probe_context, t.imap_context = probe_context, imap_context
t.warm_probe_context = lambda *args, **kwargs: None

import provision.probes._scrub as scrub

def escaped(text):
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)

scrub._escaped = escaped
""" + _AFTER.split("\n", 1)[1]


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- running


def clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PROVISION_", "SSL_CERT_", "ROCKETCHAT_"))
        and k.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    }
    env["NO_COLOR"] = "1"
    # Cold means a new process, not a new install: let Python keep its .pyc files.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


ENV = clean_env()


def provision_cmd(*args: str, before: bool = False) -> list[str]:
    return [sys.executable, "-c", _BEFORE if before else _AFTER, *args]


@dataclass
class Run:
    seconds: float
    returncode: int
    stdout: str
    stderr: str


def run(cmd: Sequence[str], *, timeout: float = 120) -> Run:
    started = time.perf_counter()
    done = subprocess.run(
        list(cmd), capture_output=True, text=True, env=ENV, timeout=timeout, check=False
    )
    return Run(time.perf_counter() - started, done.returncode, done.stdout, done.stderr)


def must(result: Run, what: str) -> Run:
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-8:]
        raise RuntimeError(f"{what} exited with {result.returncode}:\n" + "\n".join(tail))
    return result


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --------------------------------------------------------------------------- machine


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, nproc {nproc}",
        "python": f"{platform.python_implementation()} {platform.python_version()}, "
        f"{ssl.OPENSSL_VERSION}",
        "os": f"{platform.system()} {platform.release()}",
        "commit": (commit + (" (with local changes)" if dirty else "")) or "unknown",
    }


def tool_versions() -> dict[str, str]:
    versions = {}
    for name, cmd in {
        "swaks": ["swaks", "--version"],
        "curl": ["curl", "--version"],
        "dovecot": ["dovecot", "--version"],
        "postfix": ["postconf", "-d", "-h", "mail_version"],
    }.items():
        exe = shutil.which(cmd[0], path=f"{os.environ.get('PATH', '')}:{_SBIN}")
        if exe is None:
            continue
        out = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, check=False)
        words = out.stdout.split()
        if name == "swaks":
            versions[name] = words[2] if len(words) > 2 else "?"
        else:
            versions[name] = words[1] if name == "curl" and len(words) > 1 else words[0]
    return versions


def install_tools() -> None:
    """Run scripts/install-mail-servers when swaks, curl, Dovecot or Postfix is missing."""
    path = f"{os.environ.get('PATH', '')}:{_SBIN}"
    missing = [t for t in ("swaks", "curl", "dovecot", "postfix") if not shutil.which(t, path=path)]
    if not missing:
        return
    log(f"missing {', '.join(missing)}: running scripts/install-mail-servers")
    done = subprocess.run([str(ROOT / "scripts" / "install-mail-servers")], check=False)
    if done.returncode != 0:
        log("install-mail-servers failed; the rows that need those tools are skipped")


# --------------------------------------------------------------------------- servers


@dataclass
class Target:
    """Where one inbox's SMTP (STARTTLS) and IMAP (implicit TLS) live."""

    label: str
    smtp_port: int
    imap_port: int
    user: str
    password: str
    ca_file: Path
    workdir: Path
    server_pid: int | None = None  # the servers' process, for its CPU time


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def sandbox_servers(workdir: Path) -> Iterator[tuple[Target, int]]:
    """``provision sandbox`` in its own process; yields its target and implicit-TLS port."""
    directory = workdir / "sandbox"
    logfile = (workdir / "sandbox.log").open("wb")
    proc = subprocess.Popen(
        provision_cmd("sandbox", "--dir", str(directory)),
        stdin=subprocess.DEVNULL,
        stdout=logfile,
        stderr=subprocess.STDOUT,
        env=ENV,
        start_new_session=True,
    )
    try:
        inboxes = _wait_for_inbox_file(directory / "inboxes.yaml", proc)
        support = next(i for i in inboxes if not i["smtp"]["secure"])
        sales = next(i for i in inboxes if i["smtp"]["secure"])
        target = Target(
            label="sandbox (aiosmtpd 1.4 + pymap 0.36)",
            smtp_port=support["smtp"]["port"],
            imap_port=support["imap"]["port"],
            user=support["smtp"]["username"],
            password=(directory / "password").read_text().rstrip("\n"),
            ca_file=directory / "ca.pem",
            workdir=_mkdir(workdir / "sandbox-runs"),
            server_pid=proc.pid,
        )
        for port in (target.smtp_port, target.imap_port, sales["smtp"]["port"]):
            _wait_port(port)
        yield target, int(sales["smtp"]["port"])
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        logfile.close()


def _wait_for_inbox_file(path: Path, proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    give_up = time.monotonic() + 30
    while time.monotonic() < give_up:
        if proc.poll() is not None:
            raise RuntimeError(f"`provision sandbox` exited with {proc.returncode}")
        with contextlib.suppress(OSError, yaml.YAMLError, TypeError, KeyError):
            inboxes = yaml.safe_load(path.read_text())["inboxes"]
            if len(inboxes) == 2 and (path.parent / "password").read_text().endswith("\n"):
                return list(inboxes)
        time.sleep(0.05)
    raise RuntimeError("`provision sandbox` did not write its inbox file within 30 s")


def _wait_port(port: int) -> None:
    give_up = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.05)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _load_real_tier() -> ModuleType:
    """tests/real/conftest.py, imported as a plain module (its setup is reused as is)."""
    spec = importlib.util.spec_from_file_location(
        "provision_bench_real_servers", ROOT / "tests" / "real" / "conftest.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def real_servers(workdir: Path) -> Iterator[Target | str]:
    """Debian's Postfix + Dovecot as the real tier runs them; a reason string if not."""
    path = f"{os.environ.get('PATH', '')}:{_SBIN}"
    dovecot, postfix = shutil.which("dovecot", path=path), shutil.which("postfix", path=path)
    if dovecot is None or postfix is None:
        yield "Dovecot or Postfix is not installed (scripts/install-mail-servers)"
        return
    if os.geteuid() != 0:
        yield "starting Dovecot and Postfix needs root"
        return
    try:
        tier = _load_real_tier()
        mail_pw = pwd.getpwnam(tier.MAIL_USER)
    except (ImportError, KeyError, AttributeError) as exc:
        yield f"cannot reuse tests/real/conftest.py ({type(exc).__name__}: {exc})"
        return
    from provision.sandbox.ca import SandboxCA

    root = Path(tempfile.mkdtemp(prefix="provision-bench-real-"))
    root.chmod(0o755)
    daemons = None
    result: Target | str
    try:
        try:
            daemons = tier._Daemons(dovecots=[])
            servers = tier._start_all(root, SandboxCA.create(), dovecot, postfix, mail_pw, daemons)
            versions = tool_versions()
            result = Target(
                label=f"Debian Postfix {versions.get('postfix', '?')} + "
                f"Dovecot {versions.get('dovecot', '?')}",
                smtp_port=servers.submission_port,
                imap_port=servers.imaps_port,
                user=servers.user.username,
                password=servers.user.password,
                ca_file=servers.ca_file,
                workdir=_mkdir(workdir / "real-runs"),
            )
        except (Exception, pytest_outcome()) as exc:  # pytest.fail raises an OutcomeException
            result = f"Dovecot/Postfix did not start: {str(exc).splitlines()[0][:200]}"
        yield result
    finally:
        if daemons is not None:
            daemons.stop()
        shutil.rmtree(root, ignore_errors=True)


def pytest_outcome() -> type[BaseException]:
    """What ``pytest.fail`` raises (a ``BaseException``) in the reused fixture code."""
    import pytest

    failed: type[BaseException] = pytest.fail.Exception
    return failed


# --------------------------------------------------------------------------- inbox files


def write_inboxes(
    target: Target,
    count: int,
    *,
    name: str,
    smtp_port: int | None = None,
    imap_port: int | None = None,
) -> Path:
    """An inbox file of ``count`` inboxes on one account; the password in a file beside it."""
    (target.workdir / "password").write_text(target.password + "\n")
    (target.workdir / "password").chmod(0o600)
    smtp = smtp_port or target.smtp_port
    imap = imap_port or target.imap_port
    lines = ["inboxes:"]
    for i in range(1, count + 1):
        lines += [
            f"  - name: Bench {i:04d}",
            f"    email: bench{i:04d}@example.com",
            "    smtp:",
            "      server: 127.0.0.1",
            f"      port: {smtp}",
            f"      username: {target.user}",
            "      password: ${file:password}",
            "      secure: false",
            "    imap:",
            "      server: 127.0.0.1",
            f"      port: {imap}",
            f"      username: {target.user}",
            "      password: ${file:password}",
            "      secure: true",
        ]
    path = target.workdir / name
    path.write_text("\n".join(lines) + "\n")
    return path


def swaks_cmd(target: Target, port: int | None = None) -> list[str]:
    return [
        "swaks",
        "--server",
        "127.0.0.1",
        "--port",
        str(port or target.smtp_port),
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        str(target.ca_file),
        "--auth",
        "PLAIN",
        "--auth-user",
        target.user,
        "--auth-password",
        target.password,
        "--ehlo",
        "bench.localhost",
        "--from",
        target.user,
        "--to",
        target.user,
        "--quit-after",
        "AUTH",
        "--silent",
        "2",
    ]


def curl_cmd(target: Target, port: int | None = None) -> list[str]:
    # LOGIN (curl: AUTHENTICATE PLAIN), SELECT INBOX, SEARCH UNSEEN SINCE today, LOGOUT:
    # the work of the IMAP probe.
    since = dt.date.today()
    query = f"UNSEEN%20SINCE%20{since.day}-{since.strftime('%b')}-{since.year}"
    return [
        "curl",
        "--silent",
        "--show-error",
        "--noproxy",
        "*",
        "--cacert",
        str(target.ca_file),
        "--user",
        f"{target.user}:{target.password}",
        f"imaps://127.0.0.1:{port or target.imap_port}/INBOX?{query}",
    ]


# --------------------------------------------------------------------------- sections


@dataclass
class Report:
    sections: list[str] = field(default_factory=list)
    goals: list[str] = field(default_factory=list)

    def add(self, title: str, *lines: str) -> None:
        self.sections.append("\n".join([f"### {title}", "", *lines]))


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def section_startup(report: Report, runs: int, one_inbox: Path, ca_file: Path) -> None:
    log("start-up: python, provision --version, --help, import times")
    rows = []
    for label, cmd in (
        ("`python -c pass` (the interpreter alone)", [sys.executable, "-c", "pass"]),
        ("`provision --version`", provision_cmd("--version")),
        ("`provision --help`", provision_cmd("--help")),
    ):
        times = [must(run(cmd), label).seconds for _ in range(runs)]
        rows.append([label, ms(median(times)), ms(min(times))])
    check = ["check", str(one_inbox), "--ca-file", str(ca_file)]
    imports = {}
    for label, args in (("--version", ["--version"]), ("--help", ["--help"]), ("check", check)):
        cmd = provision_cmd(*args)
        result = must(run([cmd[0], "-X", "importtime", *cmd[1:]]), label)
        imports[label] = _import_times(result.stderr)
    heavy = (
        "typer",
        "rich",
        "pydantic",
        "asyncio",
        "ssl",
        "yaml",
        "aiosmtplib",
        "aioimaplib",
        "cryptography",
        "httpx",
    )
    matrix = []
    for package in heavy:
        cells = []
        for label in ("--version", "--help", "check"):
            cost = imports[label].get(package)
            cells.append(f"{cost:.0f} ms" if cost is not None else "-")
        matrix.append([f"`{package}`", *cells])
    totals = [f"{sum(imports[k].values()):.0f} ms" for k in ("--version", "--help", "check")]
    matrix.append(["**all imports**", *totals])

    def largest(label: str, n: int) -> str:
        top = sorted(imports[label].items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"`{k}` {v:.0f} ms" for k, v in top)

    report.add(
        "Start-up",
        *table(["command", "median", "min"], rows),
        "",
        "Import time by package (`-X importtime`, self time summed per top-level package):",
        "",
        *table(["package", "`--version`", "`--help`", "`check` (one inbox)"], matrix),
        "",
        f"Largest on the `--version` path: {largest('--version', 5)}; on the `check` path: "
        f"{largest('check', 8)}. `check` imports `pydantic` because typer builds pydantic "
        "adapters to convert the command's arguments.",
    )


def _import_times(stderr: str) -> dict[str, float]:
    costs: dict[str, float] = collections.defaultdict(float)
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        try:
            self_us, _cumulative, name = line.split(":", 1)[1].split("|")
            costs[name.strip().split(".")[0]] += int(self_us) / 1000
        except ValueError:
            continue
    return dict(costs)


@dataclass
class ColdResult:
    label: str
    check: list[float]
    swaks: list[float]
    curl: list[float]
    inside: list[float] = field(default_factory=list)

    @property
    def pair(self) -> list[float]:
        return [s + c for s, c in zip(self.swaks, self.curl, strict=True)]


def section_cold(report: Report, targets: Sequence[Target], runs: int) -> list[ColdResult]:
    results = []
    for target in targets:
        log(f"cold check vs swaks + curl: {target.label}")
        inbox = write_inboxes(target, 1, name="one.yaml")
        check = provision_cmd("check", str(inbox), "--ca-file", str(target.ca_file), "--json")
        result = ColdResult(target.label, [], [], [])
        for i in range(runs + 1):  # the first round warms caches and is dropped
            probe = must(run(check), "provision check")
            times = (
                probe.seconds,
                must(run(swaks_cmd(target)), "swaks").seconds,
                must(run(curl_cmd(target)), "curl").seconds,
            )
            if i:
                result.check.append(times[0])
                result.swaks.append(times[1])
                result.curl.append(times[2])
                result.inside.append(json.loads(probe.stdout)["elapsed_ms"] / 1000)
        results.append(result)
    rows = []
    for r in results:
        ratio = median(r.check) / median(r.pair)
        rows.append(
            [
                r.label,
                f"{ms(median(r.check))} (min {ms(min(r.check))})",
                ms(median(r.inside)),
                ms(median(r.swaks)),
                ms(median(r.curl)),
                f"{ms(median(r.pair))} (min {ms(min(r.pair))})",
                f"{ratio:.2f}x",
            ]
        )
        verdict = "met" if ratio <= 1.0 else f"not met ({ratio:.1f}x the pair)"
        report.goals.append(f"cold check <= swaks + curl on {r.label}: {verdict}")
    report.add(
        "One cold `provision check` (SMTP STARTTLS + IMAP TLS) against swaks + curl, "
        f"median of {runs}",
        *table(
            [
                "servers",
                "`provision check`",
                "of which probing",
                "`swaks --quit-after AUTH`",
                "`curl imaps://.../INBOX?UNSEEN...`",
                "swaks + curl, one after the other",
                "check / pair",
            ],
            rows,
        ),
        "",
        "Each is a fresh process (`.pyc` files present, as from the second run on); "
        "*of which probing* is the report's `elapsed_ms` (both probes, concurrently), the "
        "rest is start-up, input and output. swaks verifies the certificate (`--tls-verify`) "
        "and authenticates with AUTH PLAIN after STARTTLS; curl logs in, selects INBOX, "
        "searches and logs out, as the IMAP probe does.",
    )
    return results


def _stage_steps(doc: dict[str, Any]) -> list[tuple[str, float, list[tuple[str, float]]]]:
    out = []
    for inbox in doc["inboxes"]:
        for stage in inbox["stages"]:
            if stage["stage"] in ("smtp", "imap"):
                steps = [(s["step"], s["elapsed_ms"]) for s in stage["steps"]]
                out.append((stage["stage"], stage["elapsed_ms"], steps))
    return out


def _stall_cells(docs: Sequence[dict[str, Any]], walls: Sequence[float]) -> list[str]:
    smtp: list[float] = []
    imap: list[float] = []
    slowest: list[float] = []
    names: collections.Counter[str] = collections.Counter()
    for doc in docs:
        worst = ("", 0.0)
        for stage, elapsed, steps in _stage_steps(doc):
            (smtp if stage == "smtp" else imap).append(elapsed)
            for name, took in steps:
                if name != "resolve" and took > worst[1]:
                    worst = (f"{stage} {name}", took)
        slowest.append(worst[1])
        names[worst[0]] += 1
    return [
        f"{median(smtp):.0f} ms",
        f"{median(imap):.0f} ms",
        f"{median(slowest):.0f} ms ({names.most_common(1)[0][0]})",
        ms(median(walls)),
    ]


def _stall_row(cmd_args: Sequence[str], runs: int, *, before: bool) -> list[str]:
    docs, walls = [], []
    for _ in range(runs):
        result = must(run(provision_cmd(*cmd_args, before=before)), "provision check --json")
        walls.append(result.seconds)
        docs.append(json.loads(result.stdout))
    return _stall_cells(docs, walls)


def _warm_row(inbox: Path, ca_file: Path, runs: int) -> list[str]:
    """Probes in this process once the TLS contexts exist: what each check costs after."""
    import asyncio

    from provision.commands.check import check
    from provision.inbox import load_inboxes
    from provision.models import ProbeOptions
    from provision.render.json import render_json

    async def probe() -> tuple[list[dict[str, Any]], list[float]]:
        loaded = load_inboxes([str(inbox)])
        options = ProbeOptions(ca_file=ca_file)
        await check(loaded.inboxes, options)  # builds the shared contexts
        docs, walls = [], []
        for _ in range(runs):
            report = await check(loaded.inboxes, options)
            docs.append(json.loads(render_json(report)))
            walls.append(report.elapsed_ms / 1000)
        return docs, walls

    docs, walls = asyncio.run(probe())
    return _stall_cells(docs, walls)


def section_stalls(report: Report, targets: Sequence[Target], runs: int) -> None:
    log("stalls: step times before/after, in-process and against separate servers")
    rows = []
    for before in (True, False):
        row = _stall_row(["check", "--sandbox", "--json"], runs, before=before)
        rows.append(
            [
                "`check --sandbox` (servers in the same event loop, 2 inboxes)",
                "before" if before else "after",
                *row,
            ]
        )
    for target in targets:
        inbox = write_inboxes(target, 1, name="one.yaml")
        args = ["check", str(inbox), "--ca-file", str(target.ca_file), "--json"]
        for before in (True, False):
            row = _stall_row(args, runs, before=before)
            rows.append([f"{target.label}, 1 inbox", "before" if before else "after", *row])
        rows.append(
            [
                f"{target.label}, 1 inbox",
                "after, later checks in one process",
                *_warm_row(inbox, target.ca_file, runs),
            ]
        )
    report.add(
        f"Stalls: probe and step times inside `check --json`, median of {runs}",
        *table(["case", "TLS contexts", "SMTP probe", "IMAP probe", "slowest step", "wall"], rows),
        "",
        "*before*: every connection built its own `SSLContext` in the event loop, reading the "
        "system CA store (about 15 ms of CPU each; four per inbox, 300 in the batch below), "
        "and every reported string was escaped character by character (about 0.7 ms of "
        "CPU per inbox); "
        "*after*: one shared context per process, read in a thread from the start of the "
        "probe (the first STARTTLS or TLS step of a new process still waits for it); "
        "*later checks*: the same process probing again, contexts built (wall = `elapsed_ms`).",
    )


@dataclass
class ProxyRun:
    wall: list[float] = field(default_factory=list)
    elapsed: list[float] = field(default_factory=list)
    cpu: list[tuple[float, float, float]] = field(default_factory=list)  # client, servers, proxy
    smtp: list[Connection] = field(default_factory=list)
    imap: list[Connection] = field(default_factory=list)


def _through_proxy(
    proxies: ProxyThread,
    smtp: LatencyProxy,
    imap: LatencyProxy,
    cmd: Sequence[str],
    runs: int,
    *,
    json_out: bool = True,
    server_pid: int | None = None,
) -> ProxyRun:
    out = ProxyRun()
    for _ in range(runs):
        smtp.connections.clear()
        imap.connections.clear()
        before = (children_cpu(), cpu_seconds(server_pid), time.process_time())
        result = must(run(cmd, timeout=300), " ".join(cmd[:1]))
        proxies.run(smtp.idle())
        proxies.run(imap.idle())
        after = (children_cpu(), cpu_seconds(server_pid), time.process_time())
        out.cpu.append((after[0] - before[0], after[1] - before[1], after[2] - before[2]))
        out.wall.append(result.seconds)
        if json_out:
            doc = json.loads(result.stdout)
            if not doc.get("ok"):
                raise RuntimeError("a probe failed through the proxy")
            out.elapsed.append(doc["elapsed_ms"] / 1000)
        out.smtp = list(smtp.connections)
        out.imap = list(imap.connections)
    return out


def _turns(connections: Sequence[Connection]) -> str:
    counts = collections.Counter(c.turns for c in connections)
    return ", ".join(f"{n} x {turns + 1}" for turns, n in sorted(counts.items(), reverse=True))


def section_batch(report: Report, target: Target, runs: int, batch_runs: int) -> None:
    log(f"latency proxy ({DELAY * 1000:.0f} ms each way): one inbox, then {BATCH} inboxes")
    proxies = ProxyThread()
    smtp = proxies.proxy(("127.0.0.1", target.smtp_port), DELAY)
    imap = proxies.proxy(("127.0.0.1", target.imap_port), DELAY)
    try:
        one = write_inboxes(
            target, 1, name="proxy-one.yaml", smtp_port=smtp.port, imap_port=imap.port
        )
        many = write_inboxes(
            target, BATCH, name="proxy-batch.yaml", smtp_port=smtp.port, imap_port=imap.port
        )
        ca = ["--ca-file", str(target.ca_file), "--json"]
        pid = target.server_pid

        def through(cmd: Sequence[str], n: int, *, json_out: bool = True) -> ProxyRun:
            return _through_proxy(proxies, smtp, imap, cmd, n, json_out=json_out, server_pid=pid)

        single = through(provision_cmd("check", str(one), *ca), runs)
        batch_cmd = ["check", str(many), *ca, "--concurrency", str(BATCH)]
        batch = through(provision_cmd(*batch_cmd), batch_runs)
        before = through(provision_cmd(*batch_cmd, before=True), 1)
        swaks = through(swaks_cmd(target, smtp.port), runs, json_out=False)
        curl = through(curl_cmd(target, imap.port), runs, json_out=False)
    finally:
        proxies.stop(smtp, imap)

    pair = [a + b for a, b in zip(swaks.wall, curl.wall, strict=True)]
    ratio = median(batch.wall) / median(single.wall)
    inner = median(batch.elapsed) / median(single.elapsed)
    report.goals.append(
        f"{BATCH} inboxes <= 3x one inbox through the proxy: "
        + ("met" if ratio <= 3 else "not met")
        + f" ({ratio:.2f}x wall, {inner:.2f}x inside the run)"
    )

    def cpu(*runs_: ProxyRun) -> str:
        parts = [sum(median([c[i] for c in r.cpu]) for r in runs_) for i in range(3)]
        return " / ".join(f"{x:.2f}" for x in parts) + " s"

    rows = [
        ["1 inbox", ms(median(single.wall)), ms(median(single.elapsed)), "1.00x", cpu(single)],
        [
            f"{BATCH} inboxes, `--concurrency {BATCH}`",
            ms(median(batch.wall)),
            ms(median(batch.elapsed)),
            f"{ratio:.2f}x",
            cpu(batch),
        ],
        [
            "swaks + curl, one after the other (1 inbox)",
            ms(median(pair)),
            "",
            f"{median(pair) / median(single.wall):.2f}x",
            cpu(swaks, curl),
        ],
        [
            f"{BATCH} inboxes, before (a TLS context per connection, slow scrubbing)",
            ms(median(before.wall)),
            ms(median(before.elapsed)),
            f"{median(before.wall) / median(single.wall):.2f}x",
            cpu(before),
        ],
    ]
    smtp_main = max((c.turns for c in single.smtp), default=0) + 1
    imap_main = max((c.turns for c in single.imap), default=0) + 1
    rtt = 2 * DELAY
    trips = [
        [
            "SMTP probe, `secure: false` (STARTTLS)",
            _turns(single.smtp),
            "8: connect, greeting, EHLO, STARTTLS, TLS 1.3 handshake, EHLO, AUTH PLAIN, QUIT",
            "at minimum" if smtp_main <= 8 else f"{smtp_main - 8} over",
        ],
        [
            "IMAP probe, `secure: true`",
            _turns(single.imap),
            "7: connect, TLS 1.3 handshake, greeting (with CAPABILITY), LOGIN, SELECT, "
            "SEARCH, LOGOUT",
            ("at minimum" if imap_main <= 7 else f"{imap_main - 7} over")
            + "; the 2nd connection is the credential-free certificate check, in parallel",
        ],
        ["swaks `--tls --quit-after AUTH`", _turns(swaks.smtp), "", ""],
        ["curl `imaps://` LOGIN, SELECT, SEARCH", _turns(curl.imap), "", ""],
    ]
    report.add(
        f"A batch through a latency-injecting proxy ({DELAY * 1000:.0f} ms each way, "
        f"RTT {rtt * 1000:.0f} ms; sandbox servers)",
        *table(
            [
                "run",
                "wall (process)",
                "inside the run (`elapsed_ms`)",
                "vs 1 inbox",
                "CPU: client / servers / proxy",
            ],
            rows,
        ),
        "",
        f"Median of {runs} single and {batch_runs} batch runs (the *before* batch: one run), "
        "each a fresh process as in the cold comparison above. Round trips per connection "
        "(connections x round trips, TCP connect included) in the single run, counted by "
        "the proxy:",
        "",
        *table(["client", "connections x round trips", "protocol minimum", ""], trips),
        "",
        f"In the last batch run: SMTP {_turns(batch.smtp)}; IMAP {_turns(batch.imap)}. "
        "A connection shows one round trip more when the client, busy with a hundred "
        f"handshakes, sent its EHLO more than {DELAY * 1000:.0f} ms after its TLS Finished: "
        "the server's TLS 1.3 session tickets then count as a turn of their own, although "
        "nobody waited for them.",
    )


def section_memory(report: Report, target: Target, sales_port: int) -> None:
    log(f"peak memory: {MEMORY_BATCH} inboxes, --concurrency 100")
    inbox = write_inboxes(target, MEMORY_BATCH, name="memory.yaml")
    wrapper = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
        "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(done.returncode, usage.ru_maxrss)\n"
    )
    rows = []
    for concurrency in (10, 100):
        args = ["check", str(inbox), "--ca-file", str(target.ca_file), "--json"]
        args += ["--concurrency", str(concurrency)]
        result = must(run([sys.executable, "-c", wrapper, *provision_cmd(*args)], timeout=300), "")
        code, rss_kb = (int(x) for x in result.stdout.split())
        if code != 0:
            raise RuntimeError(f"the {MEMORY_BATCH}-inbox check exited with {code}")
        rows.append(
            [f"`--concurrency {concurrency}`", f"{rss_kb / 1024:.0f} MB", ms(result.seconds)]
        )
    peak = max(float(r[1].split()[0]) for r in rows)
    report.goals.append(
        f"peak memory of {MEMORY_BATCH} inboxes < 150 MB: "
        + ("met" if peak < 150 else "not met")
        + f" ({peak:.0f} MB)"
    )
    report.add(
        f"Peak memory: {MEMORY_BATCH} inboxes (both protocols) against the sandbox servers",
        *table(["", "max RSS of the `provision` process", "wall"], rows),
        "",
        "Loopback, no proxy; JSON report to /dev/null.",
    )


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per cold measurement")
    parser.add_argument("--no-install", action="store_true", help="do not run install-mail-servers")
    parser.add_argument("--output", type=Path, help="also write the Markdown to this file")
    args = parser.parse_args()
    runs = max(1, args.runs)
    started = time.perf_counter()
    if not args.no_install:
        install_tools()
    for tool in ("swaks", "curl"):
        if shutil.which(tool) is None:
            print(f"bench: `{tool}` is missing; run scripts/install-mail-servers", file=sys.stderr)
            return 2
    # Cold means a new process, not a new install: the .pyc files exist, as in a
    # pipeline from its second run on (pip writes those of the dependencies).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "provision")], check=False)
    info = machine()
    report = Report()
    with tempfile.TemporaryDirectory(prefix="provision-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        with sandbox_servers(workdir) as (sandbox, sales_port), real_servers(workdir) as real:
            targets = [sandbox] + ([real] if isinstance(real, Target) else [])
            one = write_inboxes(sandbox, 1, name="one.yaml")
            section_startup(report, runs, one, sandbox.ca_file)
            section_cold(report, targets, runs)
            section_stalls(report, targets, max(3, runs // 2))
            section_batch(report, sandbox, max(3, runs // 2), 3)
            section_memory(report, sandbox, sales_port)
            skipped = real if isinstance(real, str) else None
    versions = tool_versions()
    head = [
        "## Benchmark",
        "",
        f"{info['date']}; {info['cpu']}; {info['python']}; {info['os']}; "
        f"provision {info['commit']}; swaks {versions.get('swaks', '-')}, "
        f"curl {versions.get('curl', '-')}. Command: `.venv/bin/python bench/run.py` "
        f"({time.perf_counter() - started:.0f} s).",
    ]
    if skipped:
        head += ["", f"Debian Postfix + Dovecot rows skipped: {skipped}."]
    goals = ["### Goals", "", *(f"- {g}" for g in report.goals)]
    text = "\n\n".join(["\n".join(head), *report.sections, "\n".join(goals)]) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
