"""The report, or the input problems that stopped a run, as JSON (``schema_version`` 1)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]

from provision.errors import ConfigProblem
from provision.results import SCHEMA_VERSION, ExitCode, Report

__all__ = ["dumps_indented", "render_json", "render_problems_json"]


def render_json(report: Report) -> str:
    """The report as JSON (``schema_version`` 1, documented in the README)."""
    return dumps_indented(report.to_json())


def render_problems_json(
    problems: Sequence[ConfigProblem], *, exit_code: ExitCode = ExitCode.USAGE
) -> str:
    """A run stopped by bad input (exit 2), or another error before any inbox: every
    problem, no inboxes."""
    doc = {
        "schema_version": SCHEMA_VERSION,
        "ok": False,
        "exit_code": int(exit_code),
        "errors": [
            {
                "file": p.file,
                "line": p.line,
                "inbox": p.inbox,
                "field": p.field,
                "message": p.message,
            }
            for p in problems
        ],
        "inboxes": [],
    }
    return dumps_indented(doc)


def dumps_indented(doc: object) -> str:
    """``json.dumps(doc, indent=2)``, byte for byte, mostly in the C encoder.

    With ``indent`` set, Python 3.11's ``json`` runs its pure-Python encoder (a
    generator per level for every token): some 20 ms of CPU for a report of 100
    inboxes. Here Python walks only the containers that hold containers; each one
    that holds none (a step, a certificate, a list of names: most of the tokens) is
    one call of the C encoder, its item separator carrying that level's newline and
    indentation. Anything unusual (a key that is not a string, a type ``json``
    would reject, no C encoder) is left to ``json.dumps`` itself.
    """
    if c_make_encoder is None:
        return json.dumps(doc, indent=2)
    parts: list[str] = []
    try:
        _append(doc, 0, parts)
    except (_Unusual, TypeError):
        # TypeError: also a C encoder whose private signature changed in a later Python;
        # json.dumps then writes the same bytes, or raises for the value as it would.
        return json.dumps(doc, indent=2)
    return "".join(parts)


class _Unusual(Exception):
    """Something :func:`dumps_indented` leaves to ``json.dumps``."""


_CONTAINERS = (dict, list, tuple)
#: Types whose values the C encoder writes the same at any depth (no newline inside).
_SCALARS = frozenset({str, int, float, bool, type(None)})
#: ``_leaf_encoders[depth]``: the C encoder for a container at that depth whose members
#: are all scalars (or empty containers); its item separator is the next line's start.
_leaf_encoders: list[Callable[[object, int], list[str]]] = []


def _leaf(depth: int) -> Callable[[object, int], list[str]]:
    while len(_leaf_encoders) <= depth:
        separator = ",\n" + "  " * (len(_leaf_encoders) + 1)
        # The arguments of json.JSONEncoder.iterencode's C path, indent=2's separators.
        encoder = c_make_encoder(
            None, _unusual, encode_basestring_ascii, None, ": ", separator, False, False, True
        )
        _leaf_encoders.append(encoder)
    return _leaf_encoders[depth]


def _unusual(value: object) -> object:
    raise _Unusual


def _append(value: object, depth: int, out: list[str]) -> None:
    """Append ``value``, as ``json.dumps(indent=2)`` writes it at ``depth``, to ``out``."""
    if isinstance(value, dict):
        members: Iterable[object] = value.values()
        opening, closing = "{", "}"
    elif isinstance(value, (list, tuple)):
        members = value
        opening, closing = "[", "]"
    else:  # a scalar (or a type the encoder rejects: _unusual)
        out.append(_leaf(depth)(value, 0)[0])
        return
    if _SCALARS.issuperset(map(type, members)):  # no container inside: one C call
        encoded = _leaf(depth)(value, 0)[0]
        if len(encoded) > 2:  # "{" + 'key": v,<newline, indent>"key": v' + "}"
            encoded = f"{opening}\n{'  ' * (depth + 1)}{encoded[1:-1]}\n{'  ' * depth}{closing}"
        out.append(encoded)
        return
    newline = "\n" + "  " * (depth + 1)
    separator = "," + newline
    scalar = _leaf(depth + 1)
    out.append(opening)
    if isinstance(value, dict):
        for index, (key, member) in enumerate(value.items()):
            if type(key) is not str:
                raise _Unusual
            lead = f"{separator if index else newline}{encode_basestring_ascii(key)}: "
            if type(member) is str:  # the usual member: the C function, not the encoder
                out.append(lead + encode_basestring_ascii(member))
            elif isinstance(member, _CONTAINERS):
                out.append(lead)
                _append(member, depth + 1, out)
            else:
                out.append(lead + scalar(member, 0)[0])
    else:
        for index, member in enumerate(members):
            out.append(separator if index else newline)
            if isinstance(member, _CONTAINERS):
                _append(member, depth + 1, out)
            else:
                out.append(scalar(member, 0)[0])
    out.append("\n" + "  " * depth + closing)
