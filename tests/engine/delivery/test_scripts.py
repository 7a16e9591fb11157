"""What to say: the seed-000 scripts, filled in, with the representation check, not creepy."""

from __future__ import annotations

from typing import Any

import pytest

from engine.delivery.leads import LeadProfile
from engine.delivery.scripts import REPRESENTATION_CHECK, WATCHED_PHRASES, pick_script


def _alert(triggers: list[str], etype: str = "property_view", score: int = 80) -> dict[str, Any]:
    return {"triggers": triggers, "event": {"type": etype}, "score_after": score}


CASES = [
    (_alert(["hand_raise:valuation_request"], "valuation_request"),
     LeadProfile(area="Maple Park"), "valuation", "your home in Maple Park"),
    (_alert(["hand_raise:showing_request"], "showing_request"),
     LeadProfile(property_id="12 Elm St", area="02139"), "showing", "12 Elm St in 02139"),
    (_alert(["hand_raise:call_request"], "call_request"), LeadProfile(), "call_back", "call"),
    (_alert(["entered:P1"], score=93), LeadProfile(unanswered=3, area="02139"), "no_response",
     "I don't want to overwhelm you"),
    (_alert(["reactivation"]), LeadProfile(area="Riverside"), "re_engaged", "in Riverside"),
    (_alert(["jump"]), LeadProfile(repeat_views=4, repeat_property="P000581", area="02139"),
     "repeat_viewer", "the home at P000581"),
    (_alert(["entered:P2"]), LeadProfile(saves=3, area="Oak Hill"), "saves_in_area",
     "homes in Oak Hill"),
    (_alert(["jump"]), LeadProfile(), "check_in", "homes in your area"),
]  # fmt: skip


@pytest.mark.parametrize(("alert", "profile", "kind", "filled"), CASES)
def test_each_alert_type_gets_its_script(
    alert: dict[str, Any], profile: LeadProfile, kind: str, filled: str
) -> None:
    script = pick_script(alert, profile)
    assert script.kind == kind
    assert filled in script.text
    assert script.text.endswith(REPRESENTATION_CHECK)
    assert "are you already working with an agent" in script.text
    lowered = script.text.lower()
    assert not [p for p in WATCHED_PHRASES if p in lowered], script.text
    assert "[Name]" in script.text and script.tip


def test_the_kinds_cover_seed_000() -> None:
    kinds = {pick_script(a, p).kind for a, p, _, _ in CASES}
    assert {"repeat_viewer", "saves_in_area", "valuation", "re_engaged", "no_response"} <= kinds


def test_a_hand_raise_outranks_behaviour() -> None:
    p = LeadProfile(repeat_views=5, saves=4, unanswered=3)
    alert = _alert(["hand_raise:valuation_request", "reactivation"], "valuation_request", 99)
    assert pick_script(alert, p).kind == "valuation"
