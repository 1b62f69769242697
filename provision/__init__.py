"""provision: probe, then provision Rocket.Chat omnichannel email inboxes as code."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
