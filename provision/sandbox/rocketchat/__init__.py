"""A Rocket.Chat test double: the email-inbox REST API of ``shared/spec/rocketchat-email-inbox.md``
(§6 checklist; E4 dialect, ``e5=True`` for AJV), over real HTTP. Fault injection is in tests/.
"""

# app: state, seeding, ASGI entry and request pipeline; routes: the HTTP surface;
# auth: users, login, permissions, rate limit; store: inbox semantics; validation:
# Meteor check() and AJV; wire: requests and responses; server: uvicorn.

from provision.sandbox.rocketchat.app import RocketChatDouble
from provision.sandbox.rocketchat.auth import ADMIN_PERMISSIONS, RateLimit, User
from provision.sandbox.rocketchat.server import RunningRocketChat, start_rocketchat
from provision.sandbox.rocketchat.store import SentTest
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
