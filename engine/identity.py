"""Resolve identity: ``identify`` and ``leadpulse merge`` as hand-overs through the stream.

One worker owns a partition and the state of every lead on it. Folding lead ``S`` (a
visitor ``~vid``, or a duplicate lead) into lead ``D`` therefore moves ``S``'s state
from its owner to ``D``'s owner through the streams, never by reading another
worker's state:

1. ``D``'s worker sees ``identify`` (or a ``merge`` control entry). ``S`` on the same
   partition: it folds at once (it owns both). Otherwise it queues a **request** on
   ``S``'s partition stream, in its batch's transaction.
2. ``S``'s worker, on the request: takes ``S``'s state (cache or Redis), writes the alias
   ``S -> D``, deletes ``S``'s keys and queues a **hand-over** carrying the packed feature
   state and learning moments on ``D``'s partition stream, all in its batch's
   transaction. Later events of ``S`` on its partition are **forwarded** to ``D`` (an entry
   on ``D``'s partition), never applied there.
3. ``D``'s worker, on the hand-over: folds it into ``D`` once (the hand-over id is
   remembered in ``D``'s dedup hashes), moves the moments and scores ``D`` as of the
   ``identify``.

Every step commits with its partition's stream position in one MULTI/EXEC, so a crash
at any point redoes the step from what Redis committed: the fold happens exactly once
in effect. A control entry holds the field :data:`engine.streams.CONTROL` (never ``e``);
the gateway only ever writes ``e``, so no client can send one.

Control entries travel through the engine as :class:`engine.events.Event` wrappers of a
reserved type (:data:`CONTROL_TYPES`, which the validator never produces) with the
:class:`Control` record in ``props``; :func:`scored` turns the store's replies back into
the events the scoring stage sees. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import msgpack

from engine.events import Event
from engine.validate import Rejection

__all__ = [
    "CONTROL_TYPES", "Control", "FORWARD", "HANDOVER", "MAX_HOPS", "MERGE", "REQUEST",
    "as_scored", "control_of", "decode", "forward_event", "handover", "hops", "merge_control",
    "pack", "readdress", "request", "scored", "source_of", "wrap",
]  # fmt: skip

MERGE, REQUEST, HANDOVER, FORWARD = "merge", "request", "handover", "forward"
_KINDS = (MERGE, REQUEST, HANDOVER, FORWARD)
#: Event types of control wrappers: not contract types, so no client event has one.
CONTROL_TYPES = frozenset(f"~{kind}" for kind in _KINDS)
#: A hand-over or forwarded event follows at most this many aliases (a cycle, e.g. two
#: merges issued in opposite directions at once, ends at the lead it has reached).
MAX_HOPS = 8
_PROPS = "control"
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Control:
    """One control entry: fold ``source`` into ``target`` (or a forwarded event)."""

    kind: str  # MERGE | REQUEST | HANDOVER | FORWARD
    tenant: str
    source: str  # the lead folded away ("" for FORWARD)
    target: str  # the surviving lead (FORWARD: the lead the event now belongs to)
    hid: str  # hand-over id: remembered by the target so a fold happens once
    ts: float  # event time of the identify / merge (FORWARD: of the event)
    visitor: str = ""  # the identify's visitor id
    state: bytes | None = None  # HANDOVER: the source's packed feature record
    moments: tuple[bytes, ...] = ()  # HANDOVER: the source's learning moments
    event: Event | None = None  # FORWARD: the event, already addressed to ``target``
    hops: int = 0

    @property
    def address(self) -> str:
        """The lead whose partition handles this entry."""
        return self.source if self.kind == REQUEST else self.target


# -- the wire ------------------------------------------------------------------------------
def pack(c: Control) -> bytes:
    """The control entry's ``c`` field (msgpack)."""
    body: dict[str, Any] = {"k": c.kind, "t": c.tenant, "s": c.source, "d": c.target,
                            "h": c.hid, "ts": c.ts}  # fmt: skip
    if c.visitor:
        body["v"] = c.visitor
    if c.state is not None:
        body["f"] = c.state
    if c.moments:
        body["n"] = list(c.moments)
    if c.event is not None:
        body["e"] = c.event.to_wire()
    if c.hops:
        body["o"] = c.hops
    return msgpack.packb(body, use_bin_type=True)


def decode(blob: bytes) -> Event | Rejection:
    """A control entry as the wrapper event the store handles (or a rejection)."""
    try:
        body = msgpack.unpackb(blob, raw=False)
        c = Control(
            kind=str(body["k"]), tenant=str(body["t"]), source=str(body["s"]),
            target=str(body["d"]), hid=str(body["h"]), ts=float(body["ts"]),
            visitor=str(body.get("v", "")), state=body.get("f"),
            moments=tuple(bytes(m) for m in body.get("n", ())),
            event=Event(**body["e"]) if "e" in body else None, hops=int(body.get("o", 0)),
        )  # fmt: skip
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
        return Rejection(f"malformed_control: {exc.__class__.__name__}")
    if c.kind not in _KINDS or not c.target or (c.kind == FORWARD) != (c.event is not None):
        return Rejection(f"malformed_control: kind {c.kind!r}")
    return wrap(c)


def wrap(c: Control) -> Event:
    eid = f"{c.kind}:{c.hid}"
    return Event(eid, c.address, f"~{c.kind}", c.ts, tenant=c.tenant, props={_PROPS: c})


def control_of(ev: Event) -> Control | None:
    """The control record a wrapper event carries (None for a contract event)."""
    if ev.type not in CONTROL_TYPES:
        return None
    c = ev.props.get(_PROPS)
    return c if isinstance(c, Control) else None


# -- decisions -----------------------------------------------------------------------------
def source_of(ev: Event) -> str:
    """The lead an ``identify`` or merge folds into ``ev``'s lead ("" for anything else)."""
    if ev.type == "identify" and ev.visitor_id and ev.lead_id != f"~{ev.visitor_id}":
        return f"~{ev.visitor_id}"
    c = control_of(ev)
    if c is not None and c.kind == MERGE and c.source != c.target:
        return c.source
    return ""


def merge_control(tenant: str, keep: str, other: str, ts: float) -> Control:
    """What ``leadpulse merge`` appends to ``keep``'s partition."""
    return Control(MERGE, tenant, other, keep, f"merge:{other}>{keep}", ts)


def request(ev: Event, source: str) -> Control:
    """The hand-over request for ``source`` that an identify or merge at ``ev`` queues."""
    c = control_of(ev)
    hid = c.hid if c is not None else f"identify:{ev.event_id}"
    return Control(REQUEST, ev.tenant, source, ev.lead_id, hid, ev.ts, visitor=ev.visitor_id)


def handover(req: Control, state: bytes | None, moments: Sequence[bytes]) -> Control:
    """The source's answer to ``req``: its state and moments, for the target."""
    return replace(req, kind=HANDOVER, state=state, moments=tuple(moments))


def forward_event(ev: Event, target: str) -> Control:
    """An entry of a folded lead, re-addressed to the lead it lives on now (one more hop)."""
    c = control_of(ev)
    if c is not None:  # a forwarded event, a hand-over, a merge
        moved = replace(c.event, lead_id=target) if c.event is not None else None
        return replace(c, target=target, event=moved, hops=c.hops + 1)
    moved_ev = replace(ev, lead_id=target)
    return Control(FORWARD, ev.tenant, "", target, ev.event_id, ev.ts, event=moved_ev, hops=1)


def readdress(ev: Event, target: str) -> Event:
    """``ev`` for the lead it lives on now, on this same partition."""
    if control_of(ev) is None:
        return replace(ev, lead_id=target)
    return wrap(forward_event(ev, target))


def hops(ev: Event) -> int:
    c = control_of(ev)
    return c.hops if c is not None else 0


def as_scored(c: Control) -> Event:
    """What the scoring stage sees for a hand-over: the ``identify`` of the lead it joined."""
    return Event(f"handover:{c.hid}", c.target, "identify", c.ts, tenant=c.tenant,
                 visitor_id=c.visitor)  # fmt: skip


# -- back to the scoring stage -------------------------------------------------------------
def scored(
    events: Sequence[Event], origin: Sequence[_T], replies: Sequence[Any], skipped: int
) -> tuple[list[Event], list[_T], list[Any]]:
    """The events the scoring stage sees: each as the store applied it (``reply.routed``:
    re-addressed to the lead it lives on, a hand-over as that lead's ``identify``);
    requests, merges and entries sent on to another partition (status ``skipped``) are
    not scored here."""
    out_e: list[Event] = []
    out_o: list[_T] = []
    out_r: list[Any] = []
    for ev, entry, reply in zip(events, origin, replies, strict=True):
        if reply.status == skipped:
            continue
        out_e.append(reply.routed or ev)
        out_o.append(entry)
        out_r.append(reply)
    return out_e, out_o, out_r
