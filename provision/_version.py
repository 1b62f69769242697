"""The one source of the version: ``pyproject.toml`` reads it, so does ``provision --version``.

A module of its own so that code inside the package never imports ``provision`` (its
parent) just for the version string.
"""

__version__ = "0.1.0"
