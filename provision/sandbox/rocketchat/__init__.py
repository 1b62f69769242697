"""A Rocket.Chat test double: the email-inbox REST API of
``shared/spec/rocketchat-email-inbox.md`` (§6 checklist, E4 dialect, E5 switch), over real HTTP.

``app`` (the double and its routes), ``auth`` (users, login, permissions, rate limit),
``store`` (inbox semantics), ``validation`` (Meteor ``check()``, AJV), ``wire``
(requests, responses), ``server`` (uvicorn). Fault injection lives in the tests.
"""

from provision.sandbox.rocketchat.app import RocketChatDouble, SentTest
from provision.sandbox.rocketchat.auth import ADMIN_PERMISSIONS, RateLimit, User
from provision.sandbox.rocketchat.server import RunningRocketChat, start_rocketchat
from provision.sandbox.rocketchat.validation import meteor_check
from provision.sandbox.rocketchat.wire import LoggedRequest

__all__ = [
    "ADMIN_PERMISSIONS",
    "LoggedRequest",
    "RateLimit",
    "RocketChatDouble",
    "RunningRocketChat",
    "SentTest",
    "User",
    "meteor_check",
    "start_rocketchat",
]
