"""Secrets never shown: masking by shape and by registered value, the URL form for people, and the log filter."""

from __future__ import annotations

import logging

import pytest

from monitor.core.secrets import RedactingFilter, redact, register, show_url, uri_password, url_secrets
from monitor.core.settings import load_settings


@pytest.mark.parametrize(
    ("text", "hidden", "kept"),
    [
        ("mongodb://monitor:pa/ss:w@db:27017/x", ["pa/ss:w"], ["mongodb://***@db:27017/x"]),
        ("mongodb://:only-pw@db/", ["only-pw"], ["mongodb://***@db/"]),
        ("json://h/p?token=tok123&x=1", ["tok123"], ["token=***", "x=1"]),
        ("https://h/p?api_key=k9&Signature=s9", ["k9", "s9"], ["api_key=***", "Signature=***"]),
        # Spark Connect's URL: parameters after "/;", separated by ";".
        ("sc://spark:15002/;token=tk77;user_id=ops", ["tk77"], ["sc://spark:15002/;token=***;user_id=ops"]),
        ("sc://h:1/;user_id=ops;token=tk78", ["tk78"], ["user_id=ops;token=***"]),
        ("a webhook failed", [], ["a webhook failed"]),
    ],
)
def test_secrets_are_masked_by_their_shape(text: str, hidden: list[str], kept: list[str]) -> None:
    shown = redact(text)
    assert [h for h in hidden if h in shown] == []
    assert all(k in shown for k in kept)


def test_the_parts_of_an_alert_url_that_carry_tokens_are_secrets_but_a_web_host_is_not() -> None:
    assert {"TokA1", "TokB2", "TokC3"} <= set(url_secrets("slack://TokA1/TokB2/TokC3/#chan"))
    assert {"123456:ABCdef", "ABCdef"} <= set(url_secrets("tgram://123456:ABCdef/777"))
    web = url_secrets("json://ops:pw@hooks.example.com/hook?+X-Api-Key=key%2F9")
    assert {"pw", "hook", "key/9", "key%2F9"} <= set(web) and "hooks.example.com" not in web
    assert uri_password("mongodb://monitor:p%40ss@db/") == ["p%40ss", "p@ss"]  # the user name is not a secret


def test_settings_register_their_secrets_so_any_text_mentioning_them_is_masked() -> None:
    load_settings(
        alert_urls=["slack://RegTokA/RegTokB/RegTokC/#x"],
        mongo_uri="mongodb://u:RegPw77@127.0.0.1/",
        spark_master="sc://spark:15002/;user_id=ops;token=RegConn9",
    )
    line = "apprise: POST https://hooks.slack.com/services/RegTokA/RegTokB/RegTokC failed; retry with RegPw77"
    assert redact(line) == "apprise: POST https://hooks.slack.com/services/***/***/*** failed; retry with ***"
    assert redact("Bearer RegConn9 refused") == "Bearer *** refused"  # the Connect token, wherever it shows
    assert redact("user_id=ops") == "user_id=ops"  # other parameters are not secrets
    assert redact("RegTokAx and xRegTokA stay") == "RegTokAx and xRegTokA stay"  # only whole tokens


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("slack://A/B/C", "slack://…"),
        ("json://u:p@host:8080/path?token=1", "json://host:8080/…"),
        ("https://h", "https://h"),
        ("nope", "<not a URL>"),
    ],
)
def test_a_url_is_shown_to_people_without_anything_that_may_be_a_token(url: str, shown: str) -> None:
    assert show_url(url) == shown


def test_the_log_filter_masks_messages_arguments_and_tracebacks() -> None:
    register(["FilterTok42"])
    record = logging.LogRecord(
        "apprise",
        logging.DEBUG,
        __file__,
        1,
        "posting to %s with header %s",
        ("x/FilterTok42", "X-Api-Key: FilterTok42"),
        None,
    )
    try:
        raise RuntimeError("bad FilterTok42")
    except RuntimeError as exc:
        failing = logging.LogRecord(
            "m", logging.ERROR, __file__, 1, "failed", None, (type(exc), exc, exc.__traceback__)
        )
    for item in (record, failing):
        assert RedactingFilter().filter(item)
        assert "FilterTok42" not in logging.Formatter().format(item)


def test_a_log_line_carrying_a_lone_surrogate_is_escaped_so_no_handler_refuses_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A shared link or an OS name can carry a lone surrogate; a UTF-8 log file, a worker's pipe or xdist would refuse the line.
    import logging

    from monitor.core.secrets import install_log_masking

    install_log_masking()
    with caplog.at_level(logging.WARNING):
        logging.getLogger("monitor.test").warning("dashboard page %s: %s", "/class/a\udbceb", "bad")
    message = caplog.records[-1].getMessage()
    assert message == "dashboard page /class/a\\udbceb: bad"
    message.encode("utf-8")  # no UnicodeEncodeError
