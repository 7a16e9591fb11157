"""Agent keys never see a colleague's name (issue 16 item 3): SSE ``escalated`` and
``assignment`` entries, pond rows on the board, ``GET /v1/leads/{id}/delivery``.

Lead ``L1`` goes round robin to ben, ben misses its SLA, it goes to the pond; ``P1`` is a
pond lead from the start and misses there. cy (an agent key, via the ``current_agent``
dependency the gateway overrides) may see both, as pond leads, but never "ben".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from engine.delivery.consumer import DeliveryService
from engine.delivery.deps import current_agent
from engine.delivery.feed import OTHER_AGENT, redact_for_agent, redact_lead, scrub
from tests.engine.delivery.conftest import Clock, Server, business_now, make_app
from tests.engine.delivery.test_sla import _alert
from tests.engine.delivery.test_web import _sse

BEN = re.compile(r"(?<![A-Za-z0-9_.-])ben(?![A-Za-z0-9_.-])")


@pytest.fixture
def missed(make_settings: Any, client: Any) -> Iterator[tuple[Any, DeliveryService, str, str]]:
    cfg = {"groups": {"listing": ["ben"], "north": ["cy", "dee"]},
           "rules": [{"group": "listing", "areas": ["02139"]}], "default_group": "pond",
           "escalation": ["pond"]}  # fmt: skip
    settings = make_settings(delivery={"sse_keepalive_s": 0.3, "tenants": {"default": cfg}})
    now = business_now()
    clock = Clock(now)
    svc = DeliveryService(settings, client, clock=clock)
    first = svc.handle(_alert("L1", now)).payload
    assert first is not None and first["assignment"]["agent"] == "ben"
    pond = svc.handle(
        {
            **_alert("P1", now),
            "event": {"event_id": "evP1", "type": "inquiry", "ts": now, "area": "99999"},
        }
    ).payload
    assert pond is not None and pond["assignment"]["state"] == "pond"
    clock.advance(301)
    svc.tick()  # ben missed L1: to the pond; P1 missed in the pond (no step left)
    a = svc.assigner.read("default", "L1")
    assert a is not None and a.state == "pond" and a.reason.startswith("SLA missed by ben")
    with Server(make_app(settings, client)) as everyone:
        agent_app = make_app(settings, client)
        agent_app.dependency_overrides[current_agent] = lambda: "cy"
        with Server(agent_app) as cy:
            yield settings, svc, everyone.url, cy.url


def test_sse_escalated_and_assignment_entries_hide_colleagues(
    missed: tuple[Any, DeliveryService, str, str],
) -> None:
    _, _, everyone, cy = missed
    seen = _sse(f"{cy}/v1/alerts/stream?last_event_id=0-0", want=4)
    kinds = [e["event"] for e in seen]
    assert {"escalated", "assignment"} <= set(kinds), kinds
    for e in seen:
        text = json.dumps(e["data"])
        assert not BEN.search(text), text
    esc = next(e["data"] for e in seen if e["event"] == "escalated")
    assert esc["escalation"]["missed_by"] == OTHER_AGENT
    assert esc["assignment"]["missed_by"] == [OTHER_AGENT]
    assert esc["assignment"]["reason"].startswith(f"SLA missed by {OTHER_AGENT}")
    asg = next(e["data"] for e in seen if e["event"] == "assignment")
    assert asg["reason"].startswith(f"SLA missed by {OTHER_AGENT}")
    full = _sse(f"{everyone}/v1/alerts/stream?last_event_id=0-0", want=4)
    assert any(BEN.search(json.dumps(e["data"])) for e in full)  # a server key sees all


def test_a_pond_miss_shows_no_one_as_having_missed_it(
    missed: tuple[Any, DeliveryService, str, str], client: Any
) -> None:
    _, svc, _, cy = missed
    board = httpx.get(f"{cy}/v1/board").json()
    rows = {r["lead_id"]: r for rows in board["buckets"].values() for r in rows}
    assert rows["P1"]["assignment"]["state"] == "pond"
    assert rows["P1"]["assignment"]["missed_by"] == []
    clock = svc.clocks.read("default", "P1")
    assert clock is not None and clock["missed_by"] == []
    lead = httpx.get(f"{cy}/v1/leads/P1/delivery").json()
    assert lead["clock"]["missed_by"] == [] and OTHER_AGENT not in json.dumps(lead)


def test_pond_rows_on_the_board_hide_who_missed_them(
    missed: tuple[Any, DeliveryService, str, str],
) -> None:
    _, _, everyone, cy = missed
    board = httpx.get(f"{cy}/v1/board").json()
    assert board["agent"] == "cy"
    rows = {r["lead_id"]: r for rows in board["buckets"].values() for r in rows}
    assert rows["L1"]["assignment"]["state"] == "pond"
    assert rows["L1"]["assignment"]["missed_by"] == [OTHER_AGENT]
    assert not BEN.search(json.dumps(board)), json.dumps(board)
    assert BEN.search(json.dumps(httpx.get(f"{everyone}/v1/board").json()))


def test_a_leads_delivery_read_is_redacted_for_an_agent_key(
    missed: tuple[Any, DeliveryService, str, str],
) -> None:
    _, _, everyone, cy = missed
    seen = httpx.get(f"{cy}/v1/leads/L1/delivery")
    assert seen.status_code == 200
    body = seen.json()
    assert not BEN.search(json.dumps(body)), json.dumps(body)
    assert body["clock"]["missed_by"] == [OTHER_AGENT]
    assert len(body["history"]) == 2
    assert body["alert"]["assignment"]["reason"].startswith(f"SLA missed by {OTHER_AGENT}")
    assert BEN.search(json.dumps(httpx.get(f"{everyone}/v1/leads/L1/delivery").json()))


def test_scrub_replaces_whole_ids_only() -> None:
    names = {"ben", "cy", "ben.k"}
    assert scrub("SLA missed by ben: round robin -> cy", names, "cy") == (
        f"SLA missed by {OTHER_AGENT}: round robin -> cy"
    )
    assert scrub("benefit of ben.k and bent", names, "cy") == f"benefit of {OTHER_AGENT} and bent"
    assert scrub("", names, "cy") == ""


def test_redaction_never_crashes_on_odd_shapes() -> None:
    shapes: list[dict[str, Any]] = [{}, {"assignment": None}, {"missed_by": 3}, {"escalation": {}},
              {"history": "x"}, {"clock": {"missed_by": None, "agent": 5}}]  # fmt: skip
    for data in shapes:
        for kind in ("alert", "escalated", "assignment", "sla"):
            assert isinstance(redact_for_agent(kind, data, "cy"), dict)
        assert isinstance(redact_lead(data, "cy"), dict)
