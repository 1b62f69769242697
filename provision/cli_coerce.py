"""Typer's parameter coercion for the annotations the command line uses, without pydantic.

Typer 0.29 coerces every non-flag value through a pydantic ``TypeAdapter``, built on first
use: importing pydantic costs about 60 ms, more than the probes of one inbox on loopback.
The command classes below give each parameter a plain coercer for ``bool``, ``str``, ``int``,
``float``, ``Path``, their ``| None`` and ``list[...]`` forms, with Typer's ``min``/``max``;
anything else keeps Typer's own coercion. This reaches into Typer's private
``_runtime_param`` (``typer/core.py``) on purpose: ``pyproject.toml`` pins Typer below 0.30,
and ``tests/test_startup.py`` fails if the hook stops taking effect or pydantic comes back.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from typer import _click
from typer._click.exceptions import BadParameter
from typer._coercion import RuntimeParam
from typer.core import TyperArgument, TyperCommand, TyperGroup, _TyperParameter

__all__ = ["FastCommand", "FastGroup"]


def _to_int(text: str) -> int:
    return int(text, 10)


def _to_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # "inf" would lift the deadline, "nan" defeats every bound
        raise ValueError
    return value


def _to_bool(text: str) -> bool:
    # Click's spellings; a flag normally arrives as a bool already (from an envvar it does not).
    word = text.strip().lower()
    if word in {"1", "true", "t", "yes", "y", "on"}:
        return True
    if word in {"0", "false", "f", "no", "n", "off", ""}:
        return False
    raise ValueError


_PARSERS: dict[type, tuple[Callable[[str], Any], str]] = {
    bool: (_to_bool, "true or false"),
    int: (_to_int, "a whole number"),
    float: (_to_float, "a finite number"),
    str: (str, "text"),
    Path: (Path, "a path"),
}


@dataclass(frozen=True)
class _PlainRuntimeParam(RuntimeParam):
    """Coerce command-line text to one simple type, checking Typer's min/max."""

    target: type
    many: bool

    def _coerce_value(self, value: Any, param: _TyperParameter, ctx: _click.Context) -> Any:
        if self.many:
            return [self._one(item, param, ctx) for item in value]
        return self._one(value, param, ctx)

    def _one(self, value: Any, param: _TyperParameter, ctx: _click.Context) -> Any:
        parse, what = _PARSERS[self.target]
        if not isinstance(value, self.target) or (
            isinstance(value, bool) and self.target is not bool
        ):
            try:
                value = parse(str(value).strip() if self.target in (int, float) else str(value))
            except ValueError:
                raise BadParameter(
                    f"{_shown(value)} is not {what}.", ctx=ctx, param=param
                ) from None
        low, high = self.parameter_info.min, self.parameter_info.max
        if low is not None and value < low:
            raise BadParameter(f"must be at least {low}.", ctx=ctx, param=param)
        if high is not None and value > high:
            raise BadParameter(f"must be at most {high}.", ctx=ctx, param=param)
        return value


def _shown(value: Any) -> str:
    text = str(value)
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _plain(annotation: Any) -> tuple[type, bool] | None:
    """``(type, many)`` for the annotations handled here, else None (Typer's own coercion)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        return _plain(rest[0]) if len(rest) == 1 else None
    if origin is list:
        (item,) = get_args(annotation)
        found = _plain(item)
        return (found[0], True) if found and not found[1] else None
    if annotation in _PARSERS:
        return annotation, False
    return None


def _no_type(ctx: _click.Context) -> str:
    return ""


def _install(params: list[_click.Parameter]) -> None:
    for param in params:
        if isinstance(param, TyperArgument) and param.metavar is not None:
            # The metavar says what to give; Typer would print "<list[str]>" after it.
            param.display_type_rich = _no_type  # type: ignore[method-assign]
        if not isinstance(param, _TyperParameter) or param._runtime_param is not None:
            continue
        descriptor = param.type_descriptor
        if descriptor.is_file or descriptor.is_choice:
            continue  # files and choices stay Typer's
        if descriptor.parameter_info.parser is not None or descriptor.parameter_info.clamp:
            continue
        found = _plain(descriptor.annotation)
        if found is None:
            continue
        param._runtime_param = _PlainRuntimeParam(
            parameter_info=descriptor.parameter_info,
            annotation=descriptor.annotation,
            target=found[0],
            many=found[1],
        )


# get_params, not __init__: the help option is made there, on first use.
class FastCommand(TyperCommand):
    """A Typer command whose simple parameters are coerced without pydantic."""

    def get_params(self, ctx: _click.Context) -> list[_click.Parameter]:
        params = super().get_params(ctx)
        _install(params)
        return params


class FastGroup(TyperGroup):
    """The Typer group of ``provision``, coerced without pydantic like its commands."""

    def get_params(self, ctx: _click.Context) -> list[_click.Parameter]:
        params = super().get_params(ctx)
        _install(params)
        return params
