"""The JSON report: ``dumps_indented`` writes exactly what ``json.dumps(indent=2)`` writes."""

from __future__ import annotations

import enum
import json
import math
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from provision.commands.check import check
from provision.errors import ConfigProblem
from provision.inbox import load_inboxes
from provision.models import ProbeOptions
from provision.render.json import dumps_indented, render_json, render_problems_json
from provision.sandbox.runner import running_sandbox


class _Word(enum.StrEnum):
    PASSED = "passed"


class _Code(enum.IntEnum):
    AUTH = 14


_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and the infinities too: json writes NaN, Infinity
    | st.text()  # control characters, non-ASCII, surrogates: escaped alike
    | st.sampled_from([_Word.PASSED, _Code.AUTH])
)
_keys = st.text() | st.integers() | st.floats(allow_nan=False) | st.booleans() | st.none()
_documents = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=8), inner, max_size=5)
        | st.dictionaries(_keys, inner, max_size=3)
    ),
    max_leaves=40,
)


@given(_documents)
@settings(max_examples=400, deadline=None)
@example({"a": [], "b": {}, "c": [[]], "d": [{}, {"e": []}]})
@example({"steps": [{"step": "auth", "elapsed_ms": 1.5, "detail": None}], "ok": True})
@example([{"x": {"y": {"z": [1, 2, {"w": "deep"}]}}}])
@example({1: [1], "k": {None: True, 2.5: "x"}})
def test_byte_for_byte_what_json_dumps_writes(doc: object) -> None:
    assert dumps_indented(doc) == json.dumps(doc, indent=2)


def test_nan_and_infinity_as_json_dumps_writes_them() -> None:
    doc = {"a": [math.nan, math.inf, -math.inf], "b": {"c": [math.inf]}}
    assert dumps_indented(doc) == json.dumps(doc, indent=2)


@pytest.mark.parametrize(
    "doc",
    [{"when": Path("/x")}, [[Path("/x")]], {"a": {"b": object()}}, {(1, 2): [1]}, {(1, 2): 1}],
)
def test_what_json_rejects_it_rejects_the_same_way(doc: object) -> None:
    with pytest.raises(TypeError) as theirs:
        json.dumps(doc, indent=2)
    with pytest.raises(TypeError) as ours:
        dumps_indented(doc)
    assert str(ours.value) == str(theirs.value)


def test_problems_document_unchanged() -> None:
    problems = [ConfigProblem("x", file="a.yaml", line=3, inbox="Support", field="smtp.port")]
    doc = json.loads(render_problems_json(problems))
    assert render_problems_json(problems) == json.dumps(doc, indent=2)
    assert doc["errors"][0]["field"] == "smtp.port"


async def test_a_real_report_renders_as_json_dumps_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_sandbox(tmp_path / "box") as box:
        loaded = load_inboxes([str(box.inbox_file)])
        report = await check(
            loaded.inboxes, ProbeOptions(ca_file=box.ca_file, step_timeout=5, timeout=30)
        )
    expected = json.dumps(report.to_json(), indent=2)

    def pure_python_encoder(*args: object, **kwargs: object) -> str:
        raise AssertionError("a report took the json.dumps fallback")

    monkeypatch.setattr(json, "dumps", pure_python_encoder)
    text = render_json(report)
    monkeypatch.undo()
    assert text == expected
    doc = json.loads(text)
    assert [s["stage"] for s in doc["inboxes"][0]["stages"]] == ["smtp", "imap"]
    assert doc["inboxes"][0]["stages"][0]["steps"]  # nested, indented containers were walked


def test_a_c_encoder_of_another_signature_falls_back_to_json_dumps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``c_make_encoder`` is private to ``json``: if a later Python changes its arguments,
    the report is still written, by ``json.dumps`` itself."""
    import provision.render.json as rendering

    def changed(*args: object) -> object:
        raise TypeError("c_make_encoder() takes exactly 10 arguments (9 given)")

    monkeypatch.setattr(rendering, "c_make_encoder", changed)
    monkeypatch.setattr(rendering, "_leaf_encoders", [])
    doc = {"inboxes": [{"name": "Support", "stages": [{"steps": [1, 2.5, None, "ü"]}]}]}
    assert dumps_indented(doc) == json.dumps(doc, indent=2)
