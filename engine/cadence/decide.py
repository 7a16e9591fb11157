"""Cadence decisions, pure: a lead's plan state, moved by its events and by time.

- **enter**: a lead not in a plan enters the plan of the first matching rule.
- **hotter**: a hand-raise or an alert trigger (a score jump, entering P1) re-reads the
  rules; a plan with more ``heat`` replaces the current one from that moment, unless the
  lead entered that plan within ``rerun_after_d`` (a lead moves up into a track at most
  once per period: a score jump does not send it back into the hot track every time).
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
- **send time that learns**: the lead's opens, clicks and replies (:data:`ENGAGEMENTS`)
  record their hour of day in the tenant's zone (the last :data:`_KEEP_HOURS`); once
  there are ``send_time_min_signals``, each automatic message moves forward to the next
  time at the hour seen most, if that is at most ``send_time_max_shift_h`` later than
  planned (never earlier, and never into quiet hours for a quiet channel). A lead in
  the holdout share (``Signal.holdout``) keeps the plan's times: the reports compare
  replies after ``learned`` and ``holdout`` messages (``planned``: too few signals yet).
- **fire**: steps due at or before ``now`` (event time) are emitted, each once: the
  state's step index moves past it in the same decision.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import msgpack

from engine.cadence.plans import Book, Fact, Hours, Plan, Step
from engine.events import HAND_RAISE_TYPES, NEGATIVE_OUTCOMES, POSITIVE_OUTCOMES

__all__ = [
    "CONVERSATIONS", "ENDINGS", "MOVERS", "CadenceState", "Emission", "Signal",
    "Transition", "decode", "encode", "fire", "on_event", "passive", "ran_within", "step_id",
    "with_",
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
#: What a lead does that says when it reads (send time that learns).
ENGAGEMENTS: frozenset[str] = frozenset({"email_open", "email_click", "reply"})
_KEEP_HOURS = 12  # engagement hours kept per lead
#: Alert triggers that make the rules look for a hotter plan.
HOTTER = ("hand_raise", "jump", "entered:P1", "reactivation")
#: Event types that may move a plan: see :func:`passive`.
MOVERS: frozenset[str] = ENDINGS | CONVERSATIONS | ENGAGEMENTS | HAND_RAISES
_MAX_CHAIN = 8  # plans followed through ``next`` in one decision (a plan with nothing allowed)
_MAX_FIRE = 64  # steps emitted for one lead in one decision


# The records below are read-only by convention, not ``frozen``: the decisions build them
# tens of thousands of times a month, and a frozen dataclass's ``__init__`` (one
# ``object.__setattr__`` per field) costs ~9x a plain one for the 18 fields of a state.
# States are shared (the worker's held states, a batch's before and after, ``_NEVER``):
# never assign a field; copy with :func:`with_` (tests/engine/cadence/test_held.py checks
# that no decision changes a state it is given).


@dataclass(slots=True)
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
    ran: tuple[tuple[str, float], ...] = ()  # each plan entered, with its last entry time
    last: str = ""  # the last step sent: "<plan>.<index>.<channel>" (replies, opt-outs by step)
    replied: bool = False  # the lead replied since that step (its first reply is counted)
    last_timing: str = ""  # that step's timing: learned | holdout | planned
    engaged: tuple[int, ...] = ()  # hours of day (tenant zone) of the last engagements
    holdout: bool = False  # send time never learned for this lead (the comparison group)
    timing: str = ""  # the scheduled step's timing: learned | holdout | planned


def with_(
    s: CadenceState, *, plan: str | None = None, status: str | None = None,
    step: int | None = None, start: float | None = None, shift: float | None = None,
    due: float | None = None, since: float | None = None, cycle: int | None = None,
    why: str | None = None, end_reason: str | None = None, blocked: tuple[str, ...] | None = None,
    ran: tuple[tuple[str, float], ...] | None = None,
    last: str | None = None, replied: bool | None = None, last_timing: str | None = None,
    engaged: tuple[int, ...] | None = None, holdout: bool | None = None,
    timing: str | None = None,
) -> CadenceState:  # fmt: skip
    """``dataclasses.replace(s, ...)`` written out (``None``: keep; no field is ever
    ``None``): the decisions copy states tens of thousands of times per month, and the
    generic ``replace`` (field list, keyword dict, per-field checks) costs ~4x this."""
    return CadenceState(
        s.plan if plan is None else plan, s.status if status is None else status,
        s.step if step is None else step, s.start if start is None else start,
        s.shift if shift is None else shift, s.due if due is None else due,
        s.since if since is None else since, s.cycle if cycle is None else cycle,
        s.why if why is None else why, s.end_reason if end_reason is None else end_reason,
        s.blocked if blocked is None else blocked, s.ran if ran is None else ran,
        s.last if last is None else last,
        s.replied if replied is None else replied,
        s.last_timing if last_timing is None else last_timing,
        s.engaged if engaged is None else engaged, s.holdout if holdout is None else holdout,
        s.timing if timing is None else timing,
    )  # fmt: skip


@dataclass(slots=True)
class Transition:
    """What the reports count (engine/reporting/cadence.py): a plan ``entered``,
    ``completed`` (every step done) or ``ended`` otherwise (``reason``); a step ``sent``;
    the first ``reply`` after a step; an ``optout`` of a channel (``reason``) after a step
    (``step``: ``<plan>.<index>.<channel>``, "" before any step)."""

    kind: str
    plan: str
    ts: float
    step: str = ""
    reason: str = ""


Log = list[Transition] | None


def _note(log: Log, kind: str, plan: str, ts: float, step: str = "", reason: str = "") -> None:
    if log is not None:
        log.append(Transition(kind, plan, ts, step, reason))


@dataclass(slots=True)
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
    holdout: bool = False  # the lead is in the send-time holdout share
    conversation_marked: bool = False  # an agent_contact with props.conversation
    stop: bool = False  # a STOP reply: consent, not a conversation
    visitor: bool = False


@dataclass(slots=True)
class Emission:
    """One due step, emitted once (the engine gives its entry the step's id and the lead's
    fields when it emits it: engine/cadence/runner.py)."""

    plan: str
    label: str
    index: int
    cycle: int
    step: Step
    due: float


def step_id(tenant: str, lead: str, plan: str, cycle: int, index: int) -> str:
    key = f"{tenant}\x1f{lead}\x1f{plan}\x1f{cycle}\x1f{index}"
    return hashlib.blake2b(key.encode(), digest_size=10).hexdigest()


# -- encoding (the value at ``{tenant:lead}:c``) -----------------------------------------------
def encode(s: CadenceState) -> bytes:
    """The state as stored: a msgpack array (the fields in order; ~5x cheaper to write and
    read than the JSON array written before, which :func:`decode` still reads). Index 11
    held the personalisation fields until they were read from the lead's features when a
    step is emitted: it stays, empty, so the layout (and code that reads it) is unchanged."""
    return cast(bytes, packer(surrogates=True).pack(
        (s.plan, s.status, s.step, s.start, s.shift, s.due, s.since, s.cycle, s.why,
         s.end_reason, s.blocked, (), s.ran, (s.last, s.replied, s.last_timing),
         (s.engaged, s.holdout, s.timing)),
    ))  # fmt: skip


_PACKERS = threading.local()


def packer(surrogates: bool = False) -> Any:
    """This thread's ``msgpack.Packer`` (``use_bin_type``; ``surrogates``: lone surrogates
    pass, as any str JSON could hold): ``msgpack.packb`` is ``Packer(...).pack``, and
    building a packer (its buffer) cost more than packing a state. A packer resets
    itself after each ``pack``, also one that raised; one per thread: not shared."""
    name = "surrogates" if surrogates else "strict"
    found = getattr(_PACKERS, name, None)
    if found is None:
        errors = "surrogatepass" if surrogates else None
        found = msgpack.Packer(use_bin_type=True, unicode_errors=errors)
        setattr(_PACKERS, name, found)
    return found


def decode(raw: bytes | str | None) -> CadenceState:
    """The state a ``:c`` value holds, msgpack or the older JSON form (a ``[`` first: no
    msgpack array starts so), so states stored before the msgpack codec need no migration;
    personalisation fields a state stored before they left it still holds (index 11) are
    not read; empty or unreadable: never entered (never a crash)."""
    if not raw:
        return CadenceState()
    try:
        if isinstance(raw, str) or raw[:1] == b"[":
            return _state(json.loads(raw))
        return _state(msgpack.unpackb(raw, raw=False, unicode_errors="surrogatepass"))
    except (ValueError, TypeError, IndexError, KeyError, msgpack.UnpackException):
        return CadenceState()


def _state(v: Any) -> CadenceState:
    return CadenceState(
        str(v[0]), str(v[1]), int(v[2]), float(v[3]), float(v[4]), float(v[5]),
        float(v[6]), int(v[7]), str(v[8]), str(v[9]), tuple(str(c) for c in v[10]),
        tuple((str(n), float(t)) for n, t in (v[12] if len(v) > 12 else ())),
        *((str(v[13][0]), bool(v[13][1]), str(v[13][2])) if len(v) > 13 else ()),
        *((tuple(int(h) % 24 for h in v[14][0]), bool(v[14][1]), str(v[14][2]))
          if len(v) > 14 else ()),
    )  # fmt: skip


# -- the schedule ----------------------------------------------------------------------------
def _allowed(step: Step, blocked: tuple[str, ...]) -> bool:
    channel = "call" if step.channel == "voicemail" else step.channel
    return channel not in blocked


def _schedule(s: CadenceState, book: Book, hours: Hours, log: Log = None) -> CadenceState:
    """The next allowed step and its due time (quiet hours applied); follows ``next`` at
    the end of a plan; ends the plan when nothing is allowed."""
    for _ in range(_MAX_CHAIN):
        plan = book.plans.get(s.plan)
        if plan is None:
            _note(log, "ended", s.plan, s.since, reason="unknown_plan")
            return with_(s, status="ended", due=0.0, end_reason="unknown_plan",
                           why=f"ended: plan {s.plan!r} is no longer configured")  # fmt: skip
        i = s.step
        while i < len(plan.steps) and not _allowed(plan.steps[i], s.blocked):
            i += 1
        if i < len(plan.steps):
            step = plan.steps[i]
            due = max(s.start + s.shift + step.offset, s.since)
            timing = _timing(s, step, book)
            if timing == "learned":  # never into quiet hours: there it would wait till morning
                moved = _toward(due, _preferred(s.engaged), hours.tz, book.learn_max_s)
                quiet = step.channel in book.quiet_channels and hours.quiet(moved)
                due = due if quiet else moved
            if step.channel in book.quiet_channels:
                due = hours.allowed_at(due)
            return with_(s, step=i, due=due, timing=timing)
        done = s.step >= len(plan.steps)
        _note(log, "completed" if done else "ended", plan.name, s.since,
              reason="" if done else "no_allowed_channel")  # fmt: skip
        if not plan.next:
            reason = "completed" if done else "no_allowed_channel"
            return with_(s, step=i, status="ended", due=0.0, end_reason=reason,
                           why=f"ended: {plan.label} {reason.replace('_', ' ')}")  # fmt: skip
        at = s.start + s.shift + (plan.steps[-1].offset if plan.steps else 0.0)
        s = _enter(s, book.plans[plan.next], max(at, s.since),
                   f"after the {plan.label}", log)  # fmt: skip
    return with_(s, status="ended", due=0.0, end_reason="no_allowed_channel",
                   why="ended: no plan in the chain has an allowed channel")  # fmt: skip


def _timing(s: CadenceState, step: Step, book: Book) -> str:
    """How an automatic message is timed: ``learned``, ``holdout`` or ``planned`` ("" for
    a task: an agent's task goes at the plan's time)."""
    if step.kind != "message":
        return ""
    if not book.learn_min or len(s.engaged) < book.learn_min:
        return "planned"
    return "holdout" if s.holdout else "learned"


def _preferred(engaged: tuple[int, ...]) -> int:
    """The hour seen most (ties: the most recent of them)."""
    counts = Counter(engaged)
    top = max(counts.values())
    return next(h for h in reversed(engaged) if counts[h] == top)


def _toward(due: float, hour: int, tz: str, max_s: float) -> float:
    """The first time at ``hour`` (local) at or after ``due``, if within ``max_s``."""
    local = datetime.fromtimestamp(due, ZoneInfo(tz))
    if local.hour == hour:
        return due
    at = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    if at < local:
        at = (local + timedelta(days=1)).replace(hour=hour, minute=0, second=0, microsecond=0)
    return at.timestamp() if due < at.timestamp() <= due + max_s else due


def _enter(s: CadenceState, plan: Plan, ts: float, why: str, log: Log = None) -> CadenceState:
    _note(log, "entered", plan.name, ts)
    ran = tuple(sorted({**dict(s.ran), plan.name: ts}.items()))
    return with_(s, plan=plan.name, status="active", step=0, start=ts, shift=0.0, due=0.0,
                   since=ts, cycle=s.cycle + 1, why=f"entered {plan.label}: {why}",
                   end_reason="", ran=ran)  # fmt: skip


def ran_within(s: CadenceState, plan: str, ts: float, period_s: float) -> bool:
    """The lead entered ``plan`` less than ``period_s`` before ``ts``."""
    last = dict(s.ran).get(plan)
    return last is not None and ts - last < period_s


def _fact(sig: Signal) -> Fact:
    return (sig.source, sig.tier, sig.side, sig.bucket, sig.type, sig.reactivated,
            sig.triggers)  # fmt: skip


# -- events ----------------------------------------------------------------------------------
def on_event(
    s: CadenceState, sig: Signal, book: Book, hours: Hours, log: Log = None
) -> CadenceState:
    """The state after one event of the lead (in stream order); ``log`` (if given)
    receives what the reports count."""
    if sig.visitor:
        return s
    before = s
    s = _absorb(s, sig, hours, log)
    stopped = _stopped(s, sig, book, log)
    if stopped is not None:
        return stopped
    if s.status == "paused" or sig.stop:
        return s
    if s.status == "active":
        # a newly closed channel, or a new engagement hour (send time that learns), may
        # move the next message: reschedule
        changed = s.blocked != before.blocked or s.engaged != before.engaged
        return _hotter(s, sig, book, hours, changed, log)
    if s.status == "" or (s.end_reason == "lost" and sig.reactivated):
        chosen = book.chosen(_fact(sig))
        if chosen is None:
            return s
        plan, rule = chosen
        return _schedule(_enter(s, plan, sig.ts, rule.why(), log), book, hours, log)
    return s


def _stopped(s: CadenceState, sig: Signal, book: Book, log: Log) -> CadenceState | None:
    """An ending (``lost``, ``not_interested``, signed...) ends the plan; a conversation
    pauses it; None for any other event."""
    if sig.type in ENDINGS:
        if s.status in ("active", "paused"):
            _note(log, "ended", s.plan, sig.ts, reason=sig.type)
            return with_(s, status="ended", due=0.0, since=sig.ts, end_reason=sig.type,
                           why=f"ended: {sig.type.replace('_', ' ')}")  # fmt: skip
        return s if s.status else with_(s, status="ended", end_reason=sig.type, since=sig.ts)
    if _conversation(sig):
        if s.status in ("active", "paused"):
            return with_(s, status="paused", due=sig.ts + book.resume_after_s,
                           since=s.since if s.status == "paused" else sig.ts,
                           why=f"paused: {_words(sig)}")  # fmt: skip
        return s
    return None


def passive(
    s: CadenceState, kind: str, triggers: tuple[str, ...], blocked: tuple[str, ...],
    reactivated: bool, holdout: bool, marked: bool, book: Book | None = None,
    fact: Fact | None = None, ts: float = 0.0,
) -> bool:  # fmt: skip
    """Whether an event (of type ``kind``, with these triggers, closed channels, ...) can
    change nothing of ``s`` and logs nothing: then :func:`on_event` gives ``s`` itself.
    Most events of a lead already in a
    plan (views, searches, missed calls) are such; the engine then builds no
    :class:`Signal`. Errs on the safe side: ``False`` only costs the full decision.

    A hot trigger (a score jump, entering P1) matters only to an active plan (a paused
    one waits for its silence, an ended one for a reactivation), and there only if the
    rules' choice for the event's ``fact`` (:meth:`Book.chosen`, asked only then) moves
    the lead up at ``ts`` (:func:`_hotter`); without ``book`` and ``fact``: not passive."""
    if not s.status or kind in MOVERS or (marked and kind == "agent_contact"):
        return False  # never entered (a rule may match), or a type that moves the plan
    if (holdout and not s.holdout) or (reactivated and s.end_reason == "lost"):
        return False
    if (blocked or s.blocked) and tuple(sorted({*s.blocked, *blocked})) != s.blocked:
        return False  # a newly closed channel (what _absorb keeps: sorted, once each)
    if not triggers or s.status != "active" or not any(t.startswith(HOTTER) for t in triggers):
        return True
    if book is None or fact is None:
        return False
    chosen = book.chosen(fact)
    return chosen is None or not _moves_up(s, chosen[0], book, ts)


def _absorb(s: CadenceState, sig: Signal, hours: Hours, log: Log) -> CadenceState:
    """What every event of the lead tells the state whatever its plan does: closed
    channels, the hour it engaged; the report notes (the first reply after a step, each
    closed channel after a step)."""
    blocked = tuple(sorted({*s.blocked, *sig.blocked})) if s.blocked or sig.blocked else ()
    engaged, holdout = s.engaged, s.holdout or sig.holdout
    if sig.type in ENGAGEMENTS and not sig.stop:
        hour = datetime.fromtimestamp(sig.ts, ZoneInfo(hours.tz)).hour
        engaged = (*s.engaged, hour)[-_KEEP_HOURS:]
    if s.status:
        for channel in sorted(set(blocked) - set(s.blocked)) if blocked != s.blocked else ():
            _note(log, "optout", s.plan, sig.ts, s.last, channel)
        if sig.type == "reply" and not sig.stop and s.last and not s.replied:
            _note(log, "reply", s.plan, sig.ts, s.last, s.last_timing)
            s = with_(s, replied=True)
    if (blocked, engaged, holdout) != (s.blocked, s.engaged, s.holdout):
        s = with_(s, blocked=blocked, engaged=engaged, holdout=holdout)
    return s


def _hotter(
    s: CadenceState, sig: Signal, book: Book, hours: Hours, newly_blocked: bool, log: Log
) -> CadenceState:
    """A hand-raise or a hot trigger: a hotter plan if the rules now give one."""
    hot = sig.type in HAND_RAISES or any(t.startswith(HOTTER) for t in sig.triggers)
    if hot:
        chosen = book.chosen(_fact(sig))
        if chosen is not None and _moves_up(s, chosen[0], book, sig.ts):
            plan, rule = chosen
            _note(log, "ended", s.plan, sig.ts, reason="moved_up")
            moved = _enter(s, plan, sig.ts, f"moved up: {rule.why()}", log)
            return _schedule(moved, book, hours, log)
    if newly_blocked:
        return _schedule(s, book, hours, log)  # a newly blocked channel: the next allowed step
    return s


def _moves_up(s: CadenceState, plan: Plan, book: Book, ts: float) -> bool:
    """An active lead moves up into ``plan`` (the rules' choice for a hot event at ``ts``):
    hotter than its own, and not entered within ``rerun_after_d``."""
    current = book.plans.get(s.plan)
    return (current is None or plan.heat > current.heat) and not ran_within(
        s, plan.name, ts, book.rerun_after_s
    )


def _conversation(sig: Signal) -> bool:
    if sig.type == "agent_contact":
        return sig.conversation_marked
    return sig.type in CONVERSATIONS and not sig.stop


def _words(sig: Signal) -> str:
    return {"reply": "the lead replied", "call_answered": "a call was answered",
            "appointment_set": "an appointment was set",
            "appointment_held": "an appointment was held",
            "agent_contact": "an agent is in conversation"}.get(sig.type, sig.type)  # fmt: skip


# -- time --------------------------------------------------------------------------------------
def fire(
    s: CadenceState, now: float, book: Book, hours: Hours, log: Log = None
) -> tuple[CadenceState, list[Emission]]:
    """Emit every step due at or before ``now``; resume a pause whose silence has lasted."""
    out: list[Emission] = []
    for _ in range(_MAX_FIRE):
        if not s.due or s.due > now or s.status not in ("active", "paused"):
            break
        if s.status == "paused":
            resumed = with_(s, status="active", shift=s.shift + (s.due - s.since),
                              since=s.due, why="resumed: no conversation for "
                              f"{book.resume_after_s / 86_400:g} days")  # fmt: skip
            s = _schedule(resumed, book, hours, log)
            continue
        plan = book.plans.get(s.plan)
        if plan is None or s.step >= len(plan.steps) or not _allowed(plan.steps[s.step], s.blocked):
            s = _schedule(s, book, hours, log)  # never a blocked channel, whatever was scheduled
            continue
        step = plan.steps[s.step]
        out.append(Emission(plan.name, plan.label, s.step, s.cycle, step, s.due))
        last = f"{plan.name}.{s.step}.{step.channel}"
        _note(log, "sent", plan.name, s.due, last, s.timing)
        s = _schedule(with_(s, step=s.step + 1, since=s.due, last=last, replied=False,
                              last_timing=s.timing,
                              why=f"step {s.step + 1} of {len(plan.steps)} sent"),
                      book, hours, log)  # fmt: skip
    return s, out
