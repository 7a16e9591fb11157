"""Hostile input through the real gateway (in process, real Redis): never a 5xx, every
answer a documented 4xx or a 2xx whose rejected events each carry a reason code, the
valid events of the same requests in the stream exactly once, and the gateway still
serving afterwards.

About 3,700 requests (examples per test in ``settings``): hostile events among valid
ones (deep nesting, huge strings, NaN / inf / huge integers, lone surrogates and
invalid UTF-8, far timestamps, unknown types, wrong types, other tenants, contact
data in ids), hostile bodies, forged or misplaced API keys and tenant headers, wrong
content types, oversize bodies, and hostile lead ids on the read route.
"""

from __future__ import annotations

import json
import re
import string
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import msgpack
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.delivery.webhooks import sign, verify
from engine.events import Event
from engine.gateway.auth import key_digest
from engine.gateway.ingest import JSON_TYPES, MSGPACK_TYPES
from engine.settings import load_settings
from engine.validate import Validator
from tests.engine.gateway.conftest import (
    ACME,
    ACME_TRACKER,
    BETA,
    Gateway,
    stream_events,
)
from tests.engine.test_validate_hostile import (
    _BAD_JSON_TOKENS,
    _INVALID_UTF8,
    _LONE,
    BASE_SETTINGS,
    CODES,
    IDS,
    PLACES,
    _huge_reason,
    _nest,
    _raw_str,
    _surrogate_reason,
    _unknown_types,
    _wrong_reason,
    _wrong_value,
    json_with,
    msgpack_with,
    with_value,
)

#: README "API": the request errors, by status.
ERRORS = {
    400: {"malformed_json", "malformed_msgpack", "not_an_array"},
    401: {"unauthorized"},
    403: {"forbidden"},
    404: {"not_found"},  # reads: no such lead
    413: {"too_large", "too_many_events"},
    415: {"unsupported_media_type"},
    422: {"bad_request"},
}
#: Per-event reasons: the contract's codes plus the gateway's ``forbidden:*``.
EVENT_CODES = CODES | {"forbidden"}
ORIGIN = "https://acme-homes.example"
VALIDATION = load_settings(environ={}).validation


def _keys(origins: tuple[str, ...] = (ORIGIN,)) -> dict[str, Any]:
    return {
        key_digest(ACME): {"tenant": "acme", "role": "server"},
        key_digest(ACME_TRACKER): {"tenant": "acme", "role": "tracker", "origins": origins},
        key_digest(BETA): {"tenant": "beta", "role": "server"},
    }


def answer(r: httpx.Response) -> dict[str, Any]:
    """Never a 5xx; an error is documented for its status; every rejected event has a
    documented reason code (UTF-8, short)."""
    assert r.status_code < 500, r.text
    body = r.json()
    if r.status_code >= 400:
        assert body["error"] in ERRORS[r.status_code], (r.status_code, body)
        assert body["detail"]
        return body
    assert r.status_code == 200
    assert len(body["results"]) == body["accepted"] + body["duplicate"] + body["rejected"]
    for i, res in enumerate(body["results"]):
        assert res["index"] == i
        if res["status"] == "rejected":
            assert res["reason"].split(":", 1)[0] in EVENT_CODES, res
            assert len(res["reason"]) < 200
        else:
            assert res["status"] in ("accepted", "duplicate")
    return body


def array_body(items: list[bytes], fmt: str) -> bytes:
    """A JSON or msgpack array of already-encoded items."""
    if fmt == "json":
        return b"[" + b",".join(items) + b"]"
    n = len(items)
    head = bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
    return head + b"".join(items)


@dataclass
class Storm:
    """Sends requests, each with fresh valid events, and remembers what must be stored."""

    gw: Gateway
    sent: int = 0
    n: int = 0
    accepted: list[str] = field(default_factory=list)  # event ids answered "accepted"
    valid: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> expected wire
    refused: list[str] = field(default_factory=list)  # valid ids in requests answered 4xx

    def event(self, **kw: Any) -> dict[str, Any]:
        """A fresh valid event (unique id, wall-clock ts)."""
        self.n += 1
        return {
            "event_id": f"ok-{self.n}", "lead_id": f"L{self.n % 7}", "type": "property_view",
            "ts": time.time(), "property_id": f"P{self.n}", "props": {"utm": "x"}, **kw,
        }  # fmt: skip

    def hostile_base(self) -> dict[str, Any]:
        """A valid event under a hostile id (``bad-n``): the base hostile values go into."""
        ev = self.event()
        ev["event_id"] = f"bad-{self.n}"
        return ev

    def post(
        self,
        body: bytes,
        content_type: str | None,
        valid: Sequence[dict[str, Any]] = (),
        key: str | None = ACME,
        headers: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        tenant: str = "acme",
    ) -> tuple[httpx.Response, dict[str, Any]]:
        """POST ``body`` (which holds the ``valid`` events); checks the answer and that
        each valid event is accepted, or the whole request refused."""
        hdrs: dict[str, Any] = {} if content_type is None else {"Content-Type": content_type}
        if key is not None:
            hdrs["Authorization"] = f"Bearer {key}"
        hdrs.update(headers or {})
        r = self.gw.request("POST", "/v1/events", content=body, headers=hdrs, params=params)
        self.sent += 1
        out = answer(r)
        ids = [str(v["event_id"]) for v in valid]
        if r.status_code >= 400:
            self.refused.extend(ids)
            return r, out
        by_id = {res.get("event_id"): res for res in out["results"]}
        self.accepted.extend(
            res["event_id"] for res in out["results"] if res["status"] == "accepted"
        )
        for v in valid:
            assert by_id[str(v["event_id"])]["status"] == "accepted", out
            checked = Validator(VALIDATION).check({**v, "tenant": tenant})
            assert isinstance(checked, Event)
            self.valid[str(v["event_id"])] = checked.to_wire()
        return r, out

    def finish(self, client: redis.Redis, prefix: str) -> None:
        """Each accepted event is in the stream once, the valid ones unchanged, nothing
        of a refused request is; then a valid request still succeeds; no 5xx counted."""
        ok = self.event()
        r, out = self.post(json.dumps([ok]).encode(), "application/json", [ok])
        assert out["accepted"] == 1
        stored = stream_events(client, prefix)
        ids = Counter(str(e["event_id"]) for e in stored)
        assert ids == Counter(self.accepted), "stream != accepted events"
        assert max(ids.values(), default=1) == 1
        by_id = {str(e["event_id"]): e for e in stored}
        for eid, wire in self.valid.items():
            assert by_id[eid] == wire, eid
        assert not set(self.refused) & set(ids)
        metrics = self.gw.request("GET", "/metrics").text
        # 5xx series exist at 0 from the start (rules see the first): none may count
        assert not re.search(
            r'^leadpulse_gateway_requests_total\{[^}]*status="5[^}]*\} (?!0\.0$)', metrics, re.M
        )


def _interleave(valid: list[bytes], bad: list[bytes], slots: list[int]) -> list[bytes]:
    out = list(bad)
    for item, at in zip(valid, slots, strict=False):
        out.insert(at % (len(out) + 1), item)
    return out


# --------------------------------------------------------------------------- hostile events


@dataclass(frozen=True)
class Bad:
    """One hostile event: its JSON text, its msgpack (None: none exists), the reason prefixes
    expected (None: any documented outcome), and whether it may fail the whole body."""

    json: bytes | None
    mp: bytes | None
    expect: tuple[str, ...] | None
    body_may_fail: bool = False


def _bad_from_value(place: str, value: Any, expect: tuple[str, ...] | None) -> Callable[..., Bad]:
    def make(base: dict[str, Any]) -> Bad:
        obj = with_value(place, value, base)
        try:
            mp: bytes | None = msgpack.packb(obj, use_bin_type=True)
        except (ValueError, OverflowError):  # lone surrogates, integers beyond 64 bits
            mp = None
        try:
            text: bytes | None = json.dumps(obj).encode()
        except TypeError:  # bytes: msgpack only
            text = None
        return Bad(text, mp, expect)

    return make


def _nested(place: str, depth: int, kind: str) -> Callable[..., Bad]:
    def make(base: dict[str, Any]) -> Bad:
        j = json_with(place, _nest(depth, kind, "json"), base)
        m = msgpack_with(place, _nest(depth, kind, "msgpack"), base)
        opaque = place in ("props.x", "x_extra") or (place == "props" and kind == "map")
        if opaque:
            return Bad(j, m, None, True)  # kept, cut at depth 8 with a note
        return Bad(j, m, (f"wrong_type:{place}",), True)

    return make


def _tokens(place: str, token: bytes, expect: tuple[str, ...]) -> Callable[..., Bad]:
    return lambda base: Bad(json_with(place, token, base), None, expect)


def _utf8(place: str, bad: bytes) -> Callable[..., Bad]:
    def make(base: dict[str, Any]) -> Bad:
        raw = b"a" + bad + b"z"
        j = json_with(place, b'"' + raw + b'"', base)
        m = msgpack_with(place, _raw_str(raw), base)
        if bad.startswith(b"\xed"):  # CESU-8: json.loads makes it a lone surrogate
            return Bad(j, None, None, True)
        return Bad(j, m, None, True)  # the whole body is malformed

    return make


_NOW = time.time()
_far_ts = st.one_of(
    st.floats(max_value=VALIDATION.min_ts, exclude_max=True, allow_infinity=False),
    st.floats(min_value=_NOW + 3 * 86_400, allow_infinity=False),
    st.integers(max_value=int(VALIDATION.min_ts) - 1, min_value=-(2**63)),
    st.integers(min_value=int(_NOW) + 3 * 86_400, max_value=2**63),
    st.sampled_from([_NOW * 1_000, _NOW * 1_000_000, -_NOW]),
    st.datetimes(max_value=datetime(1999, 12, 30), timezones=st.just(UTC)).map(
        lambda d: d.isoformat()
    ),
    st.datetimes(
        min_value=datetime.fromtimestamp(_NOW, UTC).replace(tzinfo=None) + timedelta(days=3),
        timezones=st.just(UTC),
    ).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),  # naive
)
_other_tenants = st.sampled_from(
    ["beta", "ACME", "acme ", "acme\n", "default", "*"]
) | st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True).filter(lambda t: t != "acme")
_contact_ids = st.sampled_from(["jane@example.com", "+1 555 123 4567", "(555) 123-4567"])

_hostile_event: st.SearchStrategy[Callable[..., Bad]] = st.one_of(
    st.builds(
        _nested,
        st.sampled_from(
            ["event_id", "lead_id", "type", "ts", "price", "source", "props", "props.x", "x_extra"]
        ),  # fmt: skip
        st.integers(1, 60) | st.integers(500, 1_500),
        st.sampled_from(["list", "map"]),
    ),
    st.builds(
        lambda place, size, ch: _bad_from_value(
            place, ch * size, (_huge_reason(place), "too_large", "forbidden:tenant")
        ),
        st.sampled_from(PLACES),
        st.integers(VALIDATION.max_string_len + 1, 2_000) | st.integers(60_000, 70_000),
        st.sampled_from(["x", "é", "\U0001f600"]),
    ),
    st.builds(
        lambda place, tok: _tokens(
            place, tok, ("bad_value:" + ("props.x" if place == "props.x" else place),)
        ),
        st.sampled_from(["price", "dwell_s", "ts", "props.x"]),
        st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"]),
    ),
    st.builds(
        lambda place, digits: _tokens(place, b"9" * digits, ("bad_value:",)),
        st.sampled_from(["price", "dwell_s", "ts", "props.x"]),
        st.integers(20, 400),  # props.x: no msgpack form beyond 64 bits
    ),
    st.builds(
        lambda place, lone: _bad_from_value(
            place,
            "a" + lone,
            ("forbidden:tenant",) if place == "tenant" else (_surrogate_reason(place),),
        ),
        st.sampled_from(PLACES),
        _LONE,
    ),  # fmt: skip
    st.builds(
        _utf8,
        st.sampled_from(["event_id", "lead_id", "type", "props.x"]),
        st.sampled_from(_INVALID_UTF8),
    ),  # fmt: skip
    st.builds(
        lambda place, tok: lambda base: Bad(json_with(place, tok, base), None, None, True),
        st.sampled_from(["ts", "price", "props.x"]),
        st.sampled_from(_BAD_JSON_TOKENS),
    ),
    _far_ts.map(lambda ts: _bad_from_value("ts", ts, ("bad_value:ts",))),
    _unknown_types.map(lambda t: _bad_from_value("type", t, ("unknown_type:",))),
    st.sampled_from([f for f in PLACES if f not in ("props.x", "props{}", "x_extra", "extra{}")])
    .flatmap(lambda place: st.tuples(st.just(place), _wrong_value(place)))
    .map(
        lambda pv: _bad_from_value(
            pv[0], pv[1], ("forbidden:tenant",) if pv[0] == "tenant" else (_wrong_reason(pv[0]),)
        )
    ),
    _other_tenants.map(lambda t: _bad_from_value("tenant", t, ("forbidden:tenant",))),
    st.tuples(st.sampled_from([f for f in IDS if f != "visitor_id"]), _contact_ids).map(
        lambda fv: _bad_from_value(fv[0], fv[1], (f"bad_value:{fv[0]} looks like a",))
    ),
    st.integers(2**64, 2**200).map(
        lambda n: _bad_from_value("props.x", n, ("bad_value:props has a huge int",))
    ),
    st.sampled_from([b"1", b"null", b'"x"', b"[]", b"true"]).map(
        lambda raw: lambda base: Bad(raw, msgpack.packb(json.loads(raw)), ("not_a_map:",))
    ),
)


def test_hostile_events_among_valid_ones(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    storm = Storm(gateway)

    @settings(BASE_SETTINGS, max_examples=2_000)
    @given(
        makers=st.lists(_hostile_event, min_size=1, max_size=4),
        fmt=st.sampled_from(["application/json", "text/plain", "application/msgpack"]),
        slots=st.lists(st.integers(0, 8), min_size=1, max_size=3),
    )
    def run(makers: list[Callable[..., Bad]], fmt: str, slots: list[int]) -> None:
        bad = [make(storm.hostile_base()) for make in makers]
        valid = [storm.event() for _ in slots]
        # msgpack when asked for, or when some event has no JSON form (bytes); then the
        # events without a msgpack form (lone surrogates, huge integers) stay out
        as_msgpack = fmt == "application/msgpack" or any(b.json is None for b in bad)
        if as_msgpack and any(b.mp is not None for b in bad):
            bad = [b for b in bad if b.mp is not None]
            items = [b.mp for b in bad if b.mp is not None]
            ctype, enc = "application/msgpack", msgpack.packb
        else:
            bad = [b for b in bad if b.json is not None]
            items = [b.json for b in bad if b.json is not None]
            ctype = "application/json" if fmt == "application/msgpack" else fmt
            enc = lambda v: json.dumps(v).encode()  # noqa: E731
        items = _interleave([enc(v) for v in valid], items, slots)
        body = array_body(items, "msgpack" if ctype == "application/msgpack" else "json")
        r, out = storm.post(body, ctype, valid)
        if r.status_code >= 400:
            assert r.status_code in (400, 413), out
            assert any(b.body_may_fail for b in bad) or out["error"] == "too_large", out
            return
        valid_ids = {str(v["event_id"]) for v in valid}
        hostile = [res for res in out["results"] if res.get("event_id") not in valid_ids]
        assert len(hostile) == len(bad)
        for b, res in zip(bad, hostile, strict=True):
            if b.expect is not None:
                assert res["status"] == "rejected", (res, b)
                assert res["reason"].startswith(b.expect), (res, b.expect)

    run()
    storm.finish(client, prefix)
    assert storm.sent > 2_000


# --------------------------------------------------------------------------- hostile bodies

_event_array = st.lists(
    st.fixed_dictionaries({"event_id": st.text(max_size=5), "type": st.just("search")}),
    max_size=3,
)
_hostile_body = st.one_of(
    st.binary(max_size=1_024).map(lambda b: (b, None)),
    st.tuples(st.floats(0, 1, exclude_max=True), _event_array).map(
        lambda t: ((s := json.dumps(t[1] or [{}]).encode())[: int(t[0] * len(s))], "json")
    ),
    st.binary(min_size=1, max_size=8).map(
        lambda junk: (b'[{"event_id": "x"}]' + (junk.strip() or b"x"), "json")
    ),
    st.integers(10_000, 20_000).map(lambda d: (b"[" * d + b"]" * d, "json")),
    st.integers(1_100, 20_000).map(lambda d: (b"\x91" * d + b"\xc0", "msgpack")),
    st.sampled_from([b"NaN", b"Infinity", b"-1e999", b'{"a": 1}', b'"[]"', b"null", b"7"]).map(
        lambda b: (b, "not_an_array")
    ),
    st.integers(4_301, 50_000).map(lambda d: (b"[" + b"9" * d + b"]", "json")),
    st.sampled_from(_INVALID_UTF8).map(  # (CESU-8 surrogates decode: rejected per event)
        lambda b: (b'[{"event_id": "' + b + b'"}]', None if b.startswith(b"\xed") else "json")
    ),
    st.sampled_from(_INVALID_UTF8).map(lambda b: (b"\x91\x81\xa1a" + _raw_str(b), "msgpack")),
    st.sampled_from([b"\xef\xbb\xbf[]", b"\xff\xfe[\x00]\x00", b"\x00[\x00]", b"[]\x00", b""]).map(
        lambda b: (b, None)
    ),
)


def test_hostile_bodies(gateway: Gateway, client: redis.Redis, prefix: str) -> None:
    storm = Storm(gateway)

    @settings(BASE_SETTINGS, max_examples=500)
    @given(
        body=_hostile_body,
        ctype=st.sampled_from(sorted(JSON_TYPES | MSGPACK_TYPES)),
    )
    def run(body: tuple[bytes, str | None], ctype: str) -> None:
        payload, kind = body
        fmt = "json" if ctype in JSON_TYPES else "msgpack"
        r, out = storm.post(payload, ctype)
        if kind == fmt:  # built to be malformed in this format
            assert r.status_code == 400 and out["error"] == f"malformed_{fmt}", out
        elif kind == "not_an_array" and fmt == "json":
            assert r.status_code == 400 and out["error"] == "not_an_array", out
        else:
            assert r.status_code in (200, 400), out

    run()
    storm.finish(client, prefix)
    assert storm.sent > 500


# --------------------------------------------------------------------------- keys


def _flip(key: str, at: int, ch: str) -> str:
    at %= len(key)
    return key[:at] + (ch if ch != key[at] else chr(ord(ch) ^ 1)) + key[at + 1 :]


_forged = st.one_of(
    st.text(string.printable.strip(), min_size=1, max_size=80),
    st.builds(
        _flip,
        st.sampled_from([ACME, BETA, ACME_TRACKER]),
        st.integers(0, 99),
        st.sampled_from(string.ascii_letters),
    ),  # fmt: skip
    st.sampled_from(
        [
            ACME[:-1],
            ACME + "0",
            ACME.upper(),
            f"{ACME}x",
            key_digest(ACME),
            key_digest(ACME)[:12],
            "lpk_",
            "Bearer",
            "x" * 600,
            ACME * 20,
        ]
    ),  # fmt: skip
)


@dataclass(frozen=True)
class Call:
    """How the key travels, and the status the gateway must answer."""

    how: str  # bearer | header | query | raw
    key: Any
    status: int
    headers: dict[str, Any] = field(default_factory=dict)


_calls = st.one_of(
    st.tuples(_forged, st.sampled_from(["bearer", "header", "query"])).map(
        lambda kh: Call(kh[1], kh[0], 401)
    ),
    st.binary(min_size=1, max_size=40).map(
        lambda b: Call("raw", b"Bearer " + (bytes(c for c in b if c > 0x20) or b"x"), 401)
    ),
    st.sampled_from(["Basic " + ACME, "Bearer", "bearer  ", "Token " + ACME, ACME]).map(
        lambda v: Call("raw", v.encode(), 401)
    ),
    st.sampled_from([ACME, BETA]).map(lambda k: Call("query", k, 401)),  # server key in a URL
    st.sampled_from(
        ["https://evil.example", "null", "", ORIGIN + ".evil.example", ORIGIN.upper()]
    ).map(lambda o: Call("query", ACME_TRACKER, 403, {"Origin": o} if o else {})),  # fmt: skip
    st.sampled_from(["X-Tenant", "X-Leadpulse-Tenant", "Tenant", "X-Forwarded-User"]).map(
        lambda h: Call("bearer", ACME, 200, {h: "beta"})  # a tenant header decides nothing
    ),
    st.just(Call("bearer", BETA, 200, {"X-Tenant": "acme"})),
)


def test_forged_keys_and_tenant_headers(
    make_gateway: Callable[..., Gateway], client: redis.Redis, prefix: str
) -> None:
    gw = make_gateway(api_keys=_keys())
    storm = Storm(gw)

    @settings(BASE_SETTINGS, max_examples=600)
    @given(call=_calls, n=st.integers(1, 3), fmt=st.sampled_from(["json", "msgpack"]))
    def run(call: Call, n: int, fmt: str) -> None:
        valid = [storm.event() for _ in range(n)]
        tenant = "beta" if call.key == BETA else "acme"
        for v in valid[1:]:
            v["tenant"] = tenant  # naming the key's own tenant is fine
        body = json.dumps(valid).encode() if fmt == "json" else msgpack.packb(valid)
        ctype = "application/json" if fmt == "json" else "application/msgpack"
        headers, params = dict(call.headers), None
        if call.how == "bearer":
            headers["Authorization"] = b"Bearer " + call.key.encode("utf-8", "surrogatepass")
        elif call.how == "header":
            headers["X-Api-Key"] = call.key.encode("utf-8", "surrogatepass")
        elif call.how == "query":
            params = {"key": call.key}
        else:
            headers["Authorization"] = call.key
        r, out = storm.post(body, ctype, valid, None, headers, params, tenant)
        assert r.status_code == call.status, (call, out)
        if call.status == 401:
            assert r.headers["www-authenticate"] == "Bearer"
        # the same events naming the other tenant: refused one by one
        other = {**storm.event(), "tenant": "acme" if tenant == "beta" else "beta"}
        if call.status == 200:
            r, out = storm.post(json.dumps([other]).encode(), "application/json", (), None,
                                headers)  # fmt: skip
            assert out["results"][0]["reason"].startswith("forbidden:tenant")

    run()
    storm.finish(client, prefix)
    assert storm.sent > 600
    # tracker keys: from the allowed origin, browsing only
    ok, hand_raise = storm.event(type="search"), storm.event(type="inquiry", source="portal")
    r, out = storm.post(
        json.dumps([ok, hand_raise]).encode(), "text/plain", (), None, {"Origin": ORIGIN},
        {"key": ACME_TRACKER},
    )  # fmt: skip
    assert [res["status"] for res in out["results"]] == ["accepted", "rejected"]
    assert out["results"][1]["reason"].startswith("forbidden:")
    for path in ("/v1/hotlist", "/v1/leads/L1"):
        read = gw.request("GET", path, headers={"X-Api-Key": ACME_TRACKER, "Origin": ORIGIN})
        assert read.status_code == 403 and answer(read)["error"] == "forbidden"


# --------------------------------------------------------------------------- content types, sizes

_media = st.one_of(
    st.sampled_from(sorted(JSON_TYPES | MSGPACK_TYPES)).map(str.upper),
    st.sampled_from(sorted(JSON_TYPES | MSGPACK_TYPES)).map(lambda t: t + "; charset=utf-8"),
    st.sampled_from(
        [
            "application/xml",
            "multipart/form-data; boundary=x",
            "text/html",
            "*/*",
            "application/json-patch+json",
            "application/jsonx",
            "application",
            "application/x-www-form-urlencoded",
            "json",
            "",
        ]
    ),  # fmt: skip
    st.text(string.printable.strip(), max_size=40),
)


def _media_fmt(ctype: str) -> str | None:
    media = ctype.split(";", 1)[0].strip().lower()
    return "json" if media in JSON_TYPES else "msgpack" if media in MSGPACK_TYPES else None


async def _chunks(size: int) -> Any:
    yield b"["
    for _ in range(size // 1_024):
        yield b" " * 1_024
    yield b"]"


def test_content_types_and_sizes(
    make_gateway: Callable[..., Gateway], client: redis.Redis, prefix: str
) -> None:
    gw = make_gateway(max_body_bytes=8_192, max_events=50)
    storm = Storm(gw)

    @settings(BASE_SETTINGS, max_examples=400)
    @given(
        ctype=_media | st.none(),
        size=st.sampled_from(["ok", "declared", "streamed", "many"]),
        over=st.integers(1, 30_000),
    )
    def run(ctype: str | None, size: str, over: int) -> None:
        fmt = _media_fmt(ctype or "")
        valid = [storm.event()]
        enc = msgpack.packb if fmt == "msgpack" else (lambda v: json.dumps(v).encode())
        if size == "ok":
            r, out = storm.post(enc(valid), ctype, valid if fmt else [])
            assert r.status_code == (200 if fmt else 415), out
            return
        if size == "declared":  # a body over the limit, with its Content-Length
            r, out = storm.post(enc(valid) + b" " * (8_192 + over), ctype, valid)
        elif size == "many":
            r, out = storm.post(enc([{}] * (51 + over % 500)), ctype, [])
        else:  # no Content-Length: cut off while streaming
            hdrs = {"Authorization": f"Bearer {ACME}"}
            if ctype is not None:
                hdrs["Content-Type"] = ctype
            r = gw.request("POST", "/v1/events", content=_chunks(8_192 + over), headers=hdrs)
            storm.sent += 1
            out = answer(r)
        expected = 413 if fmt else 415  # the content type is checked before the body is read
        assert r.status_code == expected, out
        if fmt and size == "many":
            assert out["error"] == "too_many_events"

    run()
    storm.finish(client, prefix)
    assert storm.sent > 400


# --------------------------------------------------------------------------- reads


def test_hostile_lead_ids_on_reads(gateway: Gateway) -> None:
    @settings(BASE_SETTINGS, max_examples=200)
    @given(
        lead=st.text(min_size=1, max_size=200)
        | st.binary(min_size=1, max_size=50).map(lambda b: b.decode("latin-1")),
        limit=st.text(max_size=8),
    )
    def run(lead: str, limit: str) -> None:
        path = "/v1/leads/" + quote(lead.encode("utf-8", "surrogatepass"), safe="")
        r = gateway.get(path)
        assert r.status_code in (404, 422), r.text  # never a redirect (no Location from Host)
        answer(r)
        r = gateway.get("/v1/hotlist", params={"limit": limit})
        assert r.status_code in (200, 422), r.text

    run()


# --------------------------------------------------------------------------- webhook signatures

_SECRET = "whsec-test-0123456789abcdef"
_T = 1_767_225_600


def _forgeries(body: bytes) -> st.SearchStrategy[tuple[str, bytes, str, str]]:
    """(secret, body, timestamp header, signature header) that must not verify."""
    good = sign(_SECRET, _T, body)
    return st.one_of(
        st.text(max_size=80).map(lambda sig: (_SECRET, body, str(_T), sig)),  # any text
        st.builds(
            _flip, st.just(good), st.integers(3, 66), st.sampled_from("0123456789abcdef")
        ).map(lambda sig: (_SECRET, body, str(_T), sig)),  # fmt: skip
        st.just((_SECRET, body, str(_T), good.upper())),
        st.just((_SECRET, body, str(_T), good[3:])),  # no "v1="
        st.text(min_size=1, max_size=30).map(lambda s: (s, body, str(_T), good)),  # a guess
        st.binary(min_size=1, max_size=8).map(lambda b: (_SECRET, body + b, str(_T), good)),
        st.integers(301, 10**6).flatmap(  # replayed: a genuine old (or future) signature
            lambda age: st.sampled_from([_T - age, _T + age]).map(
                lambda ts: (_SECRET, body, str(ts), sign(_SECRET, ts, body))
            )
        ),
        st.sampled_from(
            [  # the right instant, spelled otherwise: not what was signed
                f" {_T}",
                f"{_T}\n",
                "1_767_225_600",
                "١٧٦٧٢٢٥٦٠٠",
                f"+{_T}",
                f"{_T}.0",
                "",
                "-1",
                "9" * 400,
                "9" * 5_000,
                "nan",
                "inf",
            ]
        ).map(lambda ts: (_SECRET, body, ts, good)),  # fmt: skip
    )


@settings(BASE_SETTINGS, max_examples=500)
@given(data=st.data(), body=st.binary(max_size=300))
def test_forged_and_replayed_webhook_signatures_are_refused(
    data: st.DataObject, body: bytes
) -> None:
    """What a webhook receiver runs (``webhooks.verify``): False for every forgery, replay
    or malformed header, never an exception; the genuine signature still verifies."""
    assert verify(_SECRET, body, str(_T), sign(_SECRET, _T, body), now=_T)
    secret, forged_body, ts, sig = data.draw(_forgeries(body))
    if (secret, forged_body, ts) == (_SECRET, body, str(_T)) and sig == sign(_SECRET, _T, body):
        return  # (a random text equal to the real signature: not a forgery)
    assert verify(secret, forged_body, ts, sig, now=_T) is False
