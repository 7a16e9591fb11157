"""What delivery needs to know about a lead beyond the alert record: a read-only view.

Routing needs the lead's side (seller -> listing specialists), area and price band;
the scripts need repeat viewing, saves and unanswered contacts. The alert record
carries none of these, so they are read here, in one pipelined round trip:

- the lead's feature hash (``features/store.py`` key ``h``): side, source, timeline,
  saves, replies, unanswered agent contacts, last area and property;
- its property-view window (key ``v``): views per property in the last 48 h of the
  alert's event time (the repeat-viewer signal);
- the triggering event itself, found on its partition by the alert's ``ingest_ms``
  (the millisecond part of its stream id): price, area, property, and the home's
  ``props.address`` / ``props.title`` (the alert's ``event.address`` / ``.title``
  when the engine copies them there).

An alert record that carries a ``lead`` map (a later engine version) is used as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from engine.events import partition_of
from engine.streams import StreamNames
from features.state import read_record
from features.store import lead_key

__all__ = ["LeadProfile", "parse_profile", "queue_reads", "read_profile"]

_REPEAT_WINDOW_S = 48 * 3600.0
_FIELDS = (
    "side", "source", "timeline", "saves", "replies", "unanswered", "last_area", "last_property",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LeadProfile:
    side: str = "unknown"
    source: str = "unknown"
    timeline: str = "unknown"
    saves: int = 0
    replies: int = 0
    unanswered: int = 0
    repeat_views: int = 0
    repeat_property: str = ""
    area: str = ""
    property_id: str = ""
    price: float = 0.0
    address: str = ""  # the home the event was about, as the site names it (props.address)
    title: str = ""  # its listing title (props.title)

    @classmethod
    def from_map(cls, m: dict[str, Any]) -> LeadProfile:
        known = {k: m[k] for k in cls.__slots__ if k in m}
        return cls(**known)


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else ("" if x is None else str(x))


def _int(x: Any) -> int:
    try:
        return int(float(_text(x) or 0))
    except ValueError:
        return 0


def queue_reads(pipe: Any, names: StreamNames, alert: dict[str, Any]) -> int:
    """Queue the reads of :func:`parse_profile` on a pipeline; returns how many replies."""
    tenant, lead = str(alert["tenant"]), str(alert["lead_id"])
    home = names.home(tenant, lead)  # the lead's partition's tag, or the deployment's prefix
    pipe.get(lead_key(home, tenant, lead, "f"))
    pipe.hmget(lead_key(home, tenant, lead, "h"), list(_FIELDS))  # schema 0, until migrated
    ms = alert.get("ingest_ms")
    if not ms:
        return 2
    stream = names.events(partition_of(tenant, lead, names.partitions))
    pipe.xrange(stream, f"{int(ms)}-0", f"{int(ms)}-18446744073709551615", count=1000)
    return 3


def read_profile(client: Any, names: StreamNames, alert: dict[str, Any]) -> LeadProfile:
    """The lead behind an alert, as of the alert's event (one round trip)."""
    if isinstance(alert.get("lead"), dict):
        return LeadProfile.from_map(alert["lead"])
    pipe = client.pipeline(transaction=False)
    queue_reads(pipe, names, alert)
    return parse_profile(alert, pipe.execute())


def parse_profile(alert: dict[str, Any], replies: list[Any]) -> LeadProfile:
    """A profile from the replies of :func:`queue_reads`."""
    if isinstance(alert.get("lead"), dict):
        return LeadProfile.from_map(alert["lead"])
    event = alert.get("event") or {}
    state = read_record(replies[0])
    if replies[0] is None:  # a lead the engine has not touched since schema 1
        h = dict(zip(_FIELDS, (_text(v) for v in replies[1]), strict=True))
    else:
        view = state.legacy_view()
        h = {k: view.get(k, "") for k in _FIELDS}
    ts = float(event.get("ts") or 0.0)
    counts: dict[str, int] = {}
    for pid in state.views_between(ts - _REPEAT_WINDOW_S, ts):
        counts[pid] = counts.get(pid, 0) + 1
    best = max(sorted(counts), key=lambda p: counts[p], default="")
    trigger: dict[str, Any] = {}
    for _, fields in replies[2] if len(replies) > 2 else []:
        raw = fields.get(b"e")
        if raw is None:
            continue
        try:
            ev = msgpack.unpackb(raw, raw=False)
        except (ValueError, msgpack.UnpackException):
            continue
        if isinstance(ev, dict) and ev.get("event_id") == event.get("event_id"):
            trigger = ev
            break
    price = trigger.get("price")
    props: dict[str, Any] = trigger["props"] if isinstance(trigger.get("props"), dict) else {}
    return LeadProfile(
        side=str(trigger.get("side") or h["side"] or "unknown"),
        source=str(trigger.get("source") or h["source"] or "unknown"),
        timeline=h["timeline"] or "unknown",
        saves=_int(h["saves"]),
        replies=_int(h["replies"]),
        unanswered=_int(h["unanswered"]),
        repeat_views=counts.get(best, 0),
        repeat_property=best,
        area=str(event.get("area") or trigger.get("area") or h["last_area"] or ""),
        property_id=str(event.get("property_id") or h["last_property"] or ""),
        price=float(price)
        if isinstance(price, int | float) and not isinstance(price, bool)
        else 0.0,
        address=_str(event.get("address")) or _str(props.get("address")),
        title=_str(event.get("title")) or _str(props.get("title")),
    )


def _str(x: Any) -> str:
    return x if isinstance(x, str) else ""
