"""What to say: the seed-000 script that fits an alert, filled with the lead's home or area.

Pure. One script per alert, picked in this order (the first that fits):

==================  ==================================================================
``valuation``        the lead asked what their home is worth (seller script)
``showing``          the lead asked to see a home, or asked about one
``call_back``        the lead asked for a call
``no_response``      a high score but the agent's contacts went unanswered
``re_engaged``       active again after a long silence
``repeat_viewer``    kept coming back to one home
``saves_in_area``    saved several homes in one area
``check_in``         anything else
==================  ==================================================================

Every script ends with the representation check the NAR Code of Ethics asks for
("are you already working with an agent?"). The wording never tells the lead what
was observed (no "I noticed you viewed it 5 times"): seed 000 says outreach should
feel relevant, not monitored. ``[Name]`` stays for the agent to fill in: leadpulse
never stores names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.delivery.leads import LeadProfile

__all__ = ["REPRESENTATION_CHECK", "Script", "WATCHED_PHRASES", "pick_script"]

REPRESENTATION_CHECK = "And are you already working with an agent, or still exploring your options?"
#: Phrases that would make a lead feel watched; no script may contain them (tested).
WATCHED_PHRASES = (
    "i noticed", "i saw", "you viewed", "you looked", "times", "track you", "our system",
    "you opened", "you clicked", "you visited", "you've been looking", "we see",
)  # fmt: skip

_HIGH_SCORE = 70  # seed 000: P2 floor ("personal touch within 24 h")


@dataclass(frozen=True, slots=True)
class Script:
    kind: str
    text: str
    tip: str  # for the agent, never sent to the lead

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "text": self.text, "tip": self.tip}


def _home(profile: LeadProfile, fallback: str = "the home you asked about") -> str:
    if profile.property_id and profile.area:
        return f"the home at {profile.property_id} in {profile.area}"
    if profile.property_id:
        return f"the home at {profile.property_id}"
    return f"the home in {profile.area}" if profile.area else fallback


def _area(profile: LeadProfile, fallback: str = "your area") -> str:
    return profile.area or fallback


def pick_script(alert: dict[str, Any], profile: LeadProfile) -> Script:
    """The script for this alert (see the module docstring for the order)."""
    triggers = [str(t) for t in alert.get("triggers") or ()]
    etype = str((alert.get("event") or {}).get("type", ""))
    hand = {t.split(":", 1)[1] for t in triggers if t.startswith("hand_raise:")}
    if etype:
        hand |= {etype} & {"valuation_request", "showing_request", "inquiry", "call_request"}
    score = int(alert.get("score_after") or 0)
    text: str
    if "valuation_request" in hand:
        kind, tip = "valuation", "Seller: offer a CMA visit; ask about timing and condition."
        text = (
            f"Hi [Name], thanks for requesting an estimate for your home in "
            f"{_area(profile)}. Online values can be a useful starting point, but they often "
            "miss condition, upgrades, and local buyer demand. Are you thinking about "
            "selling, refinancing, or just tracking your equity?"
        )
    elif hand & {"showing_request", "inquiry"}:
        kind, tip = "showing", "Offer two concrete times; confirm financing where appropriate."
        text = (
            f"Hi [Name], thanks for reaching out about {_home(profile)}. I'd be glad to "
            "set up a time to see it or answer any questions. What works best for you?"
        )
    elif "call_request" in hand:
        kind, tip = "call_back", "Call now; if no answer, leave a voicemail and text."
        text = (
            "Hi [Name], thanks for asking me to call. I'm glad to help with "
            f"{_home(profile, 'your search')}. Is now still a good time to talk?"
        )
    elif profile.unanswered >= 2 and score >= _HIGH_SCORE:
        kind, tip = "no_response", "Keep it short; offer to step back to occasional updates."
        text = (
            "Hi [Name], I don't want to overwhelm you, but I wanted to make sure you have "
            "what you need. Are you looking for help with a specific property, or would "
            "you prefer I just send occasional updates for now?"
        )
    elif any(t == "reactivation" for t in triggers):
        kind, tip = "re_engaged", "Treat as a warm reconnection; requalify timeline."
        text = (
            "Hi [Name], we connected a while back and I wanted to check in. A lot has "
            f"changed in the market in {_area(profile)}. Are you back in research mode, or "
            "has your timeline shifted?"
        )
    elif profile.repeat_views >= 3:
        kind, tip = "repeat_viewer", "Call first; keep the conversation on that home."
        home = (
            f"the home at {profile.repeat_property}" if profile.repeat_property else _home(profile)
        )
        text = (
            f"Hi [Name], I wanted to check whether you're still interested in {home}. Homes "
            "like that are moving quickly in this market. Are you trying to see options in "
            "that area, or is that specific property one you'd like more information on?"
        )
    elif profile.saves >= 2:
        kind, tip = "saves_in_area", "Send two or three similar listings after the call."
        text = (
            f"Hi [Name], I wanted to check whether you're still interested in homes in "
            f"{_area(profile)}. I have a sense of the style and price range you may be drawn "
            "to. Are you hoping to buy soon, or watching the market for later this year?"
        )
    else:
        kind, tip = "check_in", "Ask one open question; offer a clear next step."
        text = (
            f"Hi [Name], I wanted to check whether you're still interested in homes in "
            f"{_area(profile)}. Is there a specific property I can help with, or would "
            "occasional updates be more useful for now?"
        )
    return Script(kind, f"{text} {REPRESENTATION_CHECK}", tip)
