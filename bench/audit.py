"""provision's audit benchmark: 1,000 inboxes stored in Rocket.Chat, audited, beside `check`
of the same 1,000 from a file.

    .venv/bin/python bench/audit.py              # about a minute; Markdown on stdout
    .venv/bin/python bench/audit.py --inboxes 200

``provision sandbox`` runs in another process (aiosmtpd, pymap and the Rocket.Chat
double, all on 127.0.0.1). The inboxes are written there with ``provision set`` (not
measured), then each command runs as a fresh process, as a pipeline runs it, with its
wall time and peak memory (max RSS of the child) taken from the parent.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import ENV, log, machine, ms, provision_cmd, sandbox_servers, table, write_inboxes

# The child's peak memory, from a parent that runs only it.
_MEASURE = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def _rocketchat_env(sandbox: Path) -> dict[str, str]:
    """``ROCKETCHAT_URL`` and the token the sandbox wrote beside its inbox file."""
    pairs = (line.split("=", 1) for line in (sandbox / "rocketchat.env").read_text().split())
    return {**ENV, **dict(pairs)}


def _measured(args: list[str], env: dict[str, str]) -> tuple[int, float, float]:
    """Exit code, max RSS in MB and wall seconds of ``provision ARGS``."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *provision_cmd(*args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=True,
    )
    seconds = time.perf_counter() - started
    code, rss_kb = (int(x) for x in done.stdout.split())
    return code, rss_kb / 1024, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--inboxes", type=int, default=1000)
    parser.add_argument("--output", type=Path, help="also write the Markdown here")
    args = parser.parse_args()
    n = args.inboxes
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="provision-bench-audit-") as tmp,
        sandbox_servers(Path(tmp)) as (target, _sales_port),
    ):
        env = _rocketchat_env(Path(tmp) / "sandbox")
        inbox_file = write_inboxes(target, n, name="audit.yaml")
        probe = ["--ca-file", str(target.ca_file), "--json", "--timeout", "600"]
        log(f"storing {n} inboxes with provision set (not measured)")
        code, _rss, seconds = _measured(["set", str(inbox_file), *probe], env)
        if code != 0:
            raise RuntimeError(f"provision set of {n} inboxes exited with {code}")
        log(f"stored in {seconds:.0f} s")
        for concurrency in (10, 100):
            extra = ["--concurrency", str(concurrency)]
            for label, command in (
                (f"`check` of the file, `-c {concurrency}`", ["check", str(inbox_file)]),
                (f"`audit` of Rocket.Chat, `-c {concurrency}`", ["audit"]),
            ):
                log(label)
                code, rss, seconds = _measured([*command, *probe, *extra], env)
                if code != 0:
                    raise RuntimeError(f"{label} exited with {code}")
                rows.append([label, ms(seconds), f"{rss:.0f} MB"])
    info = machine()
    text = "\n".join(
        [
            f"### `provision audit` of {n} stored inboxes beside `check` of the same {n}",
            "",
            f"{info['date']}; {info['cpu']}; {info['python']}; provision {info['commit']}. "
            "Command: `.venv/bin/python bench/audit.py`.",
            "",
            *table(["run", "wall (process)", "max RSS"], rows),
            "",
            "Sandbox servers (aiosmtpd + pymap, one account) and the Rocket.Chat double in "
            "another process on 127.0.0.1; JSON report to /dev/null. `audit` adds reading "
            "the inboxes (paging `email-inbox.list`, 100 a page) to the same probes.",
        ]
    )
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
