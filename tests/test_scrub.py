"""Server text and third-party logs never show a secret."""

from __future__ import annotations

import logging

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from provision.models import Secret
from provision.probes._scrub import MASK, SecretsFilter, mask, scrub, scrub_stage
from provision.results import Finding, Stage, StageResult, Status, Step, StepResult


@pytest.mark.parametrize(
    "echo",
    [
        pytest.param('NO bad login for "s3c\\"re\\\\t"', id="imap-quoted"),
        pytest.param('NO bad login for s3c"re\\t', id="raw"),
        pytest.param('Received : b\'a1 LOGIN "u" "s3c\\\\"re\\\\\\\\t"\'', id="bytes-repr"),
    ],
)
def test_scrub_masks_every_wire_form(echo: str) -> None:
    secret = Secret('s3c"re\\t')

    assert "s3c" not in scrub(echo, secret)
    assert MASK in scrub(echo, secret)


def test_scrub_escapes_control_characters_and_clips() -> None:
    text = scrub("a\x00b\r\n" + "x" * 500, None, "", limit=20)

    assert text.startswith("a\\x00b\\r\\n")
    assert len(text) == 20
    assert text.endswith("…")


def test_mask_leaves_text_without_secrets_alone() -> None:
    assert mask("* OK ready\r\n", Secret("pw-123")) == "* OK ready\r\n"


def test_secrets_filter_rewrites_records_only_while_guarding(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("provision.tests.scrub")
    filt = SecretsFilter()
    logger.addFilter(filt)
    caplog.set_level(logging.DEBUG, logger=logger.name)
    try:
        with filt.guarding(Secret("pw-9f8e")):
            logger.debug("server said %s", b'NO "pw-9f8e"')
        logger.debug("after %s", "pw-9f8e")
    finally:
        logger.removeFilter(filt)

    assert caplog.messages == [f"server said b'NO \"{MASK}\"'", "after pw-9f8e"]


def test_a_short_secret_is_masked_where_it_stands_alone_not_inside_words() -> None:
    """A one-letter password masked everywhere would garble every reply; standing alone
    (an echoed command, a quoted string) it is still masked."""
    reply = 'a002 NO [AUTHENTICATIONFAILED] LOGIN "support" "t" rejected: not accepted'
    assert (
        scrub(reply, "t")
        == 'a002 NO [AUTHENTICATIONFAILED] LOGIN "support" "***" rejected: not accepted'
    )
    assert scrub("plaintext t", "t") == "plaintext ***"
    assert scrub("ab1 x ab1x", "ab1") == "*** x ab1x"
    assert (
        scrub("secret-longer inside wordsecret-longerx", "secret-longer") == "*** inside word***x"
    )


# --- scrub_stage: the texts of a stage, with only the secret forms that occur in them ---

_pieces = st.sampled_from(["s3", "c\n", "re", "\\", '"', "*", "**", "t", " ", "x", "\x1b", "é"])
_texts = st.lists(_pieces, max_size=12).map("".join)


def _stage(texts: list[str]) -> StageResult:
    """A stage whose message, step details, findings and facts (nested) are ``texts``."""
    stage = StageResult(stage=Stage.SMTP, message=texts[0] if texts else None)
    for text in texts[1:3]:
        step = StepResult(step=Step.AUTH, status=Status.FAILED, elapsed_ms=1.0, detail=text)
        stage.steps.append(step)
    stage.warnings.extend(Finding(code="x", message=text) for text in texts[3:4])
    stage.facts.update({"greeting": texts[4:5], "tls": {"names": texts[5:], "days": 3}})
    return stage


def _shown(stage: StageResult) -> list[str]:
    texts = [stage.message] if stage.message is not None else []
    texts += [s.detail for s in stage.steps if s.detail is not None]
    texts += [f.message for f in stage.warnings]
    return texts + stage.facts["greeting"] + stage.facts["tls"]["names"]


@given(
    secrets=st.lists(_texts.filter(bool), min_size=1, max_size=3),
    texts=st.lists(_texts, min_size=1, max_size=8),
)
@settings(max_examples=300, deadline=None)
@example(secrets=["x\n\x1b"], texts=["ok", "x\\n\x1b"])  # found only once escaped
@example(secrets=["abcd", "**x"], texts=["abcdx"])  # found only next to a mask
@example(secrets=["t"], texts=["plaintext t", 'LOGIN "t"'])  # short: only standing alone
def test_scrub_stage_shows_what_scrub_shows_for_each_text(
    secrets: list[str], texts: list[str]
) -> None:
    """Looking only for the forms that occur in the stage masks exactly what looking for
    every form in every text masks (escaped forms, forms next to a mask, short ones)."""
    stage = _stage(list(texts))
    scrub_stage(stage, *secrets)
    assert _shown(stage) == [scrub(text, *secrets) for text in texts]
    assert stage.facts["tls"]["days"] == 3


def test_scrub_stage_masks_an_echoed_secret_wherever_it_is() -> None:
    secret = Secret("hunter2\npw")
    echoes = ["AUTH failed for hunter2\npw", "ok", "hunter2\\npw", 'LOGIN "hunter2\npw"']
    stage = _stage(["fine", *echoes, "clean " * 100])
    scrub_stage(stage, secret)
    shown = _shown(stage)
    assert shown[0] == "fine"
    assert all("hunter2" not in text for text in shown)
    assert shown[1] == "AUTH failed for ***"
    assert shown[-1].endswith("…")  # clipped as ever
    assert len(shown[-1]) == 300
