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

The home is named by what the event carried: its address, else its listing title
(``alert.event.address`` / ``.title``, from the event's ``props``), else "the home you
viewed" - never a bare property id like "P77", which means nothing to a lead. Naming
the home is relevant; saying how often or when the lead looked is monitoring
(:data:`WATCHED_PHRASES`).

The agent-facing texts live here too (pure, never raising on odd input):
:func:`bucket_label` ("P1 · hand-raise" when a rule, not the score, set the bucket),
:func:`why_now` (what the lead just did, naming the home), :func:`local_time` (a time
with its date in the tenant's time zone) and :func:`alert_text` (one line for a
webhook, the page or a terminal).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from engine.delivery.leads import LeadProfile

__all__ = [
    "FALLBACK_HOME", "REPRESENTATION_CHECK", "Script", "WATCHED_PHRASES", "alert_text",
    "bucket_label", "home_name", "local_time", "pick_script", "why_now",
]  # fmt: skip

REPRESENTATION_CHECK = "And are you already working with an agent, or still exploring your options?"
#: Phrases that would make a lead feel watched; no script may contain them (tested).
#: ("the home you viewed" names a home, as the lead would; "you viewed it 5 times",
#: "you've viewed", "you looked at" say that we watched.)
WATCHED_PHRASES = (
    "i noticed", "i saw", "you viewed it", "you've viewed", "you have viewed", "viewed it",
    "you looked", "times", "track you", "our system", "you opened", "you clicked",
    "you visited", "you've been looking", "we see",
)  # fmt: skip
#: The home when the event named none (no address, no title).
FALLBACK_HOME = "the home you viewed"
_MAX_NAME = 80
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")

_HIGH_SCORE = 70  # seed 000: P2 floor ("personal touch within 24 h")


@dataclass(frozen=True, slots=True)
class Script:
    kind: str
    text: str
    tip: str  # for the agent, never sent to the lead

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "text": self.text, "tip": self.tip}


def _clean(value: Any) -> str:
    """A caller's string fit for a sentence: no control or bidi characters, one line,
    at most ``_MAX_NAME`` characters (cut at a word); "" for anything but a string."""
    if not isinstance(value, str):
        return ""
    text = " ".join(_CONTROL.sub(" ", value).split())
    if len(text) > _MAX_NAME:
        text = text[:_MAX_NAME].rsplit(" ", 1)[0].rstrip(",;:-") + "…"
    return text


def home_name(event: Any, profile: LeadProfile | None = None) -> str:
    """The home as a lead would name it: the event's address, else its listing title,
    else ``""``. Never a property id (an "address" that is just the id does not count)."""
    ev = _map(event)
    pid = str(ev.get("property_id") or (profile.property_id if profile else "")).casefold()
    candidates = [ev.get("address"), ev.get("title")]
    if profile is not None:
        candidates += [profile.address, profile.title]
    for value in candidates:
        name = _clean(value)
        if name and name.casefold() != pid:
            return name
    return ""


def _home(profile: LeadProfile, event: Any, fallback: str = FALLBACK_HOME) -> str:
    """The home of a script: "12 Elm St" (in the area), else "the home you viewed" when
    the event was about a home, else ``fallback``."""
    name = home_name(event, profile)
    has_home = bool(name or profile.property_id or _map(event).get("property_id"))
    if not name:
        return FALLBACK_HOME if has_home else fallback
    if profile.area and profile.area.casefold() not in name.casefold():
        return f"{name} in {profile.area}"
    return name


def _area(profile: LeadProfile, fallback: str = "your area") -> str:
    return profile.area or fallback


def pick_script(alert: dict[str, Any], profile: LeadProfile) -> Script:
    """The script for this alert (see the module docstring for the order)."""
    triggers = [str(t) for t in _seq(alert.get("triggers"))]
    event = _map(alert.get("event"))
    etype = str(event.get("type", ""))
    hand = {t.split(":", 1)[1] for t in triggers if t.startswith("hand_raise:")}
    if etype:
        hand |= {etype} & {"valuation_request", "showing_request", "inquiry", "call_request"}
    kind = _kind(hand, triggers, profile, _int(alert.get("score_after")))
    tip, text = _SCRIPTS[kind](profile, event)
    return Script(kind, f"{text} {REPRESENTATION_CHECK}", tip)


def _kind(hand: set[str], triggers: list[str], profile: LeadProfile, score: int) -> str:
    """Which script fits: hand-raises first, then the lead's pattern (module docstring)."""
    if "valuation_request" in hand:
        return "valuation"
    if hand & {"showing_request", "inquiry"}:
        return "showing"
    if "call_request" in hand:
        return "call_back"
    if profile.unanswered >= 2 and score >= _HIGH_SCORE:
        return "no_response"
    if "reactivation" in triggers:
        return "re_engaged"
    if profile.repeat_views >= 3:
        return "repeat_viewer"
    if profile.saves >= 2:
        return "saves_in_area"
    return "check_in"


def _valuation(profile: LeadProfile, event: dict[str, Any]) -> tuple[str, str]:
    return "Seller: offer a CMA visit; ask about timing and condition.", (
        f"Hi [Name], thanks for requesting an estimate for your home in "
        f"{_area(profile)}. Online values can be a useful starting point, but they often "
        "miss condition, upgrades, and local buyer demand. Are you thinking about "
        "selling, refinancing, or just tracking your equity?"
    )


def _showing(profile: LeadProfile, event: dict[str, Any]) -> tuple[str, str]:
    return "Offer two concrete times; confirm financing where appropriate.", (
        f"Hi [Name], thanks for reaching out about {_home(profile, event)}. I'd be glad to "
        "set up a time to see it or answer any questions. What works best for you?"
    )


def _call_back(profile: LeadProfile, event: dict[str, Any]) -> tuple[str, str]:
    return "Call now; if no answer, leave a voicemail and text.", (
        "Hi [Name], thanks for asking me to call. I'm glad to help with "
        f"{_home(profile, event, 'your search')}. Is now still a good time to talk?"
    )


def _no_response(profile: LeadProfile, event: dict[str, Any]) -> tuple[str, str]:
    return "Keep it short; offer to step back to occasional updates.", (
        "Hi [Name], I don't want to overwhelm you, but I wanted to make sure you have "
        "what you need. Are you looking for help with a specific property, or would "
        "you prefer I just send occasional updates for now?"
    )


def _re_engaged(profile: LeadProfile, event: dict[str, Any]) -> tuple[str, str]:
    return "Treat as a warm reconnection; requalify timeline.", (
        "Hi [Name], we connected a while back and I wanted to check in. A lot has "
        f"changed in the market in {_area(profile)}. Are you back in research mode, or "
        "has your timeline shifted?"
    )


def _repeat_viewer(profile: LeadProfile, event: dict[str, Any]) -> tuple[str, str]:
    same = profile.repeat_property in ("", str(event.get("property_id") or ""))
    home = _home(profile, event) if same else FALLBACK_HOME
    return "Call first; keep the conversation on that home.", (
        f"Hi [Name], I wanted to check whether you're still interested in {home}. Homes "
        "like that are moving quickly in this market. Are you trying to see options in "
        "that area, or is that specific property one you'd like more information on?"
    )


def _saves_in_area(profile: LeadProfile, event: dict[str, Any]) -> tuple[str, str]:
    return "Send two or three similar listings after the call.", (
        f"Hi [Name], I wanted to check whether you're still interested in homes in "
        f"{_area(profile)}. I have a sense of the style and price range you may be drawn "
        "to. Are you hoping to buy soon, or watching the market for later this year?"
    )


def _check_in(profile: LeadProfile, event: dict[str, Any]) -> tuple[str, str]:
    return "Ask one open question; offer a clear next step.", (
        f"Hi [Name], I wanted to check whether you're still interested in homes in "
        f"{_area(profile)}. Is there a specific property I can help with, or would "
        "occasional updates be more useful for now?"
    )


_SCRIPTS: dict[str, Callable[[LeadProfile, dict[str, Any]], tuple[str, str]]] = {
    "valuation": _valuation,
    "showing": _showing,
    "call_back": _call_back,
    "no_response": _no_response,
    "re_engaged": _re_engaged,
    "repeat_viewer": _repeat_viewer,
    "saves_in_area": _saves_in_area,
    "check_in": _check_in,
}


def _map(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _seq(x: Any) -> list[Any]:
    return list(x) if isinstance(x, list | tuple) else []


def _int(x: Any) -> int:
    try:
        return int(float(x)) if not isinstance(x, bool) else 0
    except (TypeError, ValueError, OverflowError):
        return 0


# -- agent-facing texts ------------------------------------------------------------------

#: Why a bucket was set by a rule rather than the score (``bucket_by``), in words.
BUCKET_BY_WORDS = {"hand_raise": "hand-raise", "clean_up": "clean-up", "lost": "lost"}


def bucket_label(bucket: Any, bucket_by: Any = "score") -> str:
    """ "P1" when the score set the bucket, "P1 · hand-raise" when a rule did."""
    b = _clean(bucket) or "P?"
    by = _clean(bucket_by)
    if not by or by == "score":
        return b
    return f"{b} · {BUCKET_BY_WORDS.get(by, by.replace('_', '-'))}"


_DID = {
    "showing_request": "asked to see {home}",
    "inquiry": "asked about {home}",
    "call_request": "asked for a call about {home}",
    "valuation_request": "asked what their home is worth",
    "property_view": "viewed {home}",
    "property_save": "saved {home}",
    "share": "shared {home}",
    "reply": "replied",
    "valuation_view": "looked at a home valuation",
    "mortgage_calc": "ran a mortgage calculation",
    "saved_search": "saved a search",
    "search": "searched for homes",
    "page_view": "browsed the site",
    "email_open": "opened an email",
    "email_click": "clicked a link in an email",
    "call_answered": "answered a call",
    "call_missed": "missed a call",
    "agent_contact": "was contacted by an agent",
    "identify": "signed in",
    "lead_created": "registered",
}


def why_now(alert: Any) -> str:
    """What the lead just did, naming the home ("asked to see 12 Elm St"), for the agent."""
    a = _map(alert)
    event = _map(a.get("event"))
    etype = str(event.get("type") or "")
    home = home_name(event) or ("the home they viewed" if event.get("property_id") else "")
    template = _DID.get(etype)
    if template is None:
        text = etype.replace("_", " ") if etype else "new activity"
    else:
        text = template.format(home=home or "a home")
    if any(str(t) == "reactivation" for t in _seq(a.get("triggers"))):
        text += " after a long quiet spell"
    return text[:1].upper() + text[1:]


def local_time(ts: Any, tz: Any = "UTC") -> str:
    """A time with its date in the tenant's zone: "Mon 5 Jan 2026, 10:05 CST"."""
    try:
        zone = ZoneInfo(str(tz))
    except (ValueError, KeyError, OSError):
        zone = ZoneInfo("UTC")
    try:
        when = datetime.fromtimestamp(float(ts), zone)
    except (TypeError, ValueError, OverflowError, OSError):
        return "unknown time"
    return f"{when:%a} {when.day} {when:%b %Y, %H:%M} {when.tzname()}"


def alert_text(alert: Any, tz: Any = "UTC") -> str:
    """One line for an agent: bucket (and the rule that set it), the lead, why now, the
    first touch and the deadline in the tenant's time: "P1 · hand-raise · lead L1: asked
    to see 12 Elm St · call by Mon 5 Jan 2026, 10:05 EST"."""
    a = _map(alert)
    sla = _map(a.get("sla"))
    touch = {"sms": "text", "none": "no channel open"}.get(str(a.get("first_touch")), "")
    touch = touch or _clean(a.get("first_touch")) or "respond"
    parts = [bucket_label(a.get("bucket"), a.get("bucket_by", "score")),
             f"lead {_clean(a.get('lead_id'))}: {why_now(a)}"]  # fmt: skip
    if sla.get("deadline_ts") is not None:
        parts.append(f"{touch} by {local_time(sla.get('deadline_ts'), tz)}")
    if sla.get("late_on_arrival"):
        parts.append("late on arrival")
    return " · ".join(parts)
