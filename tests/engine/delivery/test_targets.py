"""CRM write-back (Follow Up Boss, a generic HTTP CRM), Slack and Teams as delivery targets,
against a local receiver that checks what the service would check; Standard Webhooks
headers on the signed webhook; ``Retry-After`` in both forms."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from base64 import b64decode, b64encode
from email.utils import formatdate
from typing import Any

import pytest

from engine.delivery.consumer import DeliveryService, run_in_thread
from engine.delivery.target_settings import TargetSettings
from engine.delivery.targets import Values, render, values_of
from engine.delivery.webhooks import _retry_after, standard_signature
from engine.errors import ConfigError
from tests.engine.delivery.conftest import (
    SECRET,
    Receiver,
    free_port,
    run_engine,
    send,
    tenant_config,
    wait_for,
)
from tests.engine.delivery.crm_receiver import (
    FUB_KEY,
    SYSTEM_KEY,
    CrmReceiver,
    slack_problem,
    teams_problem,
)


@pytest.fixture
def crm() -> Any:
    r = CrmReceiver(free_port())
    r.start()
    yield r
    r.stop()


def _hand_raises(n: int, start: int = 0, lead: str = "{i}") -> list[dict[str, Any]]:
    now = time.time()
    return [
        {"event_id": f"tr{i}", "lead_id": lead.format(i=i), "type": "showing_request",
         "ts": now - 1, "property_id": f"P{i}", "area": "02139", "side": "buyer",
         "source": "portal", "props": {"address": f"{i} Elm St"}}
        for i in range(start, start + n)
    ]  # fmt: skip


def _run(settings: Any, client: Any, until: Any) -> DeliveryService:
    run_engine(settings, client)
    svc = DeliveryService(settings, client)
    stop = threading.Event()
    thread = run_in_thread(svc, stop)
    try:
        wait_for(until, timeout=10)
        wait_for(lambda: int(client.xpending(svc.names.alerts, "delivery")["pending"]) == 0)
    finally:
        stop.set()
        thread.join(10)
    return svc


def _fub(url: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "fub", "url": url, "secret": FUB_KEY, "system_key": SYSTEM_KEY, **extra}


def test_fub_write_back_reaches_the_crm_as_it_expects(
    client: Any, make_settings: Any, crm: CrmReceiver
) -> None:
    tenant = tenant_config(targets={"fub": _fub(crm.url)})
    settings = make_settings(delivery={"tenants": {"default": tenant}, "tick_ms": 50})
    send(settings, client, _hand_raises(2, start=41))
    svc = _run(settings, client, lambda: len(crm.accepted()) >= 2)
    paths = sorted(h.path for h in crm.accepted())
    assert paths == ["/v1/people/41", "/v1/people/42"]
    hit = crm.accepted()[0]
    body = hit.json()
    assert set(body) == {"customLeadpulseScore", "customLeadpulseBucket", "customLeadpulseReason"}
    assert isinstance(body["customLeadpulseScore"], int | float)
    assert body["customLeadpulseBucket"] in ("P1", "P2", "P3", "P4", "P5")
    assert "@" not in hit.body.decode() and "Elm" not in hit.body.decode()  # ids and scores
    alert_id = hit.headers["x-leadpulse-alert-id"]
    (receipt,) = [r for r in svc.receipts.read(alert_id) if r["target"] == "fub:fub"]
    assert receipt["status"] == "delivered" and receipt["url"].endswith(hit.path)


def test_429_with_retry_after_as_seconds_and_as_a_date_is_waited_out(
    client: Any, make_settings: Any, crm: CrmReceiver
) -> None:
    crm.script = [
        (429, {"Retry-After": "1"}),
        (429, {"Retry-After": formatdate(time.time() + 4, usegmt=True)}),
    ]
    tenant = tenant_config(targets={"fub": _fub(crm.url)})
    settings = make_settings(
        delivery={"tenants": {"default": tenant}, "tick_ms": 50, "backoff_base_s": 0.01,
                  "backoff_cap_s": 5}
    )  # fmt: skip
    send(settings, client, _hand_raises(1, start=7))
    _run(settings, client, lambda: len(crm.accepted()) >= 1)
    statuses = [h.status for h in crm.hits]
    assert statuses == [429, 429, 200]
    gaps = [b.at - a.at for a, b in zip(crm.hits, crm.hits[1:], strict=False)]
    assert gaps[0] >= 0.9  # waited the seconds given, not the 10 ms backoff
    assert gaps[1] >= 1.0  # an HTTP date (4 s after the test began) was waited for


def test_retry_after_parses_seconds_and_http_dates() -> None:
    now = 1_767_607_200.0
    assert _retry_after("8", now) == 8.0
    assert _retry_after(formatdate(now + 30, usegmt=True), now) == pytest.approx(30, abs=1)
    assert _retry_after(formatdate(now - 30, usegmt=True), now) == 0.0
    assert _retry_after("soon", now) is None and _retry_after("", now) is None


def test_generic_crm_gets_its_method_auth_url_and_body_templates(
    client: Any, make_settings: Any, crm: CrmReceiver
) -> None:
    def problem(method: str, path: str, h: dict[str, str], body: bytes) -> str:
        if (
            h.get("authorization") != "Bearer tok-0123456789"
            or h.get("x-tenant") != "acme-tok-0123456789"
        ):
            return "401 bad token"
        return "" if method == "PATCH" and path.startswith("/api/leads/crm-") else "404 no"

    crm.check = problem
    target = {
        "kind": "http", "method": "PATCH", "url": crm.url + "/api/leads/{crm_id}?src=lp",
        "auth": "bearer", "secret": "tok-0123456789", "lead_prefix": "",
        "headers": {"X-Tenant": "acme-{secret}"},
        "body": {"lead": {"score": "{score}", "label": "{bucket_label}"}, "note": "lp {bucket}"},
    }  # fmt: skip
    tenant = tenant_config(targets={"mycrm": target})
    settings = make_settings(delivery={"tenants": {"default": tenant}, "tick_ms": 50})
    send(settings, client, _hand_raises(1, start=3, lead="crm-{i}"))
    _run(settings, client, lambda: len(crm.accepted()) >= 1)
    (hit,) = crm.accepted()
    assert hit.path == "/api/leads/crm-3?src=lp"
    body = hit.json()
    assert isinstance(body["lead"]["score"], int | float) and body["note"].startswith("lp P")


def test_slack_and_teams_messages_say_who_why_what_and_by_when(
    client: Any, make_settings: Any, crm: CrmReceiver
) -> None:
    crm.check = lambda m, p, h, b: (
        slack_problem(m, p, h, b) if "slack" in p else teams_problem(m, p, h, b)
    )
    page = "https://leads.example/hotlist"
    targets = {
        "slack": {"kind": "slack", "url": crm.url + "/slack/T0/B0/XXSECRET", "page_url": page},
        "teams": {"kind": "teams", "url": crm.url + "/teams/hook", "page_url": page},
    }
    tenant = tenant_config(targets=targets, timezone="America/Chicago")
    opted_out = {"event_id": "oo", "lead_id": "L9", "type": "opt_out", "ts": time.time() - 2,
                 "channel": "call"}  # fmt: skip
    settings = make_settings(delivery={"tenants": {"default": tenant}, "tick_ms": 50})
    send(settings, client, [opted_out] + _hand_raises(1, start=9, lead="L{i}"))
    svc = _run(settings, client, lambda: len(crm.accepted()) >= 2)
    slack = next(h for h in crm.accepted() if "slack" in h.path).json()
    teams = next(h for h in crm.accepted() if "teams" in h.path).json()
    words = slack["text"] + str(slack["blocks"])
    assert "Lead L9" in words and "9 Elm St" in words and "Respond by" in words
    assert "CST" in words or "CDT" in words  # the deadline in the tenant's zone
    facts = {f["title"]: f["value"] for f in teams["attachments"][0]["content"]["body"][1]["facts"]}
    assert facts["First touch"] != "call"  # the lead opted out of calls
    assert "Respond by" in facts and facts["Score"]
    assert teams["attachments"][0]["content"]["actions"][0]["url"].endswith("#lead-L9")
    button = slack["blocks"][-1]["elements"][0]
    assert button["url"].startswith(page) and "#lead-L9" in button["url"]
    alert_id = next(h for h in crm.accepted() if "slack" in h.path).headers["x-leadpulse-alert-id"]
    shown = {r["target"]: r["url"] for r in svc.receipts.read(alert_id)}
    assert "XXSECRET" not in shown["slack:slack"]  # a Slack URL is a secret


def test_signed_webhook_carries_standard_webhooks_headers(
    client: Any, make_settings: Any, receiver: Receiver
) -> None:
    receiver.start()
    tenant = tenant_config(webhook_url=receiver.url, secret=SECRET)
    settings = make_settings(delivery={"tenants": {"default": tenant}, "tick_ms": 50})
    send(settings, client, _hand_raises(1, start=5))
    _run(settings, client, lambda: len(receiver.got) >= 1)
    got = receiver.got[0]
    h = {k.lower(): v for k, v in got.headers.items()}
    assert "x-leadpulse-signature" in h  # today's format is kept
    msg_id, ts, sig = h["webhook-id"], h["webhook-timestamp"], h["webhook-signature"]
    # the Standard Webhooks verifier, as its spec writes it (secret: whsec_ + base64)
    key = b64decode(("whsec_" + b64encode(SECRET.encode()).decode()).removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + got.body, hashlib.sha256).digest()
    assert sig.split(" ")[0] == "v1," + b64encode(mac).decode()
    assert abs(time.time() - int(ts)) < 60 and msg_id == got.json()["delivery_id"]


def test_the_standardwebhooks_library_verifies_our_signature() -> None:
    sw = pytest.importorskip("standardwebhooks")
    body, ts = b'{"alert_id":"a1"}', int(time.time())
    headers = {"webhook-id": "a1", "webhook-timestamp": str(ts),
               "webhook-signature": standard_signature(SECRET, "a1", ts, body)}  # fmt: skip
    sw.Webhook("whsec_" + b64encode(SECRET.encode()).decode()).verify(body, headers)


def test_templates_keep_types_and_never_invent_fields() -> None:
    t = TargetSettings.model_validate({"kind": "http", "url": "https://crm.example/x/{lead_id}"})
    alert = {"lead_id": "a/b", "score_after": 83, "reasons": ["Asked for a showing"],
             "bucket": "P1", "first_touch": "call", "blocked_channels": ["call"]}  # fmt: skip
    v = values_of(alert, t)
    assert isinstance(v, Values) and v.first_touch == ""  # a blocked channel is never offered
    assert render({"s": "{score}", "t": "score {score}", "u": "{nope}"}, v) == {
        "s": 83, "t": "score 83", "u": "{nope}"}  # fmt: skip
    assert render("https://crm.example/x/{lead_id}", v, quote_values=True).endswith("/x/a%2Fb")


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ({"kind": "slack"}, "needs its url"),
        ({"kind": "fub"}, "API key"),
        ({"kind": "http", "url": "https://x.example", "auth": "bearer"}, "needs the secret"),
        ({"kind": "http", "url": "ftp://x"}, "http"),
        ({"kind": "fub", "secret": "k", "receive": True}, "system_key"),
        ({"kind": "fub", "secret": "k", "stages": {"Won": "sold"}}, "allowed"),
    ],
)
def test_bad_target_settings_are_refused_with_the_reason(
    make_settings: Any, target: dict[str, Any], words: str
) -> None:
    with pytest.raises(ConfigError) as err:
        make_settings(delivery={"tenants": {"acme": {"targets": {"t1": target}}}})
    assert words in str(err.value) and "targets.t1" in str(err.value)


def _steps(settings: Any, client: Any, lead: str, steps: list[list[str]]) -> None:
    """Each step's events through the engine as their own batch (one bucket each)."""
    now = time.time() - 60
    for n, types in enumerate(steps):
        events = [{"event_id": f"s{lead}-{n}-{i}", "lead_id": lead, "type": t,
                   "ts": now + n * 10 + i, "property_id": "P1"}
                  for i, t in enumerate(types)]  # fmt: skip
        send(settings, client, events)
        run_engine(settings, client)


def test_a_bucket_change_without_an_alert_is_written_back_once_drops_included(
    client: Any, make_settings: Any
) -> None:
    tenant = tenant_config(
        targets={"fub": _fub("https://fub.example"), "slack": {"kind": "slack",
                                                                "url": "https://hooks.example/s"}}
    )  # fmt: skip
    settings = make_settings(delivery={"tenants": {"default": tenant}})
    views = ["property_view"] * 3 + ["property_save"]
    _steps(settings, client, "61", [views, ["property_view"], ["not_interested"]])
    svc = DeliveryService(settings, client)
    svc.ensure_group()
    ((kind, changes),) = svc.read_merged(None)
    assert kind == "changes" and [(c.bucket_before, c.bucket) for c in changes] == [
        ("", "P4"),
        ("P4", "P5"),
    ]  # the second view kept P4: no change, nothing written
    jobs = [j for _, js in svc.handle_changes(changes) for j in js]
    assert [j.target for j in jobs] == ["fub:fub", "fub:fub"]  # chat gets alerts only
    assert [json.loads(j.body)["customLeadpulseBucket"] for j in jobs] == ["P4", "P5"]
    assert jobs[0].method == "PUT" and jobs[0].url.endswith("/v1/people/61")
    assert len({j.delivery_id for j in jobs}) == 2  # lead + bucket + entry id: its own key
    assert svc.read_merged(None) == []  # each change once (acknowledged after delivery)


def test_a_change_the_batch_alert_already_writes_is_not_written_twice() -> None:
    from engine.delivery.targets import BucketChange, TargetJobs

    change = BucketChange(
        entry_id="1-0", tenant="t", lead_id="42", bucket_before="P3", by_before="score",
        bucket="P1", bucket_by="hand_raise", score=64, probability=0.64,
        top_reason="asked to see a home", ts=1.0, alert_id="a1", emit_ms=1000, after="1-0",
    )  # fmt: skip
    both = TargetSettings.model_validate(_fub("https://fub.example"))
    only = TargetSettings.model_validate({**_fub("https://fub.example"), "on": ["bucket"]})
    jobs = TargetJobs()
    assert jobs.change_jobs(change, {"fub": both}, alert_sent=True) == []
    assert [j.target for j in jobs.change_jobs(change, {"fub": only}, alert_sent=True)] == [
        "fub:fub"]  # fmt: skip
    (job,) = jobs.change_jobs(change, {"fub": both}, alert_sent=False)  # the alert was skipped
    body = json.loads(job.body)
    assert body == {"customLeadpulseScore": 64, "customLeadpulseBucket": "P1",
                    "customLeadpulseReason": "asked to see a home"}  # fmt: skip
    assert job.order_key == "t/42" and job.delivery_id == change.delivery_id


def test_visitors_and_non_person_ids_are_never_written_to_a_crm() -> None:
    from engine.delivery.targets import TargetJobs

    fub = TargetSettings.model_validate(_fub("https://fub.example"))
    crm = TargetSettings.model_validate({"kind": "http", "url": "https://crm.example/{lead_id}"})
    base = {"alert_id": "a1", "delivery_id": "a1", "ingest_ms": 0, "order_key": "t/x"}
    jobs = TargetJobs()
    for lead, expected in (("~v9", []), ("L1042", ["http:crm"]), ("1042", ["http:crm", "fub:fub"])):
        got = jobs.jobs({"tenant": "t", "lead_id": lead, "type": "alert", "bucket": "P2"},
                        {"fub": fub, "crm": crm}, base)  # fmt: skip
        assert [j.target for j in got] == expected, lead
