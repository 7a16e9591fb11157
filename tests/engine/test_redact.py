"""engine/redact.py: the one helper for URLs in messages, logs, labels, receipts, /healthz."""

from __future__ import annotations

import pytest

from engine.redact import public_url, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://u:p@h", "redis://u:***@h"),
        ("redis://h/0?password=x&db=1", "redis://h/0?password=***&db=1"),
        ("redis://h:6379", "redis://h:6379"),
    ],
)
def test_redact_url_hides_the_password_and_keeps_the_rest(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_redacts_every_url_in_a_message() -> None:
    text = redact_text("cannot reach Redis at redis://:pw1@a:1 nor rediss://u:pw2@b:2/0")
    assert "pw1" not in text and "pw2" not in text and "a:1" in text and "b:2/0" in text


@pytest.mark.parametrize(
    ("url", "with_path", "origin"),
    [
        ("https://u:pw@hooks.example.com:8443/in/abc?token=t0k#f",
         "https://hooks.example.com:8443/in/abc", "https://hooks.example.com:8443"),
        ("http://127.0.0.1:9000/hook", "http://127.0.0.1:9000/hook", "http://127.0.0.1:9000"),
        ("https://[::1]:8443/x?key=k", "https://[::1]:8443/x", "https://[::1]:8443"),
        ("https://h.example/?sig=abc", "https://h.example/", "https://h.example"),
    ],
)  # fmt: skip
def test_public_url_drops_user_info_query_and_optionally_the_path(
    url: str, with_path: str, origin: str
) -> None:
    assert public_url(url) == with_path
    assert public_url(url, path=False) == origin


def test_public_url_of_an_unparsable_url_still_hides_the_password() -> None:
    shown = public_url("http://u:pw@h:notaport/x")
    assert "pw" not in shown
