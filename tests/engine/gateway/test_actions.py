"""The hot list's actions pass the gateway's checks too (issue 16, item 2).

``POST /v1/leads/{id}/claim|ack|contact`` write events: their lead id is held to the
id alphabet and refused if it looks like contact data, their ``note`` is scrubbed like
event props, and an agent key's ``agent_id`` comes from the key. A hostile run through
every writing route leaves no email address or phone number in any Redis key or value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from engine.delivery.keys import DeliveryKeys
from engine.gateway.auth import key_digest
from tests.engine.gateway.conftest import ACME, ACME_TRACKER, BETA, Gateway, ev, stream_events

CY = "lpk_agt_test_acme_cy_0123456789"
KEYS: dict[str, dict[str, Any]] = {
    key_digest(ACME): {"tenant": "acme", "role": "server"},
    key_digest(ACME_TRACKER): {"tenant": "acme", "role": "tracker"},
    key_digest(BETA): {"tenant": "beta", "role": "server"},
    key_digest(CY): {"tenant": "acme", "role": "agent", "agent": "cy"},
}
#: Contact data in the forms an outside probe used: ASCII, non-ASCII, fullwidth.
NOTES = [
    "call jane@example.com or (555) 123-4567",
    "j\u00f6rg@m\u00fcller.de wants a viewing",
    "jane\uff20example\uff0ecom",
    "\uff0b\uff14\uff14 \uff12\uff10 \uff17\uff19\uff14\uff16 \uff10\uff19\uff15\uff18 evenings",
    "mail: zo\u00eb.o\u2019brien@exa\u0301mple.org",
]
#: What must not be anywhere in Redis afterwards (clear text of the notes above).
NEEDLES = [
    "jane", "example.com", "m\u00fcller", "muller", "j\u00f6rg", "123-4567", "5551234567",
    "7946", "\uff20", "o\u2019brien", "xa\u0301mple",
]  # fmt: skip


@pytest.fixture
def gw(make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway(api_keys=KEYS)


def _act(gw: Gateway, lead: str, action: str, body: Any, key: str = ACME) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    return gw.request("POST", f"/v1/leads/{lead}/{action}", json=body, headers=headers)


def _pond(client: redis.Redis, prefix: str, lead: str) -> None:
    state = {"state": "pond", "tenant": "acme", "lead_id": lead}
    client.hset(DeliveryKeys(prefix).assignment("acme", lead), mapping=state)


@pytest.mark.parametrize(
    "lead,words",
    [
        ("jane@example.com", "looks like an email"),
        ("j%C3%B6rg@m%C3%BCller.de", "looks like an email"),
        ("jane%EF%BC%A0example.com", "looks like an email"),
        ("555-123-4567", "looks like a phone number"),
        ("lead%E2%80%8B1", "U+200B"),
        ("lead%E2%80%AE1", "U+202E"),
        ("%EF%BC%AC1", "fullwidth"),
        ("..", "needs a letter or digit"),
        ("~", "needs a letter or digit after"),
        ("lead%201", "a space"),
    ],
)
@pytest.mark.parametrize("action", ["claim", "ack", "contact"])
def test_a_lead_id_outside_the_alphabet_is_refused_before_anything_is_written(
    gw: Gateway, client: redis.Redis, prefix: str, action: str, lead: str, words: str
) -> None:
    r = _act(gw, lead, action, {"agent_id": "cy"})
    if lead == "..":  # the client resolves the dot segment: no such route
        assert r.status_code == 404
    else:
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "bad_request" and words in r.json()["detail"], r.json()
    assert stream_events(client, prefix) == []


@pytest.mark.parametrize("action", ["ack", "contact"])
def test_a_note_is_scrubbed_like_event_props(
    gw: Gateway, client: redis.Redis, prefix: str, action: str
) -> None:
    for i, note in enumerate(NOTES):
        r = _act(gw, f"L{i}", action, {"agent_id": "cy", "note": note})
        assert r.status_code == 202, r.text
    notes = [e["props"]["note"] for e in stream_events(client, prefix)]
    assert len(notes) == len(NOTES)
    assert notes[0].startswith("call [email:") and "[phone:" in notes[0]
    assert notes[1].startswith("[email:") and notes[1].endswith(" wants a viewing")
    assert all("[email:" in n or "[phone:" in n for n in notes), notes


def test_an_agent_key_claims_as_itself_without_naming_itself(
    gw: Gateway, client: redis.Redis, prefix: str
) -> None:
    _pond(client, prefix, "PD")
    r = _act(gw, "PD", "claim", {}, key=CY)
    assert r.status_code == 200, r.text
    assert r.json()["claimed"] is True and r.json()["assignment"]["agent"] == "cy"
    _pond(client, prefix, "PE")
    assert _act(gw, "PE", "ack", {"note": "left a voicemail"}, key=CY).status_code == 202
    # naming another agent is still refused; a server key must still say who
    _pond(client, prefix, "PF")
    assert _act(gw, "PF", "claim", {"agent_id": "dee"}, key=CY).status_code == 403
    assert _act(gw, "PF", "claim", {}, key=ACME).status_code == 422


def test_action_bodies_are_capped_and_hostile_ones_answered_without_a_5xx(gw: Gateway) -> None:
    big = {"agent_id": "cy", "note": "x" * 5_000}
    assert _act(gw, "L1", "ack", big).status_code == 413
    for body in (b"[]", b"{", b'"x"', b'{"agent_id": 7}', b"\xff\xfe", b'{"note": "\\ud800"}'):
        r = gw.request(
            "POST", "/v1/leads/L1/ack", content=body,
            headers={"Authorization": f"Bearer {ACME}", "Content-Type": "application/json"},
        )  # fmt: skip
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
    # no key: still 401 (the guard never lets a request through on its own)
    r = gw.request("POST", "/v1/leads/L1/ack", json={"agent_id": "cy", "note": NOTES[0]})
    assert r.status_code == 401


def _everything(client: redis.Redis, prefix: str) -> bytes:
    """Every key name and value under ``prefix``, concatenated."""
    out = []
    for key in client.scan_iter(match=f"{{{prefix}}}:*", count=1000):
        out.append(key)
        kind = client.type(key).decode()
        if kind == "string":
            out.append(client.get(key) or b"")
        elif kind == "hash":
            out.extend(b for kv in client.hgetall(key).items() for b in kv)
        elif kind == "list":
            out.extend(client.lrange(key, 0, -1))
        elif kind == "set":
            out.extend(client.smembers(key))
        elif kind == "zset":
            out.extend(client.zrange(key, 0, -1))
        elif kind == "stream":
            for _, fields in client.xrange(key):
                out.extend(b for kv in fields.items() for b in kv)
    return b"\n".join(out)


def test_a_hostile_run_leaves_no_contact_data_in_redis(
    gw: Gateway, client: redis.Redis, prefix: str
) -> None:
    _pond(client, prefix, "PD")
    for i, note in enumerate(NOTES):
        _act(gw, f"L{i}", "ack", {"agent_id": "cy", "note": note})
        _act(gw, f"L{i}", "contact", {"agent_id": "cy", "note": note, "channel": "sms"})
        _act(gw, "PD", "ack", {"note": note}, key=CY)
        for lead in ("jane@example.com", "j\u00f6rg@m\u00fcller.de", "jane\uff20example.com"):
            _act(gw, lead, "claim", {"agent_id": "cy", "note": note})
    events = [
        ev("h1", "L1", props={"question": n, "email": "J\u00d6RG\uff20m\u00fcller.de"})
        for n in NOTES[:1]
    ] + [ev(f"h{i + 2}", "L1", props={"note": n}) for i, n in enumerate(NOTES)]
    events += [ev("h9", "jane@example.com"), ev("h10", "j\u00f6rg@m\u00fcller.de")]
    body = gw.post_events(events).json()
    assert body["accepted"] == 1 + len(NOTES) and body["rejected"] == 2
    again = [{**e, "event_id": f"t-{e['event_id']}"} for e in events[:3]]
    assert gw.post_events(again, key=ACME_TRACKER).json()["accepted"] == 3
    dump = _everything(client, prefix).lower()
    assert len(dump) > 1_000
    for needle in NEEDLES:
        assert needle.lower().encode() not in dump, needle
