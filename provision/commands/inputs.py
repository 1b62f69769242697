"""Checks of a command's inputs that come before any I/O: the ``--ca-file`` bundle."""

from __future__ import annotations

from pathlib import Path

from provision.errors import ConfigError, ConfigProblem

__all__ = ["check_ca_file"]


def check_ca_file(path: Path | None) -> Path | None:
    """``path`` if it is a readable PEM bundle (``None`` passes through).

    Raises:
        ConfigError: the file cannot be read or holds no certificate.
    """
    if path is None:
        return None
    import ssl

    try:
        # A bare client context: parsing the file is the check, the system store is not needed.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
    except (OSError, ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or "not a PEM certificate bundle"
        problem = ConfigProblem(f"cannot use as a CA file: {reason}", file=str(path))
        raise ConfigError([problem]) from None
    return path
