"""What an agent key may read of tenant-wide feed entries (pure, no I/O)."""

from __future__ import annotations

from engine.delivery.feed import OTHER_AGENT, redact_for_agent


def test_colleagues_names_and_reasons_go_the_viewers_own_stay() -> None:
    taken = {"lead_id": "L1", "state": "assigned", "agent": "dee", "group": "north",
             "reason": "claimed by dee (first to claim)", "offered_to": ["cy", "dee"],
             "missed_by": ["eli"]}  # fmt: skip
    seen = redact_for_agent("assignment", taken, "cy")
    assert seen["agent"] == OTHER_AGENT and seen["reason"] == ""
    assert seen["offered_to"] == ["cy", OTHER_AGENT] and seen["missed_by"] == [OTHER_AGENT]
    assert (seen["lead_id"], seen["state"], seen["group"]) == ("L1", "assigned", "north")
    assert taken["agent"] == "dee"  # the entry itself is not changed
    assert redact_for_agent("assignment", taken, "dee") == {**taken, "offered_to": [
        OTHER_AGENT, "dee"], "missed_by": [OTHER_AGENT]}  # fmt: skip
    clock = {"lead_id": "L1", "agent": "dee", "stopped_by": "dee", "missed_by": "cy,eli"}
    assert redact_for_agent("sla", clock, "cy") == {
        "lead_id": "L1", "agent": OTHER_AGENT, "stopped_by": OTHER_AGENT, "reason": "",
        "missed_by": f"cy,{OTHER_AGENT}"}  # fmt: skip
    pond = {"lead_id": "L2", "state": "pond", "agent": "", "reason": "to the pond"}
    assert redact_for_agent("assignment", pond, "cy") == pond
    alert = {"alert_id": "a1", "agent": "dee"}
    assert redact_for_agent("alert", alert, "cy") == alert  # sent to its audience only
