"""provision: probe, then provision Rocket.Chat omnichannel email inboxes as code.

The library behind the ``provision`` command, for tools that call the same stages
without the command line (Ansible modules, bots)::

    import asyncio
    from provision import ProbeOptions, check, load_inboxes

    loaded = load_inboxes(["inboxes.yaml"])  # validates; ConfigError lists every problem
    report = asyncio.run(check(loaded.inboxes, ProbeOptions(), input_warnings=loaded.warnings))
    print(report.exit_code, [inbox.status() for inbox in report.inboxes])

``set_inboxes`` (probe, then create/update/leave unchanged), ``export_inboxes``
(Rocket.Chat's inboxes as an inbox file) and ``inbox_file_schema`` work alike.

Every name of ``__all__`` is importable from here. They are loaded on first use
(PEP 562), so ``import provision`` costs nothing: the protocol stacks, httpx and
PyYAML are imported only by what needs them. The package is typed (``py.typed``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from provision._lazy import lazy_getattr
from provision._version import __version__

if TYPE_CHECKING:
    from provision.commands.check import check as check
    from provision.commands.export import ExportResult as ExportResult
    from provision.commands.export import PasswordReference as PasswordReference
    from provision.commands.export import export_inboxes as export_inboxes
    from provision.commands.prune import PruneOptions as PruneOptions
    from provision.commands.set import SetOptions as SetOptions
    from provision.commands.set import set_inboxes as set_inboxes
    from provision.errors import ConfigError as ConfigError
    from provision.errors import ConfigProblem as ConfigProblem
    from provision.errors import ProvisionError as ProvisionError
    from provision.errors import RocketChatError as RocketChatError
    from provision.inbox import LoadResult as LoadResult
    from provision.inbox import inbox_file_schema as inbox_file_schema
    from provision.inbox import load_inboxes as load_inboxes
    from provision.models import ImapSettings as ImapSettings
    from provision.models import Inbox as Inbox
    from provision.models import ProbeOptions as ProbeOptions
    from provision.models import Secret as Secret
    from provision.models import SmtpSettings as SmtpSettings
    from provision.render.json import render_json as render_json
    from provision.render.text import render_text as render_text
    from provision.results import Action as Action
    from provision.results import ExitCode as ExitCode
    from provision.results import FailureClass as FailureClass
    from provision.results import Finding as Finding
    from provision.results import InboxResult as InboxResult
    from provision.results import Report as Report
    from provision.results import Stage as Stage
    from provision.results import StageResult as StageResult
    from provision.results import Status as Status
    from provision.rocketchat.credentials import Credentials as Credentials
    from provision.rocketchat.credentials import PasswordAuth as PasswordAuth
    from provision.rocketchat.credentials import TokenAuth as TokenAuth
    from provision.rocketchat.credentials import credentials_from_env as credentials_from_env

#: Where each public name lives; ``__getattr__`` imports the module on first use.
_LAZY = {
    "Action": "provision.results",
    "PruneOptions": "provision.commands.prune",
    "SetOptions": "provision.commands.set",
    "set_inboxes": "provision.commands.set",
    "LoadResult": "provision.inbox",
    "inbox_file_schema": "provision.inbox",
    "load_inboxes": "provision.inbox",
    "ConfigError": "provision.errors",
    "ConfigProblem": "provision.errors",
    "ProvisionError": "provision.errors",
    "RocketChatError": "provision.errors",
    "ExportResult": "provision.commands.export",
    "PasswordReference": "provision.commands.export",
    "export_inboxes": "provision.commands.export",
    "ImapSettings": "provision.models",
    "Inbox": "provision.models",
    "ProbeOptions": "provision.models",
    "Secret": "provision.models",
    "SmtpSettings": "provision.models",
    "check": "provision.commands.check",
    "render_json": "provision.render.json",
    "render_text": "provision.render.text",
    "ExitCode": "provision.results",
    "FailureClass": "provision.results",
    "Finding": "provision.results",
    "InboxResult": "provision.results",
    "Report": "provision.results",
    "Stage": "provision.results",
    "StageResult": "provision.results",
    "Status": "provision.results",
    "Credentials": "provision.rocketchat.credentials",
    "PasswordAuth": "provision.rocketchat.credentials",
    "TokenAuth": "provision.rocketchat.credentials",
    "credentials_from_env": "provision.rocketchat.credentials",
}

__all__ = [
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
]


__getattr__ = lazy_getattr(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
