"""Hostile input straight into the validator (no I/O): every payload is rejected with a
documented reason code, never an exception, and valid events checked around it are
accepted unchanged.

Categories (examples per test in ``settings``; about 8,000 in all): arbitrary bytes,
truncated and garbled JSON / msgpack, deep nesting, huge strings, NaN / ±inf / huge
integers, invalid UTF-8 and lone surrogates, timestamps far in the future or past,
unknown event types, wrong types per field, malformed tenants, and mixed batches.
"""

from __future__ import annotations

import copy
import json
import string
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.events import CHANNELS, EVENT_TYPES, SIDES, SOURCES, TIMELINES, Event
from engine.settings import load_settings
from engine.validate import Rejection, Validator

VS = load_settings(environ={}).validation
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z: a fixed clock
V = Validator(VS, now=NOW)

#: README "Event contract v1": the reason codes a rejection may carry (``late`` is the
#: feature store's, after validation).
CODES = frozenset(
    {
        "malformed_msgpack", "malformed_json", "not_a_map", "missing_field", "unknown_type",
        "wrong_type", "bad_value", "too_long", "too_large", "too_many",
    }
)  # fmt: skip

IDS = ("event_id", "lead_id", "visitor_id", "property_id", "area", "agent_id")
ENUMS = {"source": SOURCES, "side": SIDES, "timeline": TIMELINES, "channel": CHANNELS}
NUMBERS = ("price", "dwell_s")
#: Where a hostile value goes: a contract field, ``props.x`` (a props value), ``props{}``
#: (a props key), ``x_extra`` (an unknown top-level field: kept in props) or ``extra{}``
#: (an unknown top-level key).
FIELDS = (*IDS, "type", "ts", "tenant", *ENUMS, *NUMBERS, "props")
PLACES = (*FIELDS, "props.x", "props{}", "x_extra", "extra{}")

BASE: dict[str, Any] = {
    "event_id": "ev-1", "lead_id": "lead-1", "type": "property_view",
    "ts": "2023-11-14T10:00:00-05:00", "tenant": "acme", "visitor_id": "vis-1",
    "property_id": "mls-123", "price": 450_000, "area": "02139", "source": "portal",
    "side": "buyer", "timeline": "0-3m", "channel": "web", "dwell_s": 42.5, "agent_id": "ag-7",
    "props": {"utm": "spring"},
}  # fmt: skip
HOLE = "__hole__"


def _valid_pool() -> list[dict[str, Any]]:
    """One valid event per contract type, in several shapes (ISO or epoch ts, visitor-only,
    integer ids, unknown fields, non-BMP text)."""
    pool = []
    for i, etype in enumerate(sorted(EVENT_TYPES)):
        ev: dict[str, Any] = {"event_id": f"ok-{i}", "type": etype, "ts": NOW - 3_600 * i}
        if i % 3:
            ev["lead_id"] = f"lead-{i}"
        else:
            ev["visitor_id"] = f"vis-{i}"
        if i % 2:
            ev.update(property_id=f"P{i}", price=100_000 + i, area="94110", source="portal")
            ev["props"] = {"utm": "spring", "emoji": "\U0001f3e0", "n": [1, 2.5, None]}
        if i % 4 == 1:
            ev["ts"] = "2023-11-14T10:00:00-05:00"
        if i % 5 == 2:
            ev["event_id"] = 10_000 + i
        if i % 7 == 3:
            ev["campaign"] = {"id": i}
        pool.append(ev)
    return pool


VALID = _valid_pool()
EXPECTED = [V.check(copy.deepcopy(ev)) for ev in VALID]
assert all(isinstance(e, Event) for e in EXPECTED)
VALID_MSGPACK = [msgpack.packb(ev) for ev in VALID]
VALID_JSON = [json.dumps(ev).encode() for ev in VALID]

BASE_SETTINGS = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))


def rejected(result: Event | Rejection, *expected: str) -> Rejection:
    """``result`` is a rejection with a documented code (one of ``expected`` prefixes, if
    given), short, and encodable as UTF-8 (it goes into JSON answers and dead letters)."""
    assert isinstance(result, Rejection), result
    reason = result.reason
    assert reason.split(":", 1)[0] in CODES, reason
    assert len(reason) < 200, reason
    reason.encode("utf-8")
    if expected:
        assert reason.startswith(expected), (reason, expected)
    return result


def around(i: int, hostile: Callable[[], Event | Rejection]) -> Event | Rejection:
    """A valid event, the hostile payload, another valid event (as bytes): both valid ones
    are accepted as if checked alone."""
    a, b = i % len(VALID), (i + 1) % len(VALID)
    before = copy.deepcopy(VALID[a])
    assert V.check(VALID[a]) == EXPECTED[a]
    result = hostile()
    assert V.check_bytes(VALID_MSGPACK[b]) == EXPECTED[b]
    assert V.check_bytes(VALID_JSON[b], "json") == EXPECTED[b]
    assert VALID[a] == before
    return result


def with_value(place: str, value: Any, base: dict[str, Any] = BASE) -> dict[str, Any]:
    """``base`` with ``value`` at ``place`` (a key for ``props{}`` and ``extra{}``)."""
    if place == "props{}":
        return {**base, "props": {**base.get("props", {}), value: 1}}
    if place == "extra{}":
        return {**base, value: 1}
    if place == "props.x":
        return {**base, "props": {**base.get("props", {}), "x": value}}
    return {**base, place: value}


def json_with(place: str, fragment: bytes, base: dict[str, Any] = BASE) -> bytes:
    """The JSON text of ``base`` with ``fragment`` (raw JSON text) at ``place``."""
    text = json.dumps(with_value(place, HOLE, base)).encode()
    assert text.count(b'"__hole__"') == 1
    return text.replace(b'"__hole__"', fragment)


def msgpack_with(place: str, fragment: bytes, base: dict[str, Any] = BASE) -> bytes:
    """The msgpack of ``base`` with ``fragment`` (raw msgpack) at ``place``."""
    packed = msgpack.packb(with_value(place, HOLE, base))
    hole = msgpack.packb(HOLE)
    assert packed.count(hole) == 1
    return packed.replace(hole, fragment)


def prop_key(place: str) -> str:
    return {"props.x": "x", "x_extra": "x_extra"}[place]


indexes = st.integers(0, len(VALID) - 1)


# --------------------------------------------------------------------------- bytes


@settings(BASE_SETTINGS, max_examples=1_000)
@given(i=indexes, payload=st.binary(max_size=2_048), fmt=st.sampled_from(["json", "msgpack"]))
def test_arbitrary_bytes_are_rejected(i: int, payload: bytes, fmt: str) -> None:
    rejected(around(i, lambda: V.check_bytes(payload, fmt)))


_BAD_JSON_TOKENS = [
    b"undefined", b"'single'", b"0x1F", b"01", b"+1", b".5", b"1.", b"tru", b"nul", b"[1,]",
    b'{"a" 1}', b'{"a":1,}', b"\"unterminated", b'"tab\there"', b"1e", b"--1", b"[", b"}",
]  # fmt: skip


@settings(BASE_SETTINGS, max_examples=800)
@given(
    i=indexes,
    j=indexes,
    fmt=st.sampled_from(["json", "msgpack"]),
    how=st.sampled_from(["truncate", "trailing", "token"]),
    cut=st.floats(0, 1, exclude_max=True),
    junk=st.binary(min_size=1, max_size=16),
    token=st.sampled_from(_BAD_JSON_TOKENS),
    place=st.sampled_from(PLACES[:-3]),
)
def test_truncated_and_garbled_documents_are_malformed(
    i: int, j: int, fmt: str, how: str, cut: float, junk: bytes, token: bytes, place: str
) -> None:
    whole = VALID_JSON[j] if fmt == "json" else VALID_MSGPACK[j]
    if how == "truncate":  # every proper prefix of a map is incomplete
        payload = whole[: int(cut * len(whole))]
    elif how == "trailing":  # anything but whitespace after a complete document
        payload = whole + (junk.lstrip(b" \t\r\n") or b"x")
    elif fmt == "json":
        payload = json_with(place, token)
    else:
        payload = msgpack_with(place, b"\xc1")  # the one byte msgpack never uses
    rejected(around(i, lambda: V.check_bytes(payload, fmt)), f"malformed_{fmt}:")


# --------------------------------------------------------------------------- nesting

#: Where nesting makes an event invalid, and the reason (a list or a map in a scalar field).
_NEST_REASON = {
    **{f: f"wrong_type:{f}" for f in (*IDS, "type", "ts", *ENUMS, *NUMBERS)},
    "tenant": "bad_value:tenant",
    "top": "not_a_map:",  # a map nest is a map without event_id: see below
}


def _nest(depth: int, kind: str, fmt: str) -> bytes:
    if fmt == "json":
        return (b"[" * depth + b"0" + b"]" * depth) if kind == "list" else (
            b'{"a":' * depth + b"0" + b"}" * depth
        )  # fmt: skip
    return (b"\x91" * depth + b"\x00") if kind == "list" else (b"\x81\xa1a" * depth + b"\x00")


@settings(BASE_SETTINGS, max_examples=700)
@given(
    i=indexes,
    depth=st.integers(1, 5_000) | st.integers(900, 1_100) | st.integers(2_900, 3_100),
    kind=st.sampled_from(["list", "map"]),
    fmt=st.sampled_from(["json", "msgpack"]),
    place=st.sampled_from([*_NEST_REASON, "props", "props.x", "x_extra"]),
)
def test_deep_nesting_is_rejected_or_kept_opaque(
    i: int, depth: int, kind: str, fmt: str, place: str
) -> None:
    nest = _nest(depth, kind, fmt)
    if place == "top":
        payload = nest
    else:
        payload = (json_with if fmt == "json" else msgpack_with)(place, nest)
    result = around(i, lambda: V.check_bytes(payload, fmt))
    malformed = f"malformed_{fmt}:"
    # msgpack's unpacker has a fixed stack of 1024 levels; json's C decoder stops at the
    # interpreter's recursion limit (which hypothesis raises while a test runs)
    if depth > (1_100 if fmt == "msgpack" else sys.getrecursionlimit()):
        rejected(result, malformed)
    elif place == "props" and kind == "map" or place in ("props.x", "x_extra"):
        # props are opaque extras: any nesting the decoder accepts is kept as is (the
        # gateway drops what is deeper than 8 levels, with a note)
        if isinstance(result, Rejection):
            rejected(result, malformed)
        else:
            assert result.event_id == "ev-1"
    elif place == "props":
        rejected(result, malformed, "wrong_type:props")
    elif place == "top" and kind == "map":
        rejected(result, malformed, "missing_field:event_id")
    else:
        rejected(result, malformed, _NEST_REASON[place])
    if depth < 100:  # well within both decoders' limits
        assert not (isinstance(result, Rejection) and result.reason.startswith(malformed))


# --------------------------------------------------------------------------- huge strings


def _huge_reason(place: str) -> str:
    if place in IDS:
        return f"too_long:{place}"
    return {
        "type": "unknown_type:", "ts": "bad_value:ts", "tenant": "bad_value:tenant",
        "price": "wrong_type:price", "dwell_s": "wrong_type:dwell_s", "props": "wrong_type:props",
        "props.x": "too_long:props.x", "x_extra": "too_long:props.x_extra",
        "props{}": "bad_value:props keys", "extra{}": "bad_value:props keys",
    }.get(place) or f"bad_value:{place}"  # fmt: skip


@settings(BASE_SETTINGS, max_examples=600)
@given(
    i=indexes,
    place=st.sampled_from(PLACES),
    size=st.integers(VS.max_string_len + 1, 5_000) | st.integers(60_000, 200_000),
    char=st.sampled_from(["x", "é", "\u4e00", "\U0001f600", "\x00", " "]),
    prefix=st.text(max_size=8),
    via=st.sampled_from(["map", "json", "msgpack"]),
)
def test_huge_strings_are_rejected(
    i: int, place: str, size: int, char: str, prefix: str, via: str
) -> None:
    value = (prefix + char * size)[:size]
    obj = with_value(place, value)
    if via == "map":
        result = around(i, lambda: V.check(obj))
        rejected(result, _huge_reason(place))
        return
    payload = json.dumps(obj).encode() if via == "json" else msgpack.packb(obj)
    result = around(i, lambda: V.check_bytes(payload, via))
    if len(payload) > VS.max_event_bytes:
        rejected(result, "too_large:")
    else:
        rejected(result, _huge_reason(place))


# --------------------------------------------------------------------------- numbers

_NON_FINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}
_JSON_TOKENS = {"nan": b"NaN", "inf": b"Infinity", "-inf": b"-Infinity"}


@settings(BASE_SETTINGS, max_examples=800)
@given(
    i=indexes,
    place=st.sampled_from(["price", "dwell_s", "ts", "props.x", "x_extra", *IDS]),
    kind=st.sampled_from(["nan", "inf", "-inf", "1e400", "-1e400", "huge", "-huge"]),
    digits=st.integers(20, 4_300) | st.integers(4_301, 6_000),
    via=st.sampled_from(["map", "json", "msgpack"]),
)
def test_non_finite_and_huge_numbers_are_rejected(
    i: int, place: str, kind: str, digits: int, via: str
) -> None:
    if place in IDS:
        digits = max(digits, VS.max_id_len + 1)  # shorter integers are valid ids
    huge = 10**digits - 1  # (int("9" * digits) stops at 4,300 digits)
    sign = -1 if kind.startswith("-") else 1
    value: Any = {
        "1e400": float("inf"), "-1e400": float("-inf"), "huge": huge, "-huge": -huge
    }.get(kind, _NON_FINITE.get(kind))  # fmt: skip
    if via == "json":
        token = {"1e400": b"1e400", "-1e400": b"-1e400"}.get(kind) or _JSON_TOKENS.get(kind)
        token = token or ("-" * (sign < 0) + "9" * digits).encode()
        payload = json_with(place, token)
    elif via == "msgpack":
        if kind.endswith("huge"):  # msgpack's integers stop at 64 bits
            value = 2**64 - 1 if sign > 0 else -(2**63)
        payload = msgpack.packb(with_value(place, value))
    if via == "map":
        result = around(i, lambda: V.check(with_value(place, value)))
    else:
        result = around(i, lambda: V.check_bytes(payload, via))
    _expect_number_verdict(result, place, kind, digits, via)


def _expect_number_verdict(result: Any, place: str, kind: str, digits: int, via: str) -> None:
    """What the validator must say of a non-finite or huge number at ``place``."""
    in_props = place in ("props.x", "x_extra")
    if via == "json" and kind.endswith("huge") and digits > 4_300:
        rejected(result, "malformed_json:")  # Python's int(str) limit: a ValueError in json
    elif in_props and kind.endswith("huge"):
        assert isinstance(result, Event)  # an opaque extra (the gateway refuses > 64 bits)
    elif place in IDS and via == "msgpack" and kind.endswith("huge"):
        assert isinstance(result, Event)  # msgpack's largest integers are 20-digit ids
    elif place in IDS:
        # floats are never ids; integers are, within max_id_len digits
        rejected(result, f"wrong_type:{place}", f"too_long:{place}")
    elif in_props:
        rejected(result, f"bad_value:props.{prop_key(place)} must be finite")
    else:
        rejected(result, f"bad_value:{place}")


# --------------------------------------------------------------------------- encodings

_INVALID_UTF8 = [
    b"\xff", b"\xfe", b"\x80", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82", b"\xc3", b"\xf0\x9f\x98",
]  # fmt: skip
_ASCII = st.text(string.ascii_letters + string.digits, max_size=10)


def _raw_str(raw: bytes) -> bytes:
    """A msgpack str holding ``raw`` as is (str8 header)."""
    return b"\xd9" + bytes([len(raw)]) + raw


@settings(BASE_SETTINGS, max_examples=400)
@given(
    i=indexes,
    place=st.sampled_from(PLACES),
    bad=st.sampled_from(_INVALID_UTF8),
    before=_ASCII,
    after=_ASCII,
    fmt=st.sampled_from(["json", "msgpack"]),
)
def test_invalid_utf8_is_malformed(
    i: int, place: str, bad: bytes, before: str, after: str, fmt: str
) -> None:
    raw = before.encode() + bad + after.encode()
    if fmt == "json":
        payload = json_with(place, b'"' + raw + b'"')
    else:
        payload = msgpack_with(place, _raw_str(raw))
    result = around(i, lambda: V.check_bytes(payload, fmt))
    if fmt == "json" and bad.startswith(b"\xed"):
        # json.loads decodes bytes with "surrogatepass": an encoded surrogate (CESU-8)
        # becomes a lone surrogate in the text, refused like a "\ud800" escape below
        rejected(result, _surrogate_reason(place))
    else:
        rejected(result, f"malformed_{fmt}:")


def _surrogate_reason(place: str) -> str:
    if place in IDS:
        return f"bad_value:{place} has a lone surrogate"
    return {
        "type": "unknown_type:", "ts": "bad_value:ts", "tenant": "bad_value:tenant",
        "price": "wrong_type:price", "dwell_s": "wrong_type:dwell_s", "props": "wrong_type:props",
        "props.x": "bad_value:props.x is not valid Unicode",
        "x_extra": "bad_value:props.x_extra is not valid Unicode",
        "props{}": "bad_value:props keys", "extra{}": "bad_value:props keys",
    }.get(place) or f"bad_value:{place}"  # fmt: skip


_LONE = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "\ude00\ud83d"])


@settings(BASE_SETTINGS, max_examples=600)
@given(
    i=indexes,
    place=st.sampled_from(PLACES),
    lone=_LONE,
    before=_ASCII,
    after=_ASCII,
    via=st.sampled_from(["map", "json"]),
)
def test_lone_surrogates_are_rejected(
    i: int, place: str, lone: str, before: str, after: str, via: str
) -> None:
    """JSON's ``\\ud800`` escapes decode to text with no UTF-8 form: it would fail later
    (Redis keys, msgpack, JSON answers), so it is refused with a reason that is itself
    encodable."""
    value = before + lone + after
    if via == "map":
        result = around(i, lambda: V.check(with_value(place, value)))
    else:
        fragment = json.dumps(value).encode()  # ensure_ascii: "\ud800" escapes
        assert b"\\ud" in fragment
        result = around(i, lambda: V.check_bytes(json_with(place, fragment), "json"))
    rejected(result, _surrogate_reason(place))


def test_surrogate_pairs_are_valid_text() -> None:
    payload = json_with("props.x", b'"\\ud83c\\udfe0"')  # an escaped pair: U+1F3E0
    result = V.check_bytes(payload, "json")
    assert isinstance(result, Event)
    assert result.props["x"] == "\U0001f3e0"


# --------------------------------------------------------------------------- timestamps

_PAST = datetime.fromtimestamp(VS.min_ts, UTC).replace(tzinfo=None) - timedelta(days=2)
_FUTURE = datetime.fromtimestamp(NOW + VS.max_future_skew_s, UTC).replace(tzinfo=None)
_far_ts = st.one_of(
    st.floats(max_value=VS.min_ts, exclude_max=True),
    st.floats(min_value=NOW + VS.max_future_skew_s, exclude_min=True),
    st.integers(max_value=int(VS.min_ts) - 1),
    st.integers(min_value=int(NOW + VS.max_future_skew_s) + 1),
    st.sampled_from([NOW * 1_000, NOW * 1_000_000, -NOW, 0, -1]),  # ms, µs, sign errors
    st.datetimes(max_value=_PAST, timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes(min_value=_FUTURE + timedelta(days=2), timezones=st.timezones()).map(
        lambda d: d.isoformat()
    ),
    st.datetimes().map(lambda d: d.isoformat()),  # naive: no offset
    st.dates().map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "2023-13-01T00:00:00Z", "2023-11-14T24:00:00Z", "2023-11-14T10:61:00Z",
            "2023-02-30T00:00:00Z", "2023-11-14T10:00:00+25:00", "+10000-01-01T00:00:00Z",
            "1700000000", "now", "", " ", "2023-11-14T10:00:00ZZ", "2023-11-14T10:00:00+0x:00",
        ]
    ),
)  # fmt: skip


@settings(BASE_SETTINGS, max_examples=900)
@given(i=indexes, ts=_far_ts, via=st.sampled_from(["map", "json", "msgpack"]))
def test_far_and_malformed_timestamps_are_rejected(i: int, ts: Any, via: str) -> None:
    obj = with_value("ts", ts)
    if via == "map":
        result = around(i, lambda: V.check(obj))
    elif via == "json":
        payload = json.dumps(obj).encode()
        result = around(i, lambda: V.check_bytes(payload, "json"))
    else:
        if isinstance(ts, int) and not -(2**63) <= ts < 2**64:
            ts = float(ts)  # msgpack's integers stop at 64 bits: a client sends a float
        payload = msgpack.packb(with_value("ts", ts))
        result = around(i, lambda: V.check_bytes(payload))
    if ts == "":  # an empty ts is a missing one
        rejected(result, "missing_field:ts", "bad_value:ts")
    else:
        rejected(result, "bad_value:ts")


# --------------------------------------------------------------------------- types


def _near_miss(name: str, how: int) -> str:
    return [
        name.upper(), name.title(), f" {name}", f"{name}\n", name.replace("_", "-"),
        name + "\u200b", name.replace("e", "\u0435"), name[:-1], name + "s", f"{name}\x00",
    ][how]  # fmt: skip


_unknown_types = st.one_of(
    st.text(max_size=60),
    st.text(max_size=2_000),
    st.builds(_near_miss, st.sampled_from(sorted(EVENT_TYPES)), st.integers(0, 9)),
    _LONE,
).filter(lambda t: t not in EVENT_TYPES)


@settings(BASE_SETTINGS, max_examples=800)
@given(i=indexes, etype=_unknown_types, via=st.sampled_from(["map", "msgpack"]))
def test_unknown_event_types_are_rejected(i: int, etype: str, via: str) -> None:
    obj = with_value("type", etype)
    if via == "map":
        result = around(i, lambda: V.check(obj))
    else:
        try:
            payload = msgpack.packb(obj)
        except UnicodeEncodeError:  # a lone surrogate: no msgpack form; check the map
            payload = None
        result = around(i, lambda: V.check(obj) if payload is None else V.check_bytes(payload))
    shown = etype[:40].encode("utf-8", "replace").decode()
    assert rejected(result).reason == "unknown_type:" + shown


# --------------------------------------------------------------------------- wrong types

_int64 = st.integers(-(2**63), 2**63 - 1)  # what msgpack can carry
_not_str = st.one_of(
    st.floats(),
    st.booleans(),
    st.binary(max_size=8),
    st.lists(_int64, max_size=3),
    st.dictionaries(st.text(max_size=4), _int64, max_size=3),
)
_not_number = st.one_of(
    st.text(max_size=10), st.booleans(), st.binary(max_size=8), st.lists(st.floats(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.floats(), max_size=2),
)  # fmt: skip
_not_map = st.one_of(
    st.text(max_size=10), _int64, st.floats(), st.booleans(), st.binary(max_size=8),
    st.lists(_int64, min_size=0, max_size=3),
)  # fmt: skip


def _wrong_value(place: str) -> st.SearchStrategy[Any]:
    if place in NUMBERS:
        return _not_number
    if place == "props":
        return _not_map
    if place == "ts":
        return st.one_of(st.booleans(), st.binary(max_size=8), st.lists(_int64, max_size=3))
    if place == "type":
        return st.one_of(_not_str, _int64)
    return _not_str  # ids, enums, tenant


def _wrong_reason(place: str) -> str:
    return "bad_value:tenant" if place == "tenant" else f"wrong_type:{place}"


@settings(BASE_SETTINGS, max_examples=900)
@given(
    i=indexes,
    data=st.data(),
    place=st.sampled_from([*FIELDS, "top"]),
    via=st.sampled_from(["map", "msgpack"]),
)
def test_wrong_types_per_field_are_rejected(
    i: int, data: st.DataObject, place: str, via: str
) -> None:
    if place == "top":
        obj: Any = data.draw(st.one_of(_not_map, st.none(), st.lists(st.just(BASE), max_size=2)))
        expected = "not_a_map:"
    else:
        obj = with_value(place, data.draw(_wrong_value(place)))
        expected = _wrong_reason(place)
    if via == "map":
        result = around(i, lambda: V.check(obj))
    else:
        payload = msgpack.packb(obj, use_bin_type=True)
        result = around(i, lambda: V.check_bytes(payload))
    rejected(result, expected)


_bad_tenants = st.one_of(
    st.text(min_size=1, max_size=80).filter(
        lambda t: not (t.isascii() and t.replace("_", "a").replace(".", "a").replace("-", "a")
                       .isalnum() and len(t) <= 64)
    ),
    st.text("abc", min_size=65, max_size=200),
    st.sampled_from(["acme\n", "acme corp", "acme/evil", "../beta", "acme:x", "*", "beta\x00"]),
)  # fmt: skip


@settings(BASE_SETTINGS, max_examples=400)
@given(i=indexes, tenant=_bad_tenants)
def test_malformed_tenants_are_rejected(i: int, tenant: str) -> None:
    rejected(around(i, lambda: V.check(with_value("tenant", tenant))), "bad_value:tenant")


# --------------------------------------------------------------------------- mixed batches

_hostile = st.one_of(
    st.binary(max_size=200).map(lambda b: (b, "msgpack")),
    st.binary(max_size=200).map(lambda b: (b, "json")),
    st.sampled_from(_BAD_JSON_TOKENS).map(lambda t: (json_with("ts", t), "json")),
    st.sampled_from(_INVALID_UTF8).map(lambda b: (msgpack_with("lead_id", _raw_str(b)), "msgpack")),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"]).map(
        lambda t: (json_with("price", t.encode()), "json")
    ),
    st.integers(1_200, 3_000).map(lambda d: (_nest(d, "list", "msgpack"), "msgpack")),
    _LONE.map(lambda s: (json_with("event_id", json.dumps(s).encode()), "json")),
    st.sampled_from(["9999-01-01T00:00:00Z", "1970-01-01T00:00:00Z"]).map(
        lambda t: (msgpack.packb(with_value("ts", t)), "msgpack")
    ),
    _unknown_types.map(lambda t: (json.dumps(with_value("type", t)).encode(), "json")),
)


@settings(BASE_SETTINGS, max_examples=300)
@given(
    batch=st.lists(st.one_of(indexes, _hostile), min_size=1, max_size=20),
)
def test_mixed_batches_accept_exactly_the_valid_events(batch: list[Any]) -> None:
    """One validator, payloads in any order: the valid ones give the events they give
    alone, every hostile one is rejected, whatever came before it."""
    for item in batch:
        if isinstance(item, int):
            assert V.check_bytes(VALID_MSGPACK[item]) == EXPECTED[item]
            assert V.check(VALID[item]) == EXPECTED[item]
        else:
            payload, fmt = item
            rejected(V.check_bytes(payload, fmt))
