"""provision's speed claims (README `## Speed`), measured in one run.

    sudo .venv/bin/python bench/run.py                 # about two minutes; Markdown on stdout
    sudo .venv/bin/python bench/run.py --runs 5        # quicker, noisier
    sudo .venv/bin/python bench/run.py --output bench/RESULTS.md

What it measures, each command a fresh process as a pipeline runs it (``.pyc`` files
present, as from a pipeline's second run on):

* start-up: ``provision --version`` and ``provision check --help`` beside the bare
  interpreter, ``import typer`` (the framework's floor) and ``import asyncio, ssl, json``
  (any asyncio TLS client's floor); a cold check's imports added layer by layer (its
  start-up floor); where the import time goes (``python -X importtime``);
* one cold ``provision check`` of one inbox (SMTP STARTTLS on submission, IMAP with
  implicit TLS, ``--ca-file``) against Debian's Postfix and Dovecot on 127.0.0.1, beside
  ``swaks --quit-after AUTH`` then ``curl`` IMAPS ``EXAMINE``, run one after the other;
  the order alternates from round to round and the table gives medians;
* the same through a TCP proxy adding 20 ms each way (``tests/servers/latency_proxy.py``);
* 100 inboxes at ``--concurrency 100`` through that proxy, against one inbox; then the
  same batch against a second Dovecot in its default mode.

Postfix and Dovecot run as the real test tier runs them (``tests/real/conftest.py``:
everything in a temporary folder, high ports, nothing under ``/etc``), which needs root
and ``scripts/install-mail-servers`` (run first when a tool is missing; ``--no-install``
skips that).
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
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _import_path(name: str, path: Path) -> ModuleType:
    """A module of this tree imported by path (``tests`` is no installed package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# The round-trip counting proxy, shared with tests/real/test_round_trips.py.
_proxy = _import_path("provision_bench_proxy", ROOT / "tests" / "servers" / "latency_proxy.py")
Connection, LatencyProxy, ProxyThread = _proxy.Connection, _proxy.LatencyProxy, _proxy.ProxyThread
DELAY = 0.020  # seconds each way through the proxy
BATCH = 100
_SBIN = "/usr/sbin:/sbin:/usr/local/sbin"
_PATH = f"{os.environ.get('PATH', '')}:{_SBIN}"

# The goals of issue 13.
GOAL_COLD = 1.0  # check / (swaks + curl) on loopback
GOAL_PROXY = 0.6  # the same through the proxy
GOAL_BATCH = 1.5  # 100 inboxes / 1 inbox through the proxy
GOAL_VERSION = 0.060  # seconds

# Dovecot's documented high-performance mode: a login process serves many connections
# and an imap process many sessions, some started ahead. In its default (secure) mode
# Dovecot forks and execs two processes per login; with 100 logins at once that is
# ~1.4 s of Dovecot's CPU on the 2 cores the client runs on, so the batch would measure
# Dovecot's forks, not provision. The section "Dovecot in its default mode" keeps that
# figure in the report.
DOVECOT_FAST = """\
service imap-login {
  service_count = 0
  process_min_avail = 2
}
service imap {
  service_count = 0
  process_min_avail = 4
}
"""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- running


def clean_env() -> dict[str, str]:
    """The caller's environment without what would change a run (proxies, CA overrides)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PROVISION_", "SSL_CERT_", "ROCKETCHAT_", "CURL_"))
        and k.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    }
    env["NO_COLOR"] = "1"
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


ENV = clean_env()


def provision_cmd(*args: str) -> list[str]:
    """The installed console script, as a pipeline runs it."""
    script = Path(sys.executable).parent / "provision"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "provision", *args]


@dataclass
class Run:
    seconds: float
    returncode: int
    stdout: str
    stderr: str


def run(cmd: Sequence[str], *, timeout: float = 300, env: dict[str, str] | None = None) -> Run:
    started = time.perf_counter()
    done = subprocess.run(
        list(cmd), capture_output=True, text=True, env=env or ENV, timeout=timeout, check=False
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


def alternating(runs: int, commands: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Each command once per round, the order reversed every other round; one warm-up round."""
    names = list(commands)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(runs + 1):
        for name in names if i % 2 == 0 else reversed(names):
            took = commands[name]()
            if i:
                times[name].append(took)
    return times


# --------------------------------------------------------------------------- machine


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0))
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
    versions = tool_versions()
    return (
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {cpu}, {cores} cores (load {_load()} "
        f"at the start); {platform.python_implementation()} {platform.python_version()}, "
        f"{ssl.OPENSSL_VERSION}; {platform.system()} {platform.release()}; provision "
        f"{commit or 'unknown'}{' with local changes' if dirty else ''}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
    )


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def tool_versions() -> dict[str, str]:
    versions = {}
    for name, cmd in {
        "Postfix": ["postconf", "-d", "-h", "mail_version"],
        "Dovecot": ["dovecot", "--version"],
        "swaks": ["swaks", "--version"],
        "curl": ["curl", "--version"],
    }.items():
        exe = shutil.which(cmd[0], path=_PATH)
        if exe is None:
            continue
        words = subprocess.run(
            [exe, *cmd[1:]], capture_output=True, text=True, check=False
        ).stdout.split()
        index = {"swaks": 2, "curl": 1}.get(name, 0)
        versions[name] = words[index] if len(words) > index else "?"
    return versions


def install_tools() -> None:
    """Run scripts/install-mail-servers when swaks, curl, Dovecot or Postfix is missing."""
    tools = ("swaks", "curl", "dovecot", "postfix")
    missing = [t for t in tools if not shutil.which(t, path=_PATH)]
    if missing:
        log(f"missing {', '.join(missing)}: running scripts/install-mail-servers")
        subprocess.run([str(ROOT / "scripts" / "install-mail-servers")], check=False)


# --------------------------------------------------------------------------- servers


@dataclass
class Target:
    """Where the inboxes' SMTP (STARTTLS) and IMAP (implicit TLS) live."""

    smtp_port: int
    imap_port: int
    accounts: list[tuple[str, str]]  # login, password: the first for one inbox
    ca_file: Path
    workdir: Path
    dovecot_pids: list[int] = field(default_factory=list)  # Dovecot's masters
    postfix_pids: list[int] = field(default_factory=list)  # Postfix's master

    def server_cpu(self, pids: Sequence[int] | None = None) -> float:
        """CPU seconds used so far by the servers' process trees (reaped children included);
        ``pids``: only these masters' trees."""
        parents: dict[int, int] = {}
        times: dict[int, float] = {}
        tick = os.sysconf("SC_CLK_TCK")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
                # A live process's own time in ns (schedstat): stat's clock ticks (10 ms)
                # would round a reused Dovecot process's few ms of a check to 0 or 10.
                # Reaped children only have ticks (cutime, cstime).
                own = int((entry / "schedstat").read_text().split()[0]) / 1e9
                times[int(entry.name)] = own + (int(fields[13]) + int(fields[14])) / tick
        total, todo = 0, list(self.dovecot_pids + self.postfix_pids if pids is None else pids)
        seen: set[int] = set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            total += times.get(pid, 0)
            todo += [child for child, parent in parents.items() if parent == pid]
        return total


@dataclass
class Cpu:
    """CPU seconds of one measured command: the client, the servers, this process (proxy)."""

    client: float
    servers: float
    proxy: float


def measured(target: Target, cmd: Sequence[str], what: str) -> tuple[Run, Cpu]:
    before = (_children_cpu(), target.server_cpu(), time.process_time())
    result = must(run(cmd), what)
    after = (_children_cpu(), target.server_cpu(), time.process_time())
    return result, Cpu(*(b - a for a, b in zip(before, after, strict=True)))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _load_real_tier() -> ModuleType:
    """tests/real/conftest.py, imported as a plain module (its setup is reused as is)."""
    return _import_path("provision_bench_real_servers", ROOT / "tests" / "real" / "conftest.py")


@contextlib.contextmanager
def real_servers(workdir: Path, *, dovecot_tuning: str = DOVECOT_FAST) -> Iterator[Target]:
    """Debian's Postfix + Dovecot as the real tier runs them, with an account per inbox;
    Dovecot's TLS instance with ``dovecot_tuning`` (its high-performance mode unless "")."""
    import pytest

    from provision.sandbox.ca import SandboxCA

    dovecot, postfix = shutil.which("dovecot", path=_PATH), shutil.which("postfix", path=_PATH)
    if dovecot is None or postfix is None:
        raise SystemExit("bench: Dovecot or Postfix is missing; run scripts/install-mail-servers")
    if os.geteuid() != 0:
        raise SystemExit("bench: starting Dovecot and Postfix needs root (they drop privileges)")
    tier = _load_real_tier()
    root = Path(tempfile.mkdtemp(prefix="provision-bench-real-"))
    root.chmod(0o755)
    daemons = tier._Daemons(dovecots=[])
    try:
        try:
            servers = tier._start_all(
                root,
                SandboxCA.create(),
                dovecot,
                postfix,
                pwd.getpwnam(tier.MAIL_USER),
                daemons,
                dovecot_tuning=dovecot_tuning,
            )
        except pytest.fail.Exception as exc:  # the fixture code reports through pytest.fail
            raise SystemExit(f"bench: Dovecot/Postfix did not start: {exc}") from None
        # Dovecot allows 10 connections per user and address (mail_max_userip_connections):
        # the batch gets an account per inbox. passwd-file is re-read when it changes.
        accounts = [(servers.user.username, servers.user.password)]
        accounts += [(f"bench{i:03d}@provision.test", f"bench-pw-{i:03d}") for i in range(BATCH)]
        with (root / "users").open("a") as users:
            users.writelines(f"{login}:{{PLAIN}}{pw}::::::\n" for login, pw in accounts[1:])
        master = root / "postfix" / "queue" / "pid" / "master.pid"
        yield Target(
            smtp_port=servers.submission_port,
            imap_port=servers.imaps_port,
            accounts=accounts,
            ca_file=servers.ca_file,
            workdir=workdir,
            dovecot_pids=[p.pid for p in daemons.dovecots],
            postfix_pids=[int(master.read_text().split()[0])],
        )
    finally:
        daemons.stop()
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- commands


def write_inboxes(target: Target, count: int, name: str, smtp: int, imap: int) -> Path:
    """A JSON inbox file of ``count`` inboxes, one account each; passwords beside it."""
    inboxes = []
    for i in range(count):
        login, password = target.accounts[i + 1 if count > 1 else 0]
        secret = target.workdir / f"{name}.{i}.password"
        secret.write_text(password + "\n")
        secret.chmod(0o600)
        server = {"server": "127.0.0.1", "username": login, "password": f"${{file:{secret}}}"}
        inboxes.append(
            {
                "name": f"Bench {i:03d}",
                "email": login,
                "smtp": {**server, "port": smtp, "secure": False},
                "imap": {**server, "port": imap, "secure": True},
            }
        )
    path = target.workdir / f"{name}.json"
    path.write_text(json.dumps({"inboxes": inboxes}, indent=1))
    return path


def check_cmd(target: Target, inbox: Path, *extra: str) -> list[str]:
    return provision_cmd("check", str(inbox), "--ca-file", str(target.ca_file), "--json", *extra)


def swaks_cmd(target: Target, port: int) -> list[str]:
    login, password = target.accounts[0]
    return [
        "swaks",
        "--server",
        "127.0.0.1",
        "--port",
        str(port),
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        str(target.ca_file),
        "--ehlo",
        "bench.localhost",
        "--auth",
        "PLAIN",
        "--auth-user",
        login,
        "--auth-password",
        password,
        "--quit-after",
        "AUTH",
        "--silent",
        "2",
    ]


def curl_cmd(target: Target, port: int) -> list[str]:
    # Log in (curl: AUTHENTICATE PLAIN), EXAMINE INBOX, log out.
    login, password = target.accounts[0]
    return [
        "curl",
        "--silent",
        "--show-error",
        "--noproxy",
        "*",
        "--cacert",
        str(target.ca_file),
        "--user",
        f"{login}:{password}",
        "--request",
        "EXAMINE INBOX",
        f"imaps://127.0.0.1:{port}/",
    ]


# --------------------------------------------------------------------------- report


@dataclass
class Report:
    sections: list[str] = field(default_factory=list)
    goals: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    def add(self, title: str, *lines: str) -> None:
        self.sections.append("\n".join([f"### {title}", "", *lines]))

    def goal(self, text: str, met: bool) -> None:
        self.goals.append(f"{text}: {'met' if met else '**not met**'}")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def cell(times: Sequence[float]) -> str:
    return f"{ms(median(times))} (min {ms(min(times))})"


# --------------------------------------------------------------------------- sections


def _import_costs(cmd: Sequence[str], runs: int) -> dict[str, float]:
    """Median self import time (ms) per top-level package over ``runs`` runs."""
    per_run: list[dict[str, float]] = []
    for _ in range(runs):
        traced = run(cmd, env={**ENV, "PYTHONPROFILEIMPORTTIME": "1"})  # -X importtime
        result = must(traced, " ".join(cmd))
        costs: dict[str, float] = collections.defaultdict(float)
        for line in result.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, _cumulative, name = line.split(":", 1)[1].split("|")
            costs[name.strip().split(".")[0]] += int(self_us) / 1000
        per_run.append(costs)
    names = {name for costs in per_run for name in costs}
    return {name: median([costs.get(name, 0.0) for costs in per_run]) for name in names}


def section_startup(report: Report, runs: int, target: Target) -> None:
    log(f"start-up: {runs} rounds")
    python = sys.executable
    inbox = write_inboxes(target, 1, "startup", target.smtp_port, target.imap_port)
    commands = {
        "`python -c pass` (the interpreter)": [python, "-c", "pass"],
        "`python -c 'import asyncio, ssl, json'`": [python, "-c", "import asyncio, ssl, json"],
        "`python -c 'import typer'` (the framework)": [python, "-c", "import typer"],
        "`provision --version`": provision_cmd("--version"),
        "`provision check --help`": provision_cmd("check", "--help"),
    }
    times = alternating(
        runs, {k: (lambda c=c: must(run(c), c[-1]).seconds) for k, c in commands.items()}
    )
    rows = [[label, ms(median(t)), ms(min(t))] for label, t in times.items()]
    first = [_first_connect(target, inbox) for _ in range(runs)]
    report.figures["first_connect"] = median(first)
    label = "`provision check` (1 inbox): from the start to its first `connect()`"
    rows.append([label, ms(median(first)), ms(min(first))])
    version = median(times["`provision --version`"])
    report.figures["version"] = version
    report.figures["check_help"] = median(times["`provision check --help`"])
    report.figures["typer"] = median(times["`python -c 'import typer'` (the framework)"])
    report.goal(f"`provision --version` under {ms(GOAL_VERSION)} ({ms(version)})", version < 0.06)

    _floor(report, runs)
    paths = {
        "--version": provision_cmd("--version"),
        "check --help": provision_cmd("check", "--help"),
        "check (1 inbox, JSON file)": check_cmd(target, inbox),
    }
    costs = {label: _import_costs(cmd, 5) for label, cmd in paths.items()}
    lines = []
    for label, by_package in costs.items():
        top = sorted(by_package.items(), key=lambda kv: -kv[1])[:8]
        lines.append(
            f"- `{label}`: {sum(by_package.values()):.0f} ms in all; "
            + ", ".join(f"`{name}` {cost:.1f}" for name, cost in top)
        )
    report.add(
        f"Start-up, median of {runs} (alternating order)",
        *table(["command", "median", "min"], rows),
        "",
        "Import time by top-level package (`python -X importtime`, self time in ms summed per "
        "package, median of 5 runs; importtime's own overhead inflates the sums):",
        "",
        *lines,
    )


#: Runs the command line with an audit hook that prints, on stderr's last line, the
#: ``time.monotonic()`` of its first network step (a lookup or a connect).
_FIRST_CONNECT = """
import os, runpy, sys, time
seen = []
def hook(event, args):
    if not seen and event in ("socket.connect", "socket.getaddrinfo"):
        seen.append(time.monotonic())
sys.addaudithook(hook)
end = os._exit
def finish(code):
    sys.stderr.write(f"\\n{seen[0] if seen else -1}\\n")
    sys.stderr.flush()
    end(code)
os._exit = finish
sys.argv = ["provision", *sys.argv[1:]]
runpy.run_module("provision", run_name="__main__", alter_sys=True)
"""


def _first_connect(target: Target, inbox: Path) -> float:
    """Seconds from the start of a cold ``provision check`` to its first network step
    (the clock is the machine's monotonic one, read before the fork and in the child)."""
    cmd = [sys.executable, "-c", _FIRST_CONNECT, *check_cmd(target, inbox)[1:]]
    started = time.monotonic()
    result = must(run(cmd), "provision check (first connect)")
    at = float(result.stderr.strip().splitlines()[-1])
    if at < 0:
        raise SystemExit("bench: provision check connected nowhere")
    return at - started


#: What a cold ``check`` imports, layer by layer: each row adds to the one before.
_FLOOR = [
    ("the interpreter", "pass"),
    ("+ typer (the framework)", "import typer"),
    ("+ asyncio, ssl, json (any asyncio TLS client)", "import typer, asyncio, ssl, json"),
    (
        "+ aiosmtplib (with `email`), aioimaplib",
        "import typer, asyncio, ssl, json, aiosmtplib, aioimaplib",
    ),
    (
        "+ provision's modules of a `check --json` run",
        "import typer, asyncio, ssl, json, aiosmtplib, aioimaplib, provision.cli, "
        "provision.commands.check, provision.probes.smtp, provision.probes.imap, "
        "provision.inbox.load, provision.render.json, provision.render.ci",
    ),
]


def _floor(report: Report, runs: int) -> None:
    """The start-up floor of a cold check, import by import (fresh processes)."""
    commands = {label: [sys.executable, "-c", code] for label, code in _FLOOR}
    times = alternating(
        runs, {k: (lambda c=c: must(run(c), c[-1]).seconds) for k, c in commands.items()}
    )
    report.figures["floor"] = median(times[_FLOOR[-1][0]])
    rows, before = [], 0.0
    for label, _code in _FLOOR:
        now = median(times[label])
        rows.append([label, ms(now), ms(min(times[label])), f"+{ms(now - before)}"])
        before = now
    report.add(
        f"Where a cold check's start-up goes, import by import (median of {runs})",
        *table(["imports", "median", "min", "added"], rows),
    )


@dataclass
class Pair:
    """Rounds of provision's check beside the swaks + curl pair."""

    check: list[float] = field(default_factory=list)
    inside: list[float] = field(default_factory=list)  # the report's elapsed_ms
    swaks: list[float] = field(default_factory=list)
    curl: list[float] = field(default_factory=list)
    check_cpu: list[Cpu] = field(default_factory=list)
    pair_cpu: list[Cpu] = field(default_factory=list)

    @property
    def pair(self) -> list[float]:
        return [s + c for s, c in zip(self.swaks, self.curl, strict=True)]

    @property
    def ratio(self) -> float:
        return median(self.check) / median(self.pair)


def compare(target: Target, runs: int, smtp: int, imap: int, name: str) -> Pair:
    """Alternate ``provision check`` of one inbox with swaks then curl; drop a warm-up round."""
    inbox = write_inboxes(target, 1, name, smtp, imap)
    out = Pair()
    for i in range(runs + 1):
        for side in ("check", "pair") if i % 2 == 0 else ("pair", "check"):
            if side == "check":
                result, cpu = measured(target, check_cmd(target, inbox), "provision check")
                if i:
                    out.check.append(result.seconds)
                    out.inside.append(json.loads(result.stdout)["elapsed_ms"] / 1000)
                    out.check_cpu.append(cpu)
            else:
                swaks, swaks_cpu = measured(target, swaks_cmd(target, smtp), "swaks")
                curl, curl_cpu = measured(target, curl_cmd(target, imap), "curl")
                if i:
                    out.swaks.append(swaks.seconds)
                    out.curl.append(curl.seconds)
                    out.pair_cpu.append(
                        Cpu(*(getattr(swaks_cpu, k) + getattr(curl_cpu, k) for k in _CPU))
                    )
    return out


_CPU = ("client", "servers", "proxy")


def cpu_cell(cpus: Sequence[Cpu], *, proxy: bool = False) -> str:
    parts = [median([getattr(c, k) for c in cpus]) * 1000 for k in _CPU[: 3 if proxy else 2]]
    return " / ".join(f"{x:.0f}" for x in parts) + " ms"


def _pair_rows(label: str, result: Pair, *, proxy: bool = False) -> list[list[str]]:
    return [
        [
            f"{label}: `provision check`",
            cell(result.check),
            ms(median(result.inside)),
            cpu_cell(result.check_cpu, proxy=proxy),
            "1.00x",
        ],
        [
            f"{label}: `swaks --quit-after AUTH`, then `curl` IMAPS `EXAMINE`",
            cell(result.pair),
            f"{ms(median(result.swaks))} + {ms(median(result.curl))}",
            cpu_cell(result.pair_cpu, proxy=proxy),
            f"{1 / result.ratio:.2f}x (check / pair: **{result.ratio:.2f}x**)",
        ],
    ]


def _header(proxy: bool) -> list[str]:
    cpu = "CPU: client / servers" + (" / proxy" if proxy else "")
    return ["run", "wall", "of which probing (`elapsed_ms`) or swaks + curl", cpu, "vs check"]


def section_loopback(report: Report, runs: int, target: Target) -> Pair:
    log(f"loopback: check vs swaks + curl, {runs} rounds")
    result = compare(target, runs, target.smtp_port, target.imap_port, "loopback")
    report.figures["cold"] = median(result.check)
    report.figures["cold_inside"] = median(result.inside)
    report.figures["cold_pair"] = median(result.pair)
    report.goal(
        f"cold check <= {GOAL_COLD:.1f}x swaks + curl on loopback ({result.ratio:.2f}x)",
        result.ratio <= GOAL_COLD,
    )
    report.add(
        "One cold `provision check` against swaks + curl on 127.0.0.1, median of "
        f"{runs} rounds (alternating order)",
        *table(_header(False), _pair_rows("loopback", result)),
        "",
        "SMTP: STARTTLS on Postfix's submission port, certificate verified against "
        "`--ca-file`, AUTH PLAIN; IMAP: implicit TLS on Dovecot, LOGIN, then the probe's "
        "SELECT and SEARCH (curl: EXAMINE). *of which probing* is the report's `elapsed_ms` "
        "(both probes run concurrently); the rest of provision's wall time is start-up, "
        "reading the file and output. CPU: the measured command's process; the servers' "
        "process trees (Postfix starts an smtpd per concurrent client; Dovecot, in its "
        "high-performance mode, reuses its processes).",
    )
    return result


@dataclass
class Batch:
    """Runs of one check of :data:`BATCH` inboxes at ``--concurrency`` :data:`BATCH`."""

    walls: list[float] = field(default_factory=list)
    inside: list[float] = field(default_factory=list)  # the report's elapsed_ms
    cpus: list[Cpu] = field(default_factory=list)
    dovecot: list[float] = field(default_factory=list)  # Dovecot's share of the servers' CPU
    connections: tuple[int, int] = (0, 0)  # SMTP, IMAP, through the proxy

    def row(self, label: str, one: float) -> list[str]:
        """A table row; ``one``: the one-inbox check's median wall time, for the ratio."""
        ratio = median(self.walls) / one
        return [
            label,
            cell(self.walls),
            ms(median(self.inside)),
            cpu_cell(self.cpus, proxy=True),
            f"{ratio:.2f}x",
        ]

    def servers_text(self) -> str:
        dovecot = median(self.dovecot)
        postfix = median([c.servers for c in self.cpus]) - dovecot
        return f"The batch's servers' CPU: Dovecot {ms(dovecot)}, Postfix {ms(postfix)}"


def run_batch(
    target: Target, runs: int, proxies: ProxyThread, smtp: LatencyProxy, imap: LatencyProxy
) -> Batch:
    """The batch through the proxies ``smtp`` and ``imap``, ``runs`` times."""
    many = write_inboxes(target, BATCH, "proxy-batch", smtp.port, imap.port)
    out = Batch()
    connections = []
    for _ in range(runs):
        smtp.connections.clear()
        imap.connections.clear()
        cmd = check_cmd(target, many, "--concurrency", str(BATCH))
        before = target.server_cpu(target.dovecot_pids)
        result, cpu = measured(target, cmd, "the batch check")
        out.dovecot.append(target.server_cpu(target.dovecot_pids) - before)
        out.walls.append(result.seconds)
        out.inside.append(json.loads(result.stdout)["elapsed_ms"] / 1000)
        out.cpus.append(cpu)
        proxies.run(smtp.idle())  # every connection of the run has ended
        proxies.run(imap.idle())
        connections.append((len(smtp.connections), len(imap.connections)))
    out.connections = connections[-1]
    return out


def _turns(connections: Sequence[Connection]) -> str:
    counts = collections.Counter(c.round_trips for c in connections)
    return ", ".join(f"{n} x {turns}" for turns, n in sorted(counts.items(), reverse=True))


def section_proxy(report: Report, runs: int, batch_runs: int, target: Target) -> None:
    log(f"proxy ({DELAY * 1000:.0f} ms each way): check vs swaks + curl, then {BATCH} inboxes")
    proxies = ProxyThread()
    smtp: LatencyProxy = proxies.proxy(("127.0.0.1", target.smtp_port), DELAY)
    imap: LatencyProxy = proxies.proxy(("127.0.0.1", target.imap_port), DELAY)

    def idle() -> None:
        proxies.run(smtp.idle())
        proxies.run(imap.idle())

    try:
        single = compare(target, runs, smtp.port, imap.port, "proxy-one")
        one = write_inboxes(target, 1, "proxy-trips", smtp.port, imap.port)
        trips = {}
        for label, cmd in (
            ("provision check", check_cmd(target, one)),
            ("swaks", swaks_cmd(target, smtp.port)),
            ("curl", curl_cmd(target, imap.port)),
        ):
            smtp.connections.clear()
            imap.connections.clear()
            must(run(cmd), label)
            idle()
            trips[label] = (list(smtp.connections), list(imap.connections))
        batch = run_batch(target, batch_runs, proxies, smtp, imap)
    finally:
        proxies.stop(smtp, imap)
    # The same batch without the proxy: what is left is CPU (client, servers), not latency.
    direct = write_inboxes(target, BATCH, "loopback-batch", target.smtp_port, target.imap_port)
    loopback = []
    for _ in range(batch_runs):
        cmd = check_cmd(target, direct, "--concurrency", str(BATCH))
        loopback.append(must(run(cmd), "the loopback batch").seconds)

    ratio = median(batch.walls) / median(single.check)
    report.figures.update(
        proxy=median(single.check),
        proxy_pair=median(single.pair),
        batch=median(batch.walls),
        batch_client_cpu=median([c.client for c in batch.cpus]),
        batch_server_cpu=median([c.servers for c in batch.cpus]),
        batch_dovecot_cpu=median(batch.dovecot),
        batch_loopback=median(loopback),
    )
    report.goal(
        f"through the proxy, check <= {GOAL_PROXY:.1f}x swaks + curl ({single.ratio:.2f}x)",
        single.ratio <= GOAL_PROXY,
    )
    report.goal(
        f"{BATCH} inboxes at `--concurrency {BATCH}` <= {GOAL_BATCH:.1f}x one inbox through "
        f"the proxy ({ratio:.2f}x)",
        ratio <= GOAL_BATCH,
    )
    batch_row = batch.row(
        f"{BATCH} inboxes, `--concurrency {BATCH}` (an account each)", median(single.check)
    )
    loopback_row = [
        f"the same {BATCH} inboxes on loopback, without the proxy",
        cell(loopback),
        "",
        "",
        f"{median(loopback) / median(single.check):.2f}x",
    ]
    trip_rows = [
        [label, _turns(smtp_conns) or "-", _turns(imap_conns) or "-"]
        for label, (smtp_conns, imap_conns) in trips.items()
    ]
    report.add(
        f"Through a proxy adding {DELAY * 1000:.0f} ms each way (RTT {2 * DELAY * 1000:.0f} ms), "
        f"median of {runs} rounds (batch: {batch_runs} runs)",
        *table(_header(True), [*_pair_rows("proxy", single, proxy=True), batch_row, loopback_row]),
        "",
        f"{batch.servers_text()}; its connections through the proxy: SMTP "
        f"{batch.connections[0]}, IMAP {batch.connections[1]} (a login each, and one "
        "certificate check for the run: inboxes on one server share it). Without the proxy "
        f"the batch takes {ms(median(loopback))} ({median(loopback) / median(batch.walls):.0%} "
        "of it): what is left there is CPU (the client's, the servers', on the same 2 cores), "
        "not round trips. Dovecot runs in its high-performance mode (`DOVECOT_FAST`); the "
        "next section gives the batch with Dovecot's defaults.",
        "",
        "Round trips per connection, as the proxy counted them (connections x round trips, "
        "the TCP handshake included):",
        "",
        *table(["client", "SMTP", "IMAP"], trip_rows),
        "",
        "provision runs SMTP and IMAP concurrently, the pair one after the other; the second, "
        "short IMAP connection is the credential-free certificate check, in parallel with the "
        "login.",
    )


def section_default_dovecot(report: Report, runs: int, workdir: Path, one: float) -> None:
    """The proxy batch again, against a Dovecot in its default (secure) mode."""
    log(f"the {BATCH}-inbox batch against Dovecot in its default mode")
    (workdir / "default").mkdir(mode=0o755)
    with real_servers(workdir / "default", dovecot_tuning="") as target:
        proxies = ProxyThread()
        smtp = proxies.proxy(("127.0.0.1", target.smtp_port), DELAY)
        imap = proxies.proxy(("127.0.0.1", target.imap_port), DELAY)
        try:
            batch = run_batch(target, runs, proxies, smtp, imap)
        finally:
            proxies.stop(smtp, imap)
    report.figures["batch_default_dovecot"] = median(batch.walls)
    label = f"{BATCH} inboxes, `--concurrency {BATCH}`, Dovecot's defaults"
    report.add(
        f"The batch through the proxy with Dovecot in its default mode ({runs} runs)",
        *table(_header(True), [batch.row(label, one)]),
        "",
        f"{batch.servers_text()}. In its default (secure) mode Dovecot forks an imap-login "
        "process for every connection and an imap process for every login; on these 2 cores "
        "that CPU is taken from the client. The ratio is to the one-inbox check of the "
        "section above.",
    )


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=10, help="rounds per comparison")
    parser.add_argument("--startup-runs", type=int, default=30, help="rounds of start-up runs")
    parser.add_argument("--batch-runs", type=int, default=3, help="runs of the batch")
    parser.add_argument("--no-install", action="store_true", help="do not run install-mail-servers")
    parser.add_argument("--output", type=Path, help="also write the Markdown to this file")
    args = parser.parse_args()
    started = time.perf_counter()
    if not args.no_install:
        install_tools()
    for tool in ("swaks", "curl"):
        if shutil.which(tool) is None:
            print(f"bench: `{tool}` is missing; run scripts/install-mail-servers", file=sys.stderr)
            return 2
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "provision")], check=False)
    head = machine()
    report = Report()
    with tempfile.TemporaryDirectory(prefix="provision-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        try:
            with real_servers(workdir) as target:
                section_startup(report, max(1, args.startup_runs), target)
                section_loopback(report, max(1, args.runs), target)
                section_proxy(report, max(1, args.runs), max(1, args.batch_runs), target)
            # A second set of servers: Dovecot's defaults, for the batch only.
            section_default_dovecot(
                report, max(1, args.batch_runs), workdir, report.figures["proxy"]
            )
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
    took = time.perf_counter() - started
    text = "\n\n".join(
        [
            "## Benchmark",
            f"{head}. Command: `python bench/run.py` ({took:.0f} s; load {_load()} at the "
            "end). The machine is shared: the minimums are the runs least disturbed; the CPU "
            "times depend less on the load than the wall times.",
            *report.sections,
            "### Goals (issue 13)\n\n" + "\n".join(f"- {g}" for g in report.goals),
        ]
    )
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
