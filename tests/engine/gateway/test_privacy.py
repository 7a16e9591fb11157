"""Contact data: normalisation, keyed per-tenant hashes, scrubbing, id refusal (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.gateway.privacy import (
    ContactHasher,
    contact_like_id,
    normalise_email,
    normalise_phone,
)

H = ContactHasher(b"k" * 32)


@pytest.mark.parametrize(
    "raw,norm",
    [(" Jane.Doe@Example.COM ", "jane.doe@example.com"), ("a+tag@b.co", "a+tag@b.co"),
     ("no-at-sign", None), ("two@@ats.com", None), ("x@nodot", None), ("", None)],
)  # fmt: skip
def test_normalise_email(raw: str, norm: str | None) -> None:
    assert normalise_email(raw) == norm


@pytest.mark.parametrize(
    "raw,norm",
    [
        ("(555) 123-4567", "+15551234567"), ("555.123.4567", "+15551234567"),
        ("1-555-123-4567", "+15551234567"), ("+1 555 123 4567", "+15551234567"),
        ("+44 20 7946 0958", "+442079460958"), ("0044 20 7946 0958", "+442079460958"),
        ("555-123-4567 x89", "+15551234567"), (5551234567, "+15551234567"),
        ("12", None), ("call me", None), ("+1234567890123456", None), (True, None),
    ],
)  # fmt: skip
def test_normalise_phone(raw: str | int, norm: str | None) -> None:
    assert normalise_phone(raw) == norm


def test_uk_national_number_with_country_code_44() -> None:
    assert normalise_phone("020 7946 0958", "44") == "+442079460958"


def test_hashes_are_keyed_per_tenant_and_match_across_spellings() -> None:
    a = H.email_hash("acme", "Jane@Example.com")
    assert a == H.email_hash("acme", "  jane@example.com")
    assert a != H.email_hash("beta", "jane@example.com")  # no cross-tenant linking
    assert a != ContactHasher(b"j" * 32).email_hash("acme", "jane@example.com")  # keyed
    assert H.phone_hash("acme", "(555) 123-4567") == H.phone_hash("acme", "+15551234567")
    assert H.phone_hash("acme", "+15551234567") != H.email_hash("acme", "+15551234567@x.co")
    assert len(a or "") == 32 and "jane" not in (a or "")


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32"):
        ContactHasher(b"short")


def test_scrub_replaces_contact_keys_and_free_text() -> None:
    out = H.scrub(
        "acme",
        {"Email": "a@b.co", "mobile": "555-123-4567", "note": "x a@b.co y", "price": 5,
         "deep": {"l": [{"m": "+1 555 123 4567"}]}, "bin": b"\x00", "empty": ""},
    )  # fmt: skip
    assert set(out.props) == {"Email_hash", "mobile_hash", "note", "price", "deep", "bin", "empty"}
    assert out.props["Email_hash"] == H.email_hash("acme", "a@b.co")
    assert out.props["note"] == f"x [email:{out.props['Email_hash']}] y"
    assert out.props["deep"]["l"][0]["m"] == f"[phone:{out.props['mobile_hash']}]"
    assert out.props["bin"] is None and out.props["price"] == 5
    assert out.hashes == [out.props["Email_hash"], out.props["mobile_hash"]]
    assert out.notes == ["dropped:props.bin binary values are not kept"]


def test_scrub_drops_what_is_nested_too_deep_to_check() -> None:
    deep: object = "a@b.co"
    for _ in range(12):
        deep = [deep]
    out = H.scrub("acme", {"d": deep})
    assert "a@b.co" not in repr(out.props)
    assert out.notes and out.notes[0].startswith("dropped:props.d nested deeper")


@pytest.mark.parametrize(
    "value,kind",
    [("jane@example.com", "email"), ("+1 555 123 4567", "phone"), ("(555) 123-4567", "phone"),
     ("555-123-4567", "phone"), ("L-1234567890", None), ("5551234567", None), ("P000581", None),
     ("2026-01-01", None), ("", None)],
)  # fmt: skip
def test_contact_like_ids(value: str, kind: str | None) -> None:
    assert contact_like_id(value) == kind


@given(st.emails())
def test_any_email_in_free_text_is_replaced(email: str) -> None:
    out = H.scrub("acme", {"note": f"mail {email} now"})
    assert email not in out.props["note"]
    assert "[email" in out.props["note"]
