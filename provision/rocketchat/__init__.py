"""The Rocket.Chat email-inbox API client of ``provision set`` and ``export``.

``credentials`` (environment, URL policy), ``dialects`` (API eras), ``payload``
(request body and diff), ``replies`` (answers -> errors), ``transport`` (HTTP
policy, retries), ``client`` (the API calls). Errors live in ``provision.errors``.
The public names below load on first use, so importing a submodule stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from provision._lazy import lazy_getattr

if TYPE_CHECKING:
    from provision.rocketchat.credentials import Credentials as Credentials
    from provision.rocketchat.credentials import PasswordAuth as PasswordAuth
    from provision.rocketchat.credentials import TokenAuth as TokenAuth
    from provision.rocketchat.credentials import credentials_from_env as credentials_from_env

__all__ = ["Credentials", "PasswordAuth", "TokenAuth", "credentials_from_env"]


__getattr__ = lazy_getattr(__name__, dict.fromkeys(__all__, "provision.rocketchat.credentials"))
