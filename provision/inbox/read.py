"""Reading inputs: inbox files, standard input, and the files and variables that
``${file:PATH}`` and ``${VAR}`` refer to. Sizes are capped; nothing here parses."""

from __future__ import annotations

import codecs
import io
import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from provision.inbox.show import lower_first

#: File name shown for ``-``.
STDIN_NAME = "<stdin>"

# Inbox files and secret files are tiny; the cap keeps `provision check /dev/zero` finite.
_MAX_BYTES = 1 << 20
_VARIABLE = r"[A-Za-z_][A-Za-z0-9_]*"

_Data = TypeVar("_Data", bytes, str)


class ReadError(Exception):
    """A problem with a whole input (unreadable, not UTF-8, not YAML/JSON), or with
    what a reference names; ``message`` is safe to show."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True, slots=True)
class Input:
    """One input's text, with what messages and ``${file:}`` need to know of it."""

    name: str  # as shown in messages
    text: str
    base_dir: Path  # relative ${file:...} paths start here
    json_only: bool


def display_name(path: str) -> str:
    return STDIN_NAME if path == "-" else path


def read_input(path: str, stdin: IO[str] | None) -> Input:
    """Read an inbox file, or ``stdin`` for ``-``; raise :class:`ReadError`."""
    if path == "-":
        return Input(STDIN_NAME, _read_stdin(stdin), Path(), json_only=False)
    refused = _not_regular(Path(path))
    if refused:
        hint = "" if Path(path).is_dir() else "; to read from a pipe, give '-' and redirect it"
        raise ReadError(refused + hint)
    text = _decode(_read_bytes(Path(path)))
    return Input(path, text, Path(path).parent, json_only=path.lower().endswith(".json"))


def is_variable_name(name: str) -> bool:
    """Whether ``${name}`` names an environment variable (not ``file:`` nor garbage)."""
    return re.fullmatch(_VARIABLE, name) is not None


def read_variable(name: str, environ: Mapping[str, str]) -> str:
    """The value of ``${name}``; raise :class:`ReadError` when it is not set."""
    value = environ.get(name)
    if value is None:
        raise ReadError(f"environment variable {name} is not set")
    return value


def read_file_reference(name: str, base_dir: Path) -> str:
    """The content of ``${file:name}``, one trailing newline dropped; raise :class:`ReadError`."""
    if not name:
        raise ReadError("empty path in '${file:}'")
    file = Path(name).expanduser()
    if not file.is_absolute():
        file = base_dir / file
    where = f"{name!r}" if str(file) == name else f"{name!r} ({file})"
    refused = _not_regular(file)
    if refused:
        raise ReadError(f"cannot read file {where}: {refused}")
    try:
        text = _read_bytes(file).decode("utf-8")
    except ReadError as exc:
        raise ReadError(f"cannot read file {where}: {exc.message}") from None
    except UnicodeDecodeError:
        raise ReadError(f"file {where} is not valid UTF-8") from None
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


def _read_bytes(path: Path) -> bytes:
    # O_NONBLOCK: should the file have become a FIFO since it was checked, opening
    # it does not wait for a writer; fstat then refuses it (regular files ignore the flag).
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        with os.fdopen(os.open(path, flags), "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ReadError("not a regular file")
            data = handle.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        raise ReadError("no such file") from None
    except IsADirectoryError:
        raise ReadError("is a directory, not a file") from None
    except PermissionError:
        raise ReadError("permission denied") from None
    except OSError as exc:
        raise _cannot_read(exc) from None
    return _capped(data)


def _read_stdin(stream: IO[str] | None) -> str:
    stream = sys.stdin if stream is None else stream
    try:
        if isinstance(stream, io.TextIOWrapper):
            # Bytes, so that non-UTF-8 input is reported like a file's whatever the locale.
            return _decode(_capped(stream.buffer.read(_MAX_BYTES + 1)))
        text = stream.read(_MAX_BYTES + 1)
    except UnicodeDecodeError:
        raise ReadError("not valid UTF-8; send UTF-8 text") from None
    except OSError as exc:
        raise _cannot_read(exc) from None
    return _capped(text)


def _cannot_read(exc: OSError) -> ReadError:
    return ReadError(f"cannot read: {lower_first(exc.strerror or type(exc).__name__)}")


def _capped(data: _Data) -> _Data:
    if len(data) > _MAX_BYTES:
        raise ReadError(f"larger than {_MAX_BYTES // 1024} KiB")
    return data


def file_identity(path: str) -> tuple[int, int] | None:
    """The (device, inode) of the file ``path`` names, symlinks followed; None if unknown."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None  # reading it reports the problem
    return status.st_dev, status.st_ino


# What ``stat`` calls each kind of non-regular file, for messages.
_KINDS = (
    (stat.S_ISFIFO, "a pipe"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(path: Path) -> str | None:
    """Why ``path`` is refused unopened ("a pipe, not a regular file"), or None.

    Checked with ``stat`` before ``open``: opening a FIFO blocks until a writer comes,
    and loading runs before any deadline; a device can be endless or have side effects.
    """
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return None  # opening it reports the problem
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "not a file")
    return f"is {kind}, not a regular file"


def _decode(data: bytes) -> str:
    """Decode UTF-8 (a leading byte-order mark is allowed); raise :class:`ReadError`."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ReadError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at line {line}); save it as UTF-8",
            line=line,
        ) from None
