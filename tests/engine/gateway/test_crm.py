"""CRM events in: Follow Up Boss webhooks, verified, fetched from a local FUB API that
checks credentials like FUB, mapped to contract-v1 events and appended once."""

from __future__ import annotations

import json
import threading
import time
from base64 import b64decode
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis

from engine.gateway.crm import fub_signature
from engine.settings import load_settings
from tests.engine.gateway.conftest import Gateway, free_port, gateway_overrides, stream_events

FUB_KEY = "fka_test_0123456789abcdef"
SYSTEM_KEY = "sys-key-0123456789abcdef0123"
PERSON = {"id": 12, "stage": "Closed", "firstName": "Jo", "emails": [{"value": "jo@x.example"}],
          "phones": [{"value": "(555) 123-4567"}]}  # fmt: skip


class FubApi:
    """Serves ``resources`` (path -> JSON, or an int status) like FUB: Basic auth with the
    API key and the X-System headers, else 401."""

    def __init__(self) -> None:
        self.port = free_port()
        self.resources: dict[str, Any] = {}
        self.asked: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                api.asked.append(self.path)
                auth = self.headers.get("Authorization", "")
                user = b64decode(auth[6:]).decode().split(":")[0] if auth[:6] == "Basic " else ""
                ok = user == FUB_KEY and self.headers.get("X-System-Key") == SYSTEM_KEY
                found = api.resources.get(self.path, 404) if ok else 401
                status = found if isinstance(found, int) else 200
                body = json.dumps(found).encode() if status == 200 else b"{}"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def fub() -> Iterator[FubApi]:
    api = FubApi()
    yield api
    api.server.shutdown()
    api.server.server_close()


@pytest.fixture
def gw(prefix: str, redis_url: str, fub: FubApi) -> Iterator[Gateway]:
    target = {"kind": "fub", "url": fub.url, "secret": FUB_KEY, "system_key": SYSTEM_KEY,
              "receive": True, "lead_prefix": "fub-", "users": {"3": "cy"}}  # fmt: skip
    overrides = gateway_overrides(prefix)
    overrides["delivery"] = {"tenants": {"acme": {"targets": {"fub": target}}}}
    g = Gateway(load_settings(overrides=overrides, environ={}), redis_url)
    yield g
    g.close()


def _post(gw: Gateway, notice: dict[str, Any], key: str = SYSTEM_KEY, path: str = "") -> Any:
    body = json.dumps(notice).encode()
    headers = {"Content-Type": "application/json", "FUB-Signature": fub_signature(key, body)}
    return gw.request("POST", path or "/v1/crm/acme/fub", content=body, headers=headers)


def _notice(fub: FubApi, event: str, path: str, eid: str = "e1") -> dict[str, Any]:
    rid = path.rsplit("/", 1)[-1]
    return {"eventId": eid, "eventCreated": "2026-01-05T16:00:00+00:00", "event": event,
            "resourceIds": [rid], "uri": fub.url + path}  # fmt: skip


def test_a_call_becomes_a_contact_and_an_answered_call_once(
    gw: Gateway, fub: FubApi, client: redis.Redis, prefix: str
) -> None:
    fub.resources["/v1/calls/77"] = {"id": 77, "personId": 12, "userId": 3, "isIncoming": False,
                                     "duration": 95, "outcome": "Interested",
                                     "created": "2026-01-05T16:00:00Z"}  # fmt: skip
    r = _post(gw, _notice(fub, "callsCreated", "/v1/calls/77"))
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    stored = stream_events(client, prefix)
    assert [(e["type"], e["lead_id"]) for e in stored] == [
        ("agent_contact", "fub-12"), ("call_answered", "fub-12")]  # fmt: skip
    assert stored[0]["agent_id"] == "cy" and stored[0]["channel"] == "call"
    again = _post(gw, _notice(fub, "callsCreated", "/v1/calls/77"))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert len(stream_events(client, prefix)) == 2 and len(fub.asked) == 1  # not refetched


@pytest.mark.parametrize(
    ("event", "path", "resource", "expected"),
    [
        ("peopleStageUpdated", "/v1/people/12", PERSON, [("closed", "fub-12")]),
        ("dealsUpdated", "/v1/deals/5",
         {"deals": [{"id": 5, "stageName": "Under Contract", "people": [{"id": 12}]}]},
         [("agreement_signed", "fub-12")]),
        ("appointmentsCreated", "/v1/appointments/9",
         {"id": 9, "invitees": [{"personId": 12}, {"userId": 3}], "start": "2026-01-06T15:00:00Z"},
         [("appointment_set", "fub-12")]),
        ("textMessagesCreated", "/v1/textMessages/4",
         {"id": 4, "personId": 12, "isIncoming": True, "message": "Stop"}, [("reply", "fub-12")]),
        ("peopleStageUpdated", "/v1/people/13", {"id": 13, "stage": "Trash"}, [("lost", "fub-13")]),
    ],
)  # fmt: skip
def test_stages_deals_appointments_and_texts_map_to_contract_events(
    gw: Gateway, fub: FubApi, client: redis.Redis, prefix: str, event: str, path: str,
    resource: Any, expected: list[tuple[str, str]],
) -> None:  # fmt: skip
    fub.resources[path] = resource
    r = _post(gw, _notice(fub, event, path))
    assert r.status_code == 200, r.text
    stored = stream_events(client, prefix)
    assert [(e["type"], e["lead_id"]) for e in stored] == expected
    raw = json.dumps(stored)
    assert "jo@" not in raw and "555" not in raw and "Jo" not in raw  # no contact details
    if event == "textMessagesCreated":
        assert stored[0]["props"] == {"text": "STOP"} and stored[0]["channel"] == "sms"


def test_a_text_with_contact_details_keeps_none_of_it(
    gw: Gateway, fub: FubApi, client: redis.Redis, prefix: str
) -> None:
    fub.resources["/v1/textMessages/8"] = {
        "id": 8,
        "personId": 12,
        "isIncoming": True,
        "message": "call me on (555) 123-4567 or jo@x.example",
    }
    assert _post(gw, _notice(fub, "textMessagesCreated", "/v1/textMessages/8")).status_code == 200
    (stored,) = stream_events(client, prefix)
    assert stored["type"] == "reply" and "props" not in stored


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ("signature", 401, "bad_signature"),
        ("event", 200, "ignored"),
        ("gone", 200, "gone"),
        ("host", 422, "bad_uri"),
        ("tenant", 404, "not_found"),
        ("body", 422, "bad_request"),
    ],
)
def test_bad_webhooks_get_a_clear_status_and_store_nothing(
    gw: Gateway, fub: FubApi, client: redis.Redis, prefix: str, change: str, status: int,
    code: str,
) -> None:  # fmt: skip
    notice = _notice(fub, "callsCreated", "/v1/calls/1")
    key, path = SYSTEM_KEY, ""
    if change == "signature":
        key = "another-system-key-0123456789"
    elif change == "event":
        notice["event"] = "tasksCreated"
    elif change == "host":
        notice["uri"] = "http://169.254.169.254/latest/meta-data"
    elif change == "tenant":
        path = "/v1/crm/beta/fub"
    elif change == "body":
        notice = {"event": "callsCreated"}
    r = _post(gw, notice, key=key, path=path)
    assert r.status_code == status, r.text
    assert code in (r.json().get("error"), r.json().get("status")) and r.json()["detail"]
    assert stream_events(client, prefix) == []


def test_crm_down_is_502_and_its_retry_is_not_a_duplicate(
    gw: Gateway, fub: FubApi, client: redis.Redis, prefix: str
) -> None:
    fub.resources["/v1/calls/3"] = 503
    first = _post(gw, _notice(fub, "callsCreated", "/v1/calls/3", eid="e3"))
    assert first.status_code == 502 and first.json()["error"] == "crm_unavailable"
    fub.resources["/v1/calls/3"] = {"id": 3, "personId": 12, "isIncoming": False, "duration": 5}
    second = _post(gw, _notice(fub, "callsCreated", "/v1/calls/3", eid="e3"))
    assert second.status_code == 200 and second.json()["status"] == "accepted"
    assert [e["type"] for e in stream_events(client, prefix)] == ["agent_contact"]


def test_malformed_and_oversized_bodies_are_refused(gw: Gateway) -> None:
    body = b"{not json"
    headers = {"FUB-Signature": fub_signature(SYSTEM_KEY, body)}
    r = gw.request("POST", "/v1/crm/acme/fub", content=body, headers=headers)
    assert r.status_code == 400 and r.json()["error"] == "malformed_json"
    big = b"x" * (70 * 1024)
    r = gw.request("POST", "/v1/crm/acme/fub", content=big, headers={"FUB-Signature": "00"})
    assert r.status_code == 413


def test_an_agent_call_logged_in_the_crm_stops_the_sla_clock(
    gw: Gateway, fub: FubApi, client: redis.Redis, prefix: str
) -> None:
    from engine.delivery.consumer import DeliveryService
    from tests.engine.delivery.conftest import handle_all, run_engine, send

    now = time.time()
    send(gw.settings, client, [{"event_id": "sr1", "tenant": "acme", "lead_id": "fub-12",
                                "type": "showing_request", "ts": now - 5, "source": "portal",
                                "property_id": "P1"}])  # fmt: skip
    run_engine(gw.settings, client)
    svc = DeliveryService(gw.settings, client)
    (payload,) = handle_all(svc)
    assert svc.clocks.read("acme", "fub-12")["status"] == "open"
    fub.resources["/v1/calls/5"] = {"id": 5, "personId": 12, "userId": 3, "isIncoming": False,
                                    "duration": 8, "created": _iso(now - 1)}  # fmt: skip
    assert _post(gw, _notice(fub, "callsCreated", "/v1/calls/5")).json()["status"] == "accepted"
    svc.drain_events()
    clock = svc.clocks.read("acme", "fub-12")
    assert clock["status"] in ("met", "late") and clock["stopped_by"] == "cy", clock
    assert payload["alert_id"] == clock["alert_id"]


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat()
