"""``GET /v1/leads/{id}`` shows the lead's follow-up plan: plan, step, next due time, why."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from engine.app import build_parts
from engine.settings import load_settings
from tests.engine.gateway.conftest import Gateway

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z (19:00 in New York)


def test_the_lead_view_shows_plan_step_due_and_why(
    make_gateway: Callable[..., Gateway], client: Any, prefix: str
) -> None:
    gw = make_gateway()
    engine = load_settings(overrides={"redis": {"key_prefix": prefix},
                                      "streams": {"partitions": 1},
                                      "cadence": {"enabled": True}}, environ={})  # fmt: skip
    parts = build_parts(engine, client)
    parts.processor._cadence.clock = lambda: T0 + 1
    event = {"event_id": "e1", "lead_id": "L42", "type": "showing_request", "ts": T0,
             "tenant": "acme"}  # fmt: skip
    parts.processor.process_retrying([(0, b"1-0", {b"e": msgpack.packb(event)})])
    plan = gw.get("/v1/leads/L42").json()["cadence"]
    assert plan["plan"] == "cadence_14d" and plan["status"] == "active"
    assert plan["step"] == 2 and plan["steps"] == 29
    assert plan["next_step"]["channel"] == "voicemail"
    assert plan["next_due_ts"] == T0 + 600
    assert plan["next_due_local"] == "2025-12-31 19:10 EST"
    assert plan["why"] == "step 2 of 29 sent"
    assert gw.get("/v1/leads/L42").json()["score"]["bucket"] == "P1"
