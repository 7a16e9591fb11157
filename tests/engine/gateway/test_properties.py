"""Hypothesis: no byte string makes the gateway fail, and JSON and msgpack bodies agree."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.engine.gateway.conftest import ACME, BETA, T0, Gateway, encode

_TYPES = ["application/json", "application/msgpack", "text/plain", "application/x-msgpack"]
_SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False), _text,
)  # fmt: skip
_json = st.recursive(
    _scalar,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(_text, kids, max_size=4),
    max_leaves=12,
)
_event = st.fixed_dictionaries(
    {"event_id": st.sampled_from(["e1", "e2", "e3", "", 7]) | _text},
    optional={
        "lead_id": st.sampled_from(["L1", "L2", "jane@example.com"]) | _scalar,
        "visitor_id": st.sampled_from(["v1", "v2"]) | _scalar,
        "type": st.sampled_from(["property_view", "search", "identify", "nope"]) | _scalar,
        "ts": st.sampled_from([T0, T0 + 3600, "2026-01-02T03:04:05+00:00", "2026-01-02"]) | _scalar,
        "price": st.integers(-10, 10**11) | _scalar,
        "source": st.sampled_from(["portal", "bogus"]),
        "props": st.dictionaries(
            st.sampled_from(["email", "phone", "note", "x"]) | _text,
            st.sampled_from(["A@B.co", "+1 555 123 4567", "hi"]) | _json,
            max_size=4,
        )
        | _json,
        "extra": _json,
    },
)
_body = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda v: json.dumps(v).encode(), _json),
    st.builds(lambda v: msgpack.packb(v, use_bin_type=True), _json),
    st.builds(lambda v: json.dumps(v).encode(), st.lists(_event, max_size=5)),
    st.builds(lambda v: msgpack.packb(v, use_bin_type=True), st.lists(_event, max_size=5)),
)


def _check_answer(r: Any) -> None:
    assert r.status_code < 500, r.text
    body = r.json()
    if r.status_code >= 400:
        assert body["error"] and body["detail"]
        return
    assert len(body["results"]) == body["accepted"] + body["duplicate"] + body["rejected"]
    for i, res in enumerate(body["results"]):
        assert res["index"] == i
        assert res["status"] in ("accepted", "duplicate", "rejected")
        if res["status"] == "rejected":
            assert res["reason"]


@_SETTINGS
@given(body=_body, content_type=st.sampled_from(_TYPES))
def test_any_bytes_get_a_2xx_or_4xx_with_a_reason(
    gateway: Gateway, body: bytes, content_type: str
) -> None:
    _check_answer(gateway.post_raw(body, content_type))


@_SETTINGS
@given(events=st.lists(_event, max_size=6))
def test_json_and_msgpack_bodies_give_identical_results(
    gateway: Gateway, events: list[dict[str, Any]]
) -> None:
    # the same events from two tenants' keys: both see the same history of event ids
    as_json = gateway.post_events(events, key=ACME, fmt="json")
    as_msgpack = gateway.post_events(events, key=BETA, fmt="msgpack")
    _check_answer(as_json)
    assert as_json.status_code == as_msgpack.status_code
    assert as_json.json() == as_msgpack.json()


def test_json_and_msgpack_store_the_same_events(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    events = [
        {"event_id": "s1", "lead_id": "L1", "type": "property_view", "ts": T0, "price": 1.5,
         "props": {"email": "A@B.co", "n": [1, 2.5, {"k": None}], "t": True}},
        {"event_id": "s2", "visitor_id": "v1", "type": "search", "ts": "2026-01-01T00:00:00Z",
         "unknown_field": "kept in props"},
    ]  # fmt: skip
    assert gateway.post_events(events, key=ACME, fmt="json").json()["accepted"] == 2
    body, ctype = encode(events, "msgpack")
    assert gateway.post_raw(body, ctype, key=BETA).json()["accepted"] == 2
    stored: dict[str, list[Any]] = {"acme": [], "beta": []}
    for p in range(4):
        for _, fields in client.xrange(f"{{{prefix}}}:events:{p}"):
            e = msgpack.unpackb(fields[b"e"], raw=False)
            tenant = e.pop("tenant")
            e["props"].pop("email_hash", None)  # keyed per tenant: differs by design
            stored[tenant].append(e)
    key = lambda e: e["event_id"]  # noqa: E731
    assert sorted(stored["acme"], key=key) == sorted(stored["beta"], key=key)
    assert len(stored["acme"]) == 2
