"""Contract-v1 validation: good payloads become Events, bad ones a Rejection with a stable code."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import InvalidEventError, LeadpulseError
from engine.events import (
    CHANNELS,
    EVENT_TYPES,
    SIDES,
    SOURCES,
    TIMELINES,
    Event,
    partition_of,
)
from engine.settings import load_settings
from engine.validate import Rejection, Validator, decode

SETTINGS = load_settings(environ={})
VS = SETTINGS.validation
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z: a fixed clock
V = Validator(VS, now=NOW)

# 2023-11-14T10:00:00-05:00 == 2023-11-14T15:00:00Z
TS_ISO = "2023-11-14T10:00:00-05:00"
TS_EPOCH = 1_699_974_000

BASE: dict[str, Any] = {
    "event_id": "ev-1",
    "lead_id": "lead-1",
    "type": "property_view",
    "ts": TS_ISO,
    "tenant": "acme",
    "visitor_id": "vis-1",
    "property_id": "mls-123",
    "price": 450_000,
    "area": "02139",
    "source": "portal",
    "side": "buyer",
    "timeline": "0-3m",
    "channel": "web",
    "dwell_s": 42.5,
    "agent_id": "ag-7",
    "props": {"utm": "spring"},
}


def with_(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


def without(*names: str) -> dict[str, Any]:
    return {k: v for k, v in BASE.items() if k not in names}


def event(obj: Any) -> Event:
    result = V.check(obj)
    assert isinstance(result, Event), result
    return result


def rejection(obj: Any) -> Rejection:
    result = V.check(obj)
    assert isinstance(result, Rejection), result
    return result


# --------------------------------------------------------------------------- valid events


def test_valid_event_has_every_field() -> None:
    ev = event(BASE)
    assert ev == Event(
        event_id="ev-1",
        lead_id="lead-1",
        type="property_view",
        ts=float(TS_EPOCH),
        tenant="acme",
        visitor_id="vis-1",
        property_id="mls-123",
        price=450_000.0,
        area="02139",
        source="portal",
        side="buyer",
        timeline="0-3m",
        channel="web",
        dwell_s=42.5,
        agent_id="ag-7",
        props={"utm": "spring"},
    )


def test_json_and_msgpack_payloads_give_identical_events() -> None:
    from_json = V.check_bytes(json.dumps(BASE).encode(), "json")
    from_msgpack = V.check_bytes(msgpack.packb(BASE))
    assert isinstance(from_json, Event)
    assert from_json == from_msgpack


def test_json_payload_as_str_is_accepted() -> None:
    assert V.check_bytes(json.dumps(BASE), "json") == event(BASE)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "ts",
    [
        TS_ISO,
        "2023-11-14T15:00:00Z",
        "2023-11-14T15:00:00+00:00",
        "2023-11-14T20:30:00+05:30",
        TS_EPOCH,
        float(TS_EPOCH),
    ],
)
def test_iso_with_offset_and_epoch_seconds_parse_to_the_same_ts(ts: Any) -> None:
    assert event(with_(ts=ts)).ts == TS_EPOCH


def test_fractional_iso_seconds_are_kept() -> None:
    assert event(with_(ts="2023-11-14T15:00:00.250Z")).ts == pytest.approx(TS_EPOCH + 0.25)


def test_defaults_for_optional_fields() -> None:
    minimal = {"event_id": "e", "lead_id": "l", "type": "search", "ts": TS_EPOCH}
    ev = event(minimal)
    assert ev.tenant == "default"
    assert (ev.price, ev.dwell_s, ev.source, ev.props) == (0.0, 0.0, "", {})


def test_none_and_empty_optional_fields_are_absent() -> None:
    ev = event(with_(source=None, side="", price=None, props=None, area=None))
    assert (ev.source, ev.side, ev.price, ev.props, ev.area) == ("", "", 0.0, {}, "")


def test_integer_ids_become_strings() -> None:
    ev = event(with_(event_id=123, lead_id=456))
    assert (ev.event_id, ev.lead_id) == ("123", "456")


def test_unknown_top_level_fields_land_in_props() -> None:
    ev = event(with_(utm_source="google", campaign={"id": 7}))
    assert ev.props == {"utm": "spring", "utm_source": "google", "campaign": {"id": 7}}
    assert not hasattr(ev, "utm_source")


def test_visitor_only_event_gets_a_tilde_lead_id() -> None:
    ev = event(without("lead_id"))
    assert ev.lead_id == "~vis-1"
    assert ev.visitor_id == "vis-1"


def test_every_contract_type_is_accepted() -> None:
    for etype in sorted(EVENT_TYPES):
        assert event(with_(type=etype)).type == etype


@pytest.mark.parametrize(
    ("name", "values"),
    [("source", SOURCES), ("side", SIDES), ("timeline", TIMELINES), ("channel", CHANNELS)],
)
def test_every_contract_enum_value_is_accepted(name: str, values: frozenset[str]) -> None:
    for value in sorted(values):
        assert getattr(event(with_(**{name: value})), name) == value


def test_ts_bounds_are_inclusive() -> None:
    assert event(with_(ts=NOW + VS.max_future_skew_s)).ts == NOW + VS.max_future_skew_s
    assert event(with_(ts=VS.min_ts)).ts == VS.min_ts
    assert rejection(with_(ts=NOW + VS.max_future_skew_s + 1)).reason.startswith("bad_value:ts")
    assert rejection(with_(ts=VS.min_ts - 1)).reason.startswith("bad_value:ts")


def test_validator_without_fixed_clock_uses_wall_time() -> None:
    live = Validator(VS)
    assert isinstance(live.check(with_(ts=TS_EPOCH)), Event)
    far = datetime(2999, 1, 1, tzinfo=UTC).timestamp()
    assert isinstance(live.check(with_(ts=far)), Rejection)


# --------------------------------------------------------------------------- rejections

MB = "x" * 1_000_000


@pytest.mark.parametrize(
    ("obj", "code"),
    [
        # not a map
        ([BASE], "not_a_map:"),
        ("event", "not_a_map:"),
        (None, "not_a_map:"),
        (42, "not_a_map:"),
        # missing fields
        (without("event_id"), "missing_field:event_id"),
        (with_(event_id=""), "missing_field:event_id"),
        (without("type"), "missing_field:type"),
        (without("ts"), "missing_field:ts"),
        (with_(ts=None), "missing_field:ts"),
        (without("lead_id", "visitor_id"), "missing_field:lead_id"),
        (with_(lead_id="", visitor_id=""), "missing_field:lead_id"),
        # unknown type
        (with_(type="property_vieww"), "unknown_type:"),
        (with_(type=""), "unknown_type:"),
        (with_(type="PAGE_VIEW"), "unknown_type:"),
        # wrong types
        (with_(ts=[TS_EPOCH]), "wrong_type:ts"),
        (with_(ts={"s": TS_EPOCH}), "wrong_type:ts"),
        (with_(ts=True), "wrong_type:ts"),
        (with_(price="450000"), "wrong_type:price"),
        (with_(price=True), "wrong_type:price"),
        (with_(dwell_s=[1]), "wrong_type:dwell_s"),
        (with_(type=5), "wrong_type:type"),
        (with_(type=["page_view"]), "wrong_type:type"),
        (with_(event_id=["e"]), "wrong_type:event_id"),
        (with_(lead_id=True), "wrong_type:lead_id"),
        (with_(lead_id=1.5), "wrong_type:lead_id"),
        (with_(source=3), "wrong_type:source"),
        (with_(props=["a"]), "wrong_type:props"),
        # too long
        (with_(event_id=MB), "too_long:event_id"),
        (with_(lead_id=MB), "too_long:lead_id"),
        (with_(area=MB), "too_long:area"),
        (with_(event_id="e" * (VS.max_id_len + 1)), "too_long:event_id"),
        (with_(props={"note": MB}), "too_long:props.note"),
        (with_(note=MB), "too_long:props.note"),
        (with_(props={f"k{i}": i for i in range(VS.max_props + 1)}), "too_many:props"),
        # bad values
        (with_(price=math.nan), "bad_value:price"),
        (with_(price=math.inf), "bad_value:price"),
        (with_(price=-math.inf), "bad_value:price"),
        (with_(price=-1), "bad_value:price"),
        (with_(price=1e11), "bad_value:price"),
        (with_(dwell_s=86_401), "bad_value:dwell_s"),
        (with_(ts=math.nan), "bad_value:ts"),
        (with_(ts=math.inf), "bad_value:ts"),
        (with_(ts=NOW + 2 * 86_400), "bad_value:ts"),
        (with_(ts="2999-01-01T00:00:00Z"), "bad_value:ts"),
        (with_(ts=946_684_799), "bad_value:ts"),
        (with_(ts="1999-12-31T23:59:59Z"), "bad_value:ts"),
        (with_(ts=0), "bad_value:ts"),
        (with_(ts=-5), "bad_value:ts"),
        (with_(ts="2023-11-14T10:00:00"), "bad_value:ts"),  # naive ISO
        (with_(ts="2023-11-14"), "bad_value:ts"),  # a date is naive too
        (with_(ts="yesterday"), "bad_value:ts"),
        (with_(ts="1700000000"), "bad_value:ts"),
        (with_(ts=MB), "bad_value:ts"),
        (with_(tenant="acme corp"), "bad_value:tenant"),
        (with_(tenant="acme/evil"), "bad_value:tenant"),
        (with_(tenant="acmé"), "bad_value:tenant"),
        (with_(tenant="t" * 65), "bad_value:tenant"),
        (with_(tenant=7), "bad_value:tenant"),
        (with_(source="zillow"), "bad_value:source"),
        (with_(side="renter"), "bad_value:side"),
        (with_(timeline="soon"), "bad_value:timeline"),
        (with_(channel="fax"), "bad_value:channel"),
        (with_(lead_id="lead\n1"), "bad_value:lead_id"),
        (with_(event_id="e\x00"), "bad_value:event_id"),
        (with_(props={"x": math.nan}), "bad_value:props.x"),
        (with_(props={"k" * (VS.max_id_len + 1): 1}), "bad_value:props"),
    ],
)
def test_rejection_reason_codes(obj: Any, code: str) -> None:
    result = V.check(obj)
    assert isinstance(result, Rejection), result
    assert result.reason.startswith(code), result.reason
    assert len(result.reason) < 200  # a short, stable phrase, never the payload


def test_rejection_keeps_the_raw_map_for_the_dead_letter() -> None:
    bad = with_(type="nope")
    assert rejection(bad).raw == bad
    assert rejection([1]).raw is None


def test_unknown_type_reason_is_truncated() -> None:
    reason = rejection(with_(type="z" * 5000)).reason
    assert reason == "unknown_type:" + "z" * 40


@pytest.mark.parametrize(
    "payload",
    [b"\xc1", b"\x81", b"\x82\xa1a", b"\x01\x02", b"", b"\x81\x01\x02", b"\xa2\xff\xfe"],
)
def test_malformed_msgpack(payload: bytes) -> None:
    result = V.check_bytes(payload)
    assert isinstance(result, Rejection)
    assert result.reason.startswith("malformed_msgpack:"), result.reason
    assert result.raw == payload


@pytest.mark.parametrize(
    "payload",
    [b"{", b'{"a":}', b"", b"\xff\xfe\xfd", b'{"event_id": "e",}', b"[" * 100_000 + b"]" * 100_000],
)
def test_malformed_json(payload: bytes) -> None:
    v = Validator(VS.model_copy(update={"max_event_bytes": 1_000_000}), now=NOW)
    result = v.check_bytes(payload, "json")
    assert isinstance(result, Rejection)
    assert result.reason.startswith("malformed_json:"), result.reason


def test_deep_msgpack_nesting_is_rejected_not_raised() -> None:
    result = V.check_bytes(b"\x91" * 60_000 + b"\x00")
    assert isinstance(result, Rejection)
    assert result.reason.startswith("malformed_msgpack:")


@pytest.mark.parametrize(
    ("payload", "content_type"),
    [(msgpack.packb([1, 2]), "msgpack"), (b"[1, 2]", "json"), (b'"x"', "json"), (b"7", "json")],
)
def test_not_a_map_payloads(payload: bytes, content_type: str) -> None:
    result = V.check_bytes(payload, content_type)
    assert isinstance(result, Rejection)
    assert result.reason.startswith("not_a_map:")


def test_one_megabyte_payload_is_too_large() -> None:
    for payload, ct in (
        (json.dumps(with_(area=MB)).encode(), "json"),
        (msgpack.packb(with_(note=MB)), "msgpack"),
    ):
        result = V.check_bytes(payload, ct)
        assert isinstance(result, Rejection)
        assert result.reason.startswith("too_large:"), result.reason


def test_size_limit_is_inclusive() -> None:
    empty = len(msgpack.packb(with_(props={"pad": ""})))  # "" packs to a 1-byte header
    n = VS.max_event_bytes - empty - 2  # n >= 256 chars pack with a 3-byte header
    payload = msgpack.packb(with_(props={"pad": "p" * n}))
    assert len(payload) == VS.max_event_bytes
    at_limit = V.check_bytes(payload)
    assert isinstance(at_limit, Rejection)
    assert at_limit.reason.startswith("too_long:props.pad")  # decoded, then bounded per field
    over = V.check_bytes(msgpack.packb(with_(props={"pad": "p" * (n + 1)})))
    assert isinstance(over, Rejection)
    assert over.reason.startswith("too_large:")


def test_nan_price_in_json_is_rejected() -> None:
    text = json.dumps(BASE).replace("450000", "NaN").encode()
    result = V.check_bytes(text, "json")
    assert isinstance(result, Rejection)
    assert result.reason.startswith("bad_value:price")


def test_parse_raises_invalid_event_error_with_reason() -> None:
    with pytest.raises(InvalidEventError) as info:
        V.parse(with_(type="nope"))
    assert info.value.reason.startswith("unknown_type:")
    assert isinstance(info.value, LeadpulseError)
    assert isinstance(info.value, ValueError)


def test_decode_raises_invalid_event_error() -> None:
    with pytest.raises(InvalidEventError, match="malformed_msgpack"):
        decode(b"\xc1")
    with pytest.raises(InvalidEventError, match="malformed_msgpack"):
        decode("a str is not msgpack")
    with pytest.raises(InvalidEventError, match="malformed_json"):
        decode(b"{", "json")
    assert decode(msgpack.packb({"a": 1})) == {"a": 1}


# --------------------------------------------------------------------------- partitioning


def test_partition_of_is_stable_and_in_range() -> None:
    got = [partition_of("acme", f"lead-{i}", 8) for i in range(200)]
    assert all(0 <= p < 8 for p in got)
    assert len(set(got)) == 8  # spreads leads over every partition
    assert got == [partition_of("acme", f"lead-{i}", 8) for i in range(200)]
    assert partition_of("acme", "lead-1", 1) == 0
    assert partition_of("a", "b", 1024) == 751  # crc32: stable across processes/versions


# --------------------------------------------------------------------------- known bugs


@pytest.mark.parametrize("field", ["ts", "price", "dwell_s"])
def test_huge_json_integer_is_rejected_not_raised(field: str) -> None:
    doc = json.dumps({k: v for k, v in BASE.items() if k != field})
    payload = (doc[:-1] + f', "{field}": 1{"0" * 400}}}').encode()
    result = V.check_bytes(payload, "json")
    assert isinstance(result, Rejection)
    assert result.reason.startswith("bad_value:" + field)


def test_tenant_with_trailing_newline_is_rejected() -> None:
    assert rejection(with_(tenant="acme\n")).reason.startswith("bad_value:tenant")


def test_visitor_lead_id_stays_within_contract_bounds() -> None:
    result = V.check(with_(lead_id=None, visitor_id="v" * VS.max_id_len))
    if isinstance(result, Event):
        assert len(result.lead_id) <= VS.max_id_len
        assert V.check(result.to_wire()) == result
    else:
        assert result.reason.startswith("too_long:visitor_id")


# --------------------------------------------------------------------------- properties

# Integers limited to the msgpack range: a bigger JSON integer is the OverflowError bug above.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)

id_text = st.text(
    alphabet=st.characters(min_codepoint=32, exclude_categories=("Cs",)), min_size=1, max_size=40
)
# lead and visitor ids: the id alphabet (engine/validate.py, ID_CHARS), at least one letter
# or digit; a lead id may start with "~" (visitor-level)
visitor_ids = st.from_regex(
    r"[A-Za-z0-9_.:-]{0,20}[A-Za-z0-9][A-Za-z0-9_.:-]{0,19}", fullmatch=True
)
lead_ids = visitor_ids | visitor_ids.map(lambda v: "~" + v)
valid_ts = st.one_of(
    st.floats(min_value=VS.min_ts, max_value=NOW + VS.max_future_skew_s),
    st.integers(min_value=int(VS.min_ts), max_value=int(NOW)),
    st.datetimes(
        min_value=datetime(2000, 1, 2),
        max_value=datetime(2023, 11, 13),
        timezones=st.timezones(),
    ).map(lambda d: d.isoformat()),
)
extra_keys = st.text(min_size=1, max_size=12).map(lambda s: "x_" + s)

CONTRACT_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "event_id": id_text | st.integers(min_value=0, max_value=2**63),
    "lead_id": lead_ids,
    "visitor_id": visitor_ids,
    "type": st.sampled_from(sorted(EVENT_TYPES)),
    "ts": valid_ts,
    "tenant": st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True).filter(
        lambda t: "\n" not in t
    ),
    "property_id": id_text,
    "price": st.floats(min_value=0, max_value=1e10) | st.integers(0, 10**10),
    "area": id_text,
    "source": st.sampled_from(sorted(SOURCES)),
    "side": st.sampled_from(sorted(SIDES)),
    "timeline": st.sampled_from(sorted(TIMELINES)),
    "channel": st.sampled_from(sorted(CHANNELS)),
    "dwell_s": st.floats(min_value=0, max_value=86_400),
    "agent_id": id_text,
    "props": st.dictionaries(st.text(max_size=20), json_values, max_size=8),
}
finite_values = st.recursive(
    json_scalars.filter(lambda v: not (isinstance(v, float) and not math.isfinite(v))),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
OPTIONAL = {k: v for k, v in CONTRACT_VALUES.items() if k not in ("event_id", "type", "ts")}
OPTIONAL["props"] = st.dictionaries(st.text(max_size=20), finite_values, max_size=8)

valid_events = st.fixed_dictionaries(
    {"event_id": CONTRACT_VALUES["event_id"], "type": CONTRACT_VALUES["type"], "ts": valid_ts},
    optional=OPTIONAL,
).filter(lambda d: d.get("lead_id") or d.get("visitor_id"))

_DELETE = object()


def _corrupt(args: tuple[dict[str, Any], str, Any]) -> dict[str, Any]:
    obj, key, value = args
    out = {k: v for k, v in obj.items() if k != key}
    if value is not _DELETE:
        out[key] = value
    return out


# A valid event with one field replaced by JSON-like junk (or dropped), an unknown key, or
# any contract key holding either a valid value or junk.
mixed_events = st.one_of(
    st.tuples(
        valid_events,
        st.sampled_from([*sorted(CONTRACT_VALUES), "x_extra"]),
        json_values | st.just(_DELETE),
    ).map(_corrupt),
    st.fixed_dictionaries(
        {}, optional={k: v | json_values for k, v in CONTRACT_VALUES.items()}
    ).flatmap(
        lambda d: st.dictionaries(extra_keys, json_values, max_size=3).map(lambda x: {**d, **x})
    ),
)

FAST = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_msgpack_bytes_never_raise(payload: bytes) -> None:
    assert isinstance(V.check_bytes(payload), Event | Rejection)


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_json_bytes_never_raise(payload: bytes) -> None:
    assert isinstance(V.check_bytes(payload, "json"), Event | Rejection)


@FAST
@given(json_values)
def test_arbitrary_json_documents_never_raise(value: Any) -> None:
    text = json.dumps(value).encode()
    assert isinstance(V.check_bytes(text, "json"), Event | Rejection)
    assert isinstance(V.check_bytes(msgpack.packb(value)), Event | Rejection)


@FAST
@given(mixed_events)
def test_arbitrary_contract_maps_never_raise(obj: dict[str, Any]) -> None:
    result = V.check(obj)
    assert isinstance(result, Event | Rejection)
    if isinstance(result, Rejection):
        code = result.reason.split(":", 1)[0]
        assert code in {
            "missing_field",
            "unknown_type",
            "wrong_type",
            "too_long",
            "too_many",
            "bad_value",
        }, result.reason
    else:
        assert V.check(result.to_wire()) == result


@FAST
@given(valid_events)
def test_valid_events_are_accepted_and_round_trip(obj: dict[str, Any]) -> None:
    result = V.check(obj)
    assert isinstance(result, Event), (result, obj)
    assert V.check(result.to_wire()) == result
    assert result.lead_id == str(obj.get("lead_id") or "~" + str(obj.get("visitor_id")))
    assert VS.min_ts <= result.ts <= NOW + VS.max_future_skew_s


@FAST
@given(valid_events)
def test_valid_events_survive_msgpack_bytes(obj: dict[str, Any]) -> None:
    result = V.check(obj)
    assert isinstance(result, Event)
    assert V.check_bytes(msgpack.packb(result.to_wire())) == result


# -- the id alphabet (issue 16): ids that could not be acted on are refused with a reason --


def test_a_lone_visitor_mark_is_refused_not_a_crash() -> None:
    for field, words in (("lead_id", "needs a letter or digit after '~'"),
                         ("visitor_id", "the character '~'")):  # fmt: skip
        result = V.check(with_(**{field: "~"}))
        assert isinstance(result, Rejection) and words in result.reason, result


@pytest.mark.parametrize(
    "value,words",
    [
        ("a/b", "the character '/'"),
        ("..", "needs a letter or digit"),
        (".", "needs a letter or digit"),
        ("lead\u200b1", "invisible or formatting character (U+200B)"),
        ("lead\u202e1", "invisible or formatting character (U+202E)"),
        ("\uff2c\uff11", "non-ASCII character (U+FF2C fullwidth latin capital letter l)"),
        ("j\u00f6rg", "non-ASCII character (U+00F6"),
        ("lead 1", "a space"),
        ("lead\x7f", "control character (U+007F)"),
        ("jane@example.com", "looks like an email"),
        ("jane\uff20example.com", "looks like an email"),
        ("+1 555 123 4567", "looks like a phone number"),
        ("~~x", "the character '~'"),
    ],
)
@pytest.mark.parametrize("field", ["lead_id", "visitor_id"])
def test_ids_outside_the_alphabet_are_refused_with_a_reason(
    field: str, value: str, words: str
) -> None:
    result = V.check(with_(**{field: value}))
    assert isinstance(result, Rejection)
    assert result.reason.startswith(f"bad_value:{field} ") and words in result.reason, result


@pytest.mark.parametrize("value", ["lead-42", "crm:00Q5e00000AbCdE", "a.b_c-d", "0", "L..1"])
def test_ids_in_the_alphabet_are_kept(value: str) -> None:
    for field in ("lead_id", "visitor_id"):
        result = V.check(with_(**{field: value}))
        assert isinstance(result, Event), result


def test_only_a_lead_id_may_be_visitor_level() -> None:
    assert isinstance(V.check(with_(lead_id="~v1")), Event)
    result = V.check(with_(lead_id="", visitor_id="~v1"))
    assert isinstance(result, Rejection) and result.reason.startswith("bad_value:visitor_id")
