"""``${...}`` in string values: ``${VAR}`` (environment), ``${file:PATH}`` (a file's
content) and ``$${`` (a literal ``${``). A reported problem never shows a secret."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

from provision.inbox.read import ReadError, is_variable_name, read_file_reference, read_variable
from provision.inbox.show import show

_REFERENCE = r"\$\$\{|\$\{(?P<body>[^}]*)(?P<end>\}?)"


def interpolate(
    raw: str,
    *,
    environ: Mapping[str, str],
    base_dir: Path,
    secret: bool,
    problem: Callable[[str], None],
) -> tuple[str | None, bool]:
    """Resolve ``${...}`` in ``raw``, calling ``problem`` with each message.

    Returns:
        The text (None if a problem was reported) and whether a reference was used.
    """
    if "${" not in raw:
        return raw, False
    parts: list[str] = []
    used, ok = False, True
    pos = 0
    for match in re.finditer(_REFERENCE, raw):
        parts.append(raw[pos : match.start()])
        pos = match.end()
        if match.group() == "$${":
            parts.append("${")
            continue
        used = True
        try:
            parts.append(_resolve(match["body"], bool(match["end"]), environ, base_dir, secret))
        except ReadError as exc:
            problem(exc.message)
            ok = False
    parts.append(raw[pos:])
    return ("".join(parts) if ok else None), used


def _resolve(
    body: str, closed: bool, environ: Mapping[str, str], base_dir: Path, secret: bool
) -> str:
    if not closed:
        raise ReadError("unterminated '${' (close it with '}', or write '$${' for a literal '${')")
    if not body.strip():
        raise ReadError("empty reference '${}'; use ${NAME} or ${file:PATH}")
    if body.startswith("file:"):
        return read_file_reference(body.removeprefix("file:"), base_dir)
    if is_variable_name(body):
        return read_variable(body, environ)
    shown = "" if secret else f" {show('${' + body + '}')}"
    raise ReadError(f"invalid reference{shown}; use ${{NAME}} or ${{file:PATH}}")
