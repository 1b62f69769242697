"""Server text and third-party logs never show a secret."""

from __future__ import annotations

import logging

import pytest

from provision.models import Secret
from provision.probes._scrub import MASK, SecretsFilter, mask, scrub


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
