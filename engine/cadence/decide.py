"""Cadence decisions, pure: a lead's plan state, moved by its events and by time.

- **enter**: a lead not in a plan enters the plan of the first matching rule.
- **hotter**: a hand-raise or an alert trigger (a score jump, entering P1) re-reads the
  rules; a plan with more ``heat`` replaces the current one from that moment.
- **pause**: a real conversation (:data:`CONVERSATIONS`: a reply that is not STOP, an
  answered call, an appointment, an agent's contact marked as a conversation) pauses the
  plan; after ``resume_after_d`` with no further conversation it resumes where it
  stopped, every later step shifted by the time it was paused.
- **end**: :data:`ENDINGS` (``lost``, ``not_interested``, a signed agreement, closed).
- **opt-outs**: a blocked channel (the lead's ``blocked`` list, from the one consent
  rule in ``features/spec.py``) is skipped in every remaining step; a voicemail is a
  call. A plan with no allowed step left ends.
- **quiet hours**: a step on a quiet channel due in the tenant's quiet hours is moved
  to the end of those hours (:meth:`engine.cadence.plans.Hours.allowed_at`).
- **fire**: steps due at or before ``now`` (event time) are emitted, each once: the
  state's step index moves past it in the same decision.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

from engine.cadence.plans import Book, Hours, Plan, Step
from engine.events import HAND_RAISE_TYPES, NEGATIVE_OUTCOMES, POSITIVE_OUTCOMES

__all__ = [
    "CONVERSATIONS", "ENDINGS", "CadenceState", "Emission", "Personal", "Signal", "decode",
    "encode", "fire", "on_event", "step_id",
]  # fmt: skip

#: Event types that start a real conversation: the plan pauses (an ``agent_contact`` only
#: when marked as one: ``props.conversation`` true; otherwise it is an attempt).
CONVERSATIONS: frozenset[str] = frozenset(
    {"reply", "call_answered", *POSITIVE_OUTCOMES[:2]}  # appointment_set, appointment_held
)
#: Event types that end the plan (the lead is lost, said no, or signed).
ENDINGS: frozenset[str] = frozenset(
    {*NEGATIVE_OUTCOMES, "not_interested", *POSITIVE_OUTCOMES[2:]}  # agreement_signed, closed
)
HAND_RAISES: frozenset[str] = frozenset(HAND_RAISE_TYPES)
#: Alert triggers that make the rules look for a hotter plan.
HOTTER = ("hand_raise", "jump", "entered:P1", "reactivation")
_MAX_CHAIN = 8  # plans followed through ``next`` in one decision (a plan with nothing allowed)
_MAX_FIRE = 64  # steps emitted for one lead in one decision


@dataclass(frozen=True, slots=True)
class Personal:
    """What a message or a task may be personalised with (no contact details)."""

    property_id: str = ""
    address: str = ""
    area: str = ""
    timeline: str = ""
    side: str = ""
    source: str = ""
    agent_id: str = ""


@dataclass(frozen=True, slots=True)
class CadenceState:
    """A lead's place in its plan (kept at ``{tenant:lead}:c``, engine/cadence/runner.py)."""

    plan: str = ""
    status: str = ""  # "" never entered | active | paused | ended
    step: int = 0  # the next step's index
    start: float = 0.0  # event time the plan started
    shift: float = 0.0  # seconds every later step moved (time spent paused)
    due: float = 0.0  # event time the next step (or the resume) is due; 0: nothing
    since: float = 0.0  # event time of the last transition
    cycle: int = 0  # plans entered so far (part of every step id)
    why: str = ""
    end_reason: str = ""
    blocked: tuple[str, ...] = ()
    personal: Personal = field(default_factory=Personal)


@dataclass(frozen=True, slots=True)
class Signal:
    """What one scored event tells the cadence."""

    type: str
    ts: float
    tier: str
    bucket: str
    source: str
    side: str
    triggers: tuple[str, ...]
    blocked: tuple[str, ...]
    reactivated: bool
    conversation_marked: bool = False  # an agent_contact with props.conversation
    stop: bool = False  # a STOP reply: consent, not a conversation
    visitor: bool = False
    personal: Personal = field(default_factory=Personal)


@dataclass(frozen=True, slots=True)
class Emission:
    """One due step, emitted once."""

    step_id: str
    plan: str
    label: str
    index: int
    cycle: int
    step: Step
    due: float
    personal: Personal


def step_id(tenant: str, lead: str, plan: str, cycle: int, index: int) -> str:
    key = f"{tenant}\x1f{lead}\x1f{plan}\x1f{cycle}\x1f{index}"
    return hashlib.blake2b(key.encode(), digest_size=10).hexdigest()


# -- encoding (the value at ``{tenant:lead}:c``) -----------------------------------------------
def encode(s: CadenceState) -> str:
    p = s.personal
    return json.dumps(
        [s.plan, s.status, s.step, s.start, s.shift, s.due, s.since, s.cycle, s.why,
         s.end_reason, list(s.blocked),
         [p.property_id, p.address, p.area, p.timeline, p.side, p.source, p.agent_id]],
        separators=(",", ":"),
    )  # fmt: skip


def decode(text: str | None) -> CadenceState:
    """The state a ``cad`` field holds; empty or unreadable: never entered (never a crash)."""
    if not text:
        return CadenceState()
    try:
        v = json.loads(text)
        return CadenceState(
            str(v[0]), str(v[1]), int(v[2]), float(v[3]), float(v[4]), float(v[5]),
            float(v[6]), int(v[7]), str(v[8]), str(v[9]), tuple(str(c) for c in v[10]),
            Personal(*(str(x) for x in v[11][:7])),
        )  # fmt: skip
    except (ValueError, TypeError, IndexError, KeyError):
        return CadenceState()


# -- the schedule ----------------------------------------------------------------------------
def _allowed(step: Step, blocked: tuple[str, ...]) -> bool:
    channel = "call" if step.channel == "voicemail" else step.channel
    return channel not in blocked


def _schedule(s: CadenceState, book: Book, hours: Hours) -> CadenceState:
    """The next allowed step and its due time (quiet hours applied); follows ``next`` at
    the end of a plan; ends the plan when nothing is allowed."""
    for _ in range(_MAX_CHAIN):
        plan = book.plans.get(s.plan)
        if plan is None:
            return replace(s, status="ended", due=0.0, end_reason="unknown_plan",
                           why=f"ended: plan {s.plan!r} is no longer configured")  # fmt: skip
        i = s.step
        while i < len(plan.steps) and not _allowed(plan.steps[i], s.blocked):
            i += 1
        if i < len(plan.steps):
            step = plan.steps[i]
            due = max(s.start + s.shift + step.offset, s.since)
            if step.channel in book.quiet_channels:
                due = hours.allowed_at(due)
            return replace(s, step=i, due=due)
        if not plan.next:
            reason = "completed" if s.step >= len(plan.steps) else "no_allowed_channel"
            return replace(s, step=i, status="ended", due=0.0, end_reason=reason,
                           why=f"ended: {plan.label} {reason.replace('_', ' ')}")  # fmt: skip
        at = s.start + s.shift + (plan.steps[-1].offset if plan.steps else 0.0)
        s = _enter(s, book.plans[plan.next], max(at, s.since),
                   f"after the {plan.label}")  # fmt: skip
    return replace(s, status="ended", due=0.0, end_reason="no_allowed_channel",
                   why="ended: no plan in the chain has an allowed channel")  # fmt: skip


def _enter(s: CadenceState, plan: Plan, ts: float, why: str) -> CadenceState:
    return replace(s, plan=plan.name, status="active", step=0, start=ts, shift=0.0, due=0.0,
                   since=ts, cycle=s.cycle + 1, why=f"entered {plan.label}: {why}",
                   end_reason="")  # fmt: skip


def _fact(sig: Signal) -> dict[str, object]:
    return {
        "source": sig.source, "tier": sig.tier, "side": sig.side, "bucket": sig.bucket,
        "event": sig.type, "reactivated": sig.reactivated, "triggers": sig.triggers,
    }  # fmt: skip


# -- events ----------------------------------------------------------------------------------
def on_event(s: CadenceState, sig: Signal, book: Book, hours: Hours) -> CadenceState:
    """The state after one event of the lead (in stream order)."""
    if sig.visitor:
        return s
    personal = _merge_personal(s.personal, sig.personal)
    blocked = tuple(sorted(set(s.blocked) | set(sig.blocked)))
    newly_blocked = blocked != s.blocked
    if personal != s.personal or newly_blocked:
        s = replace(s, personal=personal, blocked=blocked)
    if sig.type in ENDINGS:
        if s.status in ("active", "paused"):
            return replace(s, status="ended", due=0.0, since=sig.ts, end_reason=sig.type,
                           why=f"ended: {sig.type.replace('_', ' ')}")  # fmt: skip
        return s if s.status else replace(s, status="ended", end_reason=sig.type, since=sig.ts)
    if _conversation(sig):
        if s.status in ("active", "paused"):
            return replace(s, status="paused", due=sig.ts + book.resume_after_s,
                           since=s.since if s.status == "paused" else sig.ts,
                           why=f"paused: {_words(sig)}")  # fmt: skip
        return s
    if s.status == "paused" or sig.stop:
        return s
    if s.status == "active":
        return _hotter(s, sig, book, hours, newly_blocked)
    if s.status == "" or (s.end_reason == "lost" and sig.reactivated):
        chosen = book.choose(_fact(sig))
        if chosen is None:
            return s
        plan, rule = chosen
        return _schedule(_enter(s, plan, sig.ts, rule.why()), book, hours)
    return s


def _hotter(
    s: CadenceState, sig: Signal, book: Book, hours: Hours, newly_blocked: bool
) -> CadenceState:
    """A hand-raise or a hot trigger: a hotter plan if the rules now give one."""
    hot = sig.type in HAND_RAISES or any(t.startswith(HOTTER) for t in sig.triggers)
    if hot:
        chosen = book.choose(_fact(sig))
        current = book.plans.get(s.plan)
        if chosen is not None and (current is None or chosen[0].heat > current.heat):
            plan, rule = chosen
            return _schedule(_enter(s, plan, sig.ts, f"moved up: {rule.why()}"), book, hours)
    if newly_blocked:
        return _schedule(s, book, hours)  # a newly blocked channel: the next allowed step
    return s


def _conversation(sig: Signal) -> bool:
    if sig.type == "agent_contact":
        return sig.conversation_marked
    return sig.type in CONVERSATIONS and not sig.stop


def _words(sig: Signal) -> str:
    return {"reply": "the lead replied", "call_answered": "a call was answered",
            "appointment_set": "an appointment was set",
            "appointment_held": "an appointment was held",
            "agent_contact": "an agent is in conversation"}.get(sig.type, sig.type)  # fmt: skip


def _merge_personal(old: Personal, new: Personal) -> Personal:
    """Newer non-empty values win; an address belongs to its property."""
    if new == old or new == Personal():
        return old
    moved = bool(new.property_id) and new.property_id != old.property_id
    return Personal(
        property_id=new.property_id or old.property_id,
        address=new.address or ("" if moved else old.address),
        area=new.area or old.area, timeline=new.timeline or old.timeline,
        side=new.side or old.side, source=new.source or old.source,
        agent_id=new.agent_id or old.agent_id,
    )  # fmt: skip


# -- time --------------------------------------------------------------------------------------
def fire(
    s: CadenceState, now: float, book: Book, hours: Hours
) -> tuple[CadenceState, list[Emission]]:
    """Emit every step due at or before ``now``; resume a pause whose silence has lasted."""
    out: list[Emission] = []
    for _ in range(_MAX_FIRE):
        if not s.due or s.due > now or s.status not in ("active", "paused"):
            break
        if s.status == "paused":
            resumed = replace(s, status="active", shift=s.shift + (s.due - s.since),
                              since=s.due, why="resumed: no conversation for "
                              f"{book.resume_after_s / 86_400:g} days")  # fmt: skip
            s = _schedule(resumed, book, hours)
            continue
        plan = book.plans.get(s.plan)
        if plan is None or s.step >= len(plan.steps) or not _allowed(plan.steps[s.step], s.blocked):
            s = _schedule(s, book, hours)  # never a blocked channel, whatever was scheduled
            continue
        step = plan.steps[s.step]
        out.append(Emission("", plan.name, plan.label, s.step, s.cycle, step, s.due, s.personal))
        s = _schedule(replace(s, step=s.step + 1, since=s.due,
                              why=f"step {s.step + 1} of {len(plan.steps)} sent"),
                      book, hours)  # fmt: skip
    return s, out
