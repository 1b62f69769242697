"""The library surface: `from provision import ...` names are guarded, typed, light, and work.

``EXAMPLE`` is the README's library example, run here against the sandbox; once the
README carries it, the README's copy must stay the same text.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest

import provision
from provision.sandbox.runner import running_sandbox

README = Path(__file__).resolve().parent.parent / "README.md"

#: Removing or renaming one of these breaks callers: change it only on purpose.
PUBLIC = {
    "Action",
    "ConfigError",
    "ConfigProblem",
    "Credentials",
    "ExitCode",
    "ExportResult",
    "FailureClass",
    "Finding",
    "ImapSettings",
    "Inbox",
    "InboxResult",
    "LoadResult",
    "PasswordAuth",
    "PasswordReference",
    "ProbeOptions",
    "ProvisionError",
    "PruneOptions",
    "Report",
    "RocketChatError",
    "Secret",
    "SetOptions",
    "SmtpSettings",
    "Stage",
    "StageResult",
    "Status",
    "TokenAuth",
    "__version__",
    "check",
    "credentials_from_env",
    "export_inboxes",
    "inbox_file_schema",
    "load_inboxes",
    "render_json",
    "render_text",
    "set_inboxes",
}

HEAVY = (
    "aiosmtplib",
    "aioimaplib",
    "httpx",
    "yaml",
    "cryptography",
    "aiosmtpd",
    "pymap",
    "trustme",
    "uvicorn",
    "rich",
)

EXAMPLE = """\
import asyncio
import os
from pathlib import Path

from provision import (
    ProbeOptions,
    SetOptions,
    check,
    credentials_from_env,
    export_inboxes,
    load_inboxes,
    render_text,
    set_inboxes,
)


async def deploy(files: list[str], server: str, ca_file: Path | None = None) -> int:
    loaded = load_inboxes(files)  # ConfigError lists every problem with file and line
    options = ProbeOptions(ca_file=ca_file, timeout=60)
    checked = await check(loaded.inboxes, options, input_warnings=loaded.warnings)
    print(render_text(checked))
    if not checked.ok:
        return int(checked.exit_code)
    credentials = credentials_from_env(os.environ)  # ROCKETCHAT_USER_ID, ROCKETCHAT_AUTH_TOKEN
    target = SetOptions(server=server, credentials=credentials)
    report = await set_inboxes(loaded.inboxes, options, target)  # probes again, then writes
    for inbox in report.inboxes:
        print(inbox.email, inbox.extra["action"])  # created, updated, unchanged, ...
    exported = await export_inboxes(server, credentials)  # passwords become ${VAR}
    print(exported.text, "needs", ", ".join(exported.variables))
    return int(report.exit_code)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(deploy(["inboxes.yaml"], os.environ["ROCKETCHAT_URL"])))
"""


def test_all_is_sorted_complete_and_guarded() -> None:
    assert provision.__all__ == sorted(provision.__all__)
    assert set(provision.__all__) == PUBLIC
    assert len(provision.__all__) == len(PUBLIC)


def test_every_public_name_imports_and_is_documented() -> None:
    for name in provision.__all__:
        value = getattr(provision, name)
        if name in ("__version__", "Credentials"):
            continue
        assert (value.__doc__ or "").strip(), f"{name} has no docstring"
        assert value.__module__.startswith("provision."), name
    namespace: dict[str, object] = {}
    exec("from provision import *", namespace)  # noqa: S102 - a fixed statement
    assert PUBLIC - {"__version__"} <= set(namespace)


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = provision.no_such_name  # type: ignore[attr-defined]
    with pytest.raises(ImportError):
        exec("from provision import no_such_name")  # noqa: S102
    assert set(provision.__all__) <= set(dir(provision))


def test_the_package_is_typed() -> None:
    assert (Path(provision.__file__).parent / "py.typed").is_file()


def test_importing_provision_and_its_light_names_imports_nothing_heavy() -> None:
    code = (
        "import sys, provision;"
        "from provision import Inbox, Secret, ProbeOptions, Report, ExitCode, ConfigError, check;"
        f"heavy = {set(HEAVY)!r};"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


async def test_the_readme_example_runs_against_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(EXAMPLE, "README example", "exec"), namespace)  # noqa: S102 - our own text
    deploy = cast(Callable[..., Awaitable[int]], namespace["deploy"])
    async with running_sandbox(tmp_path / "box") as box:
        monkeypatch.setenv("ROCKETCHAT_USER_ID", box.user_id)
        monkeypatch.setenv("ROCKETCHAT_AUTH_TOKEN", box.token.reveal())
        code = await deploy([str(box.inbox_file)], box.rocketchat_url, box.ca_file)
        again = await deploy([str(box.inbox_file)], box.rocketchat_url, box.ca_file)
        password = (box.directory / "password").read_text().strip()
    assert (code, again) == (0, 0)
    out = capsys.readouterr().out
    assert "support@example.com created" in out
    assert "support@example.com unchanged" in out
    assert "${SUPPORT_EXAMPLE_COM_SMTP_PASSWORD}" in out
    assert password not in out


def test_the_readme_carries_the_example_unchanged() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    library = [block for block in blocks if "from provision import" in block]
    assert library, "README.md has no library example"
    assert library[0] == EXAMPLE


def test_asyncio_is_all_a_caller_needs() -> None:
    """The entry points are coroutines: one asyncio.run per call, nothing else to set up."""
    for name in ("check", "set_inboxes", "export_inboxes"):
        assert inspect.iscoroutinefunction(getattr(provision, name)), name
