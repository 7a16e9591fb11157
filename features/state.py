"""A lead's feature state in Python: apply events, read features, fold, pack.

:class:`LeadFeatures` is the whole rolling state of one lead (counters, bounded
window sets, profile, consent, dedup hashes). :meth:`LeadFeatures.apply` applies one
event by the rules of :mod:`features.spec` in event time; :meth:`LeadFeatures.features`
reads the feature vector as of the lead's newest event time. Pure: no I/O.

Order: every counter, window set, consent set, profile field (newest event time wins;
ties: the later arrival) and the unanswered-touch count depend only on the set of
events applied, not on their order or on how they were batched. Two values record
arrival on purpose: ``days_silent_before`` (the gap before the newest event as it
arrived) and ``react_ts`` (when a lead came back). Events older than the dedup
horizon relative to the newest are late (refused), so order matters for those too.

The record (:meth:`pack` / :func:`unpack`) is one msgpack array, schema
:data:`SCHEMA` (see README "Features": the layout and the migration from the
per-lead hashes and sorted sets of schema 0).
"""

from __future__ import annotations

import bisect
import hashlib
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from engine.events import Event
from features.definitions import COUNTERS, NUMERIC, PROFILE_BUILTIN
from features.spec import (
    AREA_TYPES,
    CONTACTS,
    FLAGS,
    HAND_RAISES,
    MAX_CONTACTS,
    FeatureSpec,
    blocked_channels,
    is_stop,
)  # fmt: skip

__all__ = [
    "APPLIED", "COUNT_FIELDS", "DUPLICATE", "LATE", "SCHEMA", "TEXT_FIELDS", "TIME_FIELDS",
    "LeadFeatures", "Personal", "eid_hash",
    "from_items", "from_legacy", "personal_of", "prop_text", "read_record", "unpack",
]  # fmt: skip

APPLIED, DUPLICATE, LATE = 1, 0, 3
SCHEMA = 1
#: Record schemas whose first 11 fields are these features (2: ``features/record.py``).
READABLE = (1, 2)
#: Integer state in record order (never reorder: append, or bump SCHEMA with a migration).
COUNT_FIELDS: tuple[str, ...] = (
    "n", *sorted(set(COUNTERS.values())), "replies", "not_interested", "invalid_contact",
)  # fmt: skip
#: Clock and sum state in record order.
TIME_FIELDS = (
    "last_ts", "gap_s", "react_ts", "last_reply_ts", "last_hand_ts", "dwell_s", "agent_ts",
    "property_ts", "area_ts", "named_area_ts", "address_ts",
)  # fmt: skip
#: ``named_area``: the area the newest event naming one named (any type, unlike
#: ``last_area``); ``address``: the newest ``props.address``, with ``address_property``,
#: the property its event named: the personalisation fields of follow-up steps
#: (:class:`Personal`, :func:`_address_shown`). Last: a record of a lead without them
#: packs as before (empty fields at the end are not packed).
TEXT_FIELDS = (
    "last_reply_channel", "agent_id", "last_area", "last_property", "named_area", "address",
    "address_property",
)  # fmt: skip
#: The fields of schema 0's feature hash (:meth:`LeadFeatures.legacy_view`).
_LEGACY_TEXTS = TEXT_FIELDS[:4]
_LEGACY_TIMES = TIME_FIELDS[:9]
_SUMS = tuple(f for f in COUNT_FIELDS if f not in FLAGS.values())
#: The feature vector's numeric part before reading (every feature 0), and the features
#: that are counters as they are (built once, not per event).
_NUMERIC_ZERO: dict[str, float | str] = dict.fromkeys(NUMERIC, 0.0)
_COUNTED = tuple(name for name in NUMERIC if name in COUNT_FIELDS)
_read_counted = operator.itemgetter(*_COUNTED)
#: The record's fields of each state dict, in record order (a tuple at once).
_get_counts = operator.itemgetter(*COUNT_FIELDS)
_get_times = operator.itemgetter(*TIME_FIELDS)
_get_texts = operator.itemgetter(*TEXT_FIELDS)
_HASH_BYTES = 6


def eid_hash(event_id: str) -> bytes:
    """The 6-byte hash an event id is remembered by (collision odds ~ k / 2**48)."""
    return hashlib.blake2b(event_id.encode(), digest_size=_HASH_BYTES).digest()


def prop_text(value: Any) -> str:
    """A declared profile value as stored (bounded; non-text becomes text)."""
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value)[:64]


def _num(v: float) -> float | int:
    f = float(v)
    return int(f) if -_BIG < f < _BIG and f.is_integer() else f


_BIG = float(2**62)  # (abs(v) < 2**62, as a float comparison: exact, 2**62 is a float)


@dataclass(slots=True)
class Personal:
    """What a follow-up step may be personalised with (no contact details), as the lead's
    features say after its newest event (newest event time wins, like every feature):
    ``property_id`` its last property, ``address`` the newest ``props.address`` if it
    belongs to that property, ``area`` the area the newest event naming one named,
    ``timeline`` / ``side`` / ``source`` its profile ("unknown" if never said),
    ``agent_id`` its agent. Read-only by convention (one per emitted step)."""

    property_id: str = ""
    address: str = ""
    area: str = ""
    timeline: str = ""
    side: str = ""
    source: str = ""
    agent_id: str = ""


def personal_of(features: Mapping[str, Any], context: Mapping[str, Any]) -> Personal:
    """:meth:`LeadFeatures.personal` from what :meth:`LeadFeatures.features` read (the
    store's reply for an event): the same fields, as of that event."""
    return Personal(
        str(context.get("last_property") or ""), str(context.get("address") or ""),
        str(context.get("named_area") or context.get("last_area") or ""),
        str(features.get("timeline") or ""), str(features.get("side") or ""),
        str(features.get("source") or ""), str(context.get("agent_id") or ""),
    )  # fmt: skip


def _address_shown(texts: Mapping[str, str], times: Mapping[str, float]) -> str:
    """The lead's address for its steps: the newest, while it belongs to the lead's last
    property (the property its event named), or, if its event named none, until an
    event names a property after it. Depends only on the newest values and their event
    times: the same whatever the arrival order."""
    address = texts["address"]
    if not address:
        return ""
    home = texts["address_property"]
    if home:
        return address if home == texts["last_property"] else ""
    return address if times["address_ts"] >= times["property_ts"] else ""


#: A profile field never said (:meth:`LeadFeatures.personal` reads timeline, side and
#: source as the feature vector does: "unknown" if never said).
_UNKNOWN = ("unknown", 0.0)


class LeadFeatures:
    """One lead's rolling feature state (mutable; owned by one worker at a time)."""

    __slots__ = ("counts", "times", "texts", "blocked", "profile", "views", "pids", "areas",
                 "seen", "seen_set", "contacts")  # fmt: skip

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(COUNT_FIELDS, 0)
        self.times: dict[str, float] = dict.fromkeys(TIME_FIELDS, 0.0)
        self.texts: dict[str, str] = dict.fromkeys(TEXT_FIELDS, "")
        self.blocked: set[str] = set()
        self.profile: dict[str, tuple[str, float]] = {}  # field -> (value, event time)
        self.views: list[tuple[float, str]] = []  # (ts, property), sorted
        self.pids: dict[str, float] = {}  # property -> last view time
        self.areas: dict[str, float] = {}  # area -> last time
        self.seen: list[bytes] = []  # event-id hashes, oldest first (bounded)
        self.seen_set: set[bytes] = set()
        self.contacts: list[float] = []  # agent touches after the last reply (sorted)

    @property
    def empty(self) -> bool:
        return self.counts["n"] == 0

    # -- applying an event ---------------------------------------------------------------
    def apply(self, spec: FeatureSpec, ev: Event) -> tuple[int, bool]:
        """Apply ``ev``; returns (status, whether it reactivated the lead)."""
        h = eid_hash(ev.event_id)
        if h in self.seen_set:
            return DUPLICATE, False
        t, ts = self.times, ev.ts
        last = t["last_ts"]
        if last > 0 and ts < last - spec.horizon:
            return LATE, False
        self._remember(spec, h)
        reactivated = ts > last and self._advance(spec, ts, last)
        c = self.counts
        c["n"] += 1
        counter = COUNTERS.get(ev.type)
        if counter is not None:
            c[counter] += 1
        if ev.type in HAND_RAISES and ts >= t["last_hand_ts"]:
            t["last_hand_ts"] = ts
        self._behaviour(spec, ev)
        self._conversation(ev)
        self._profile(spec, ev)
        self._named(ev)
        if ev.dwell_s > 0:
            t["dwell_s"] += ev.dwell_s
        return APPLIED, reactivated

    def _advance(self, spec: FeatureSpec, ts: float, last: float) -> bool:
        """The lead's newest event time moves to ``ts`` (after ``last``): the gap, and
        whether it ends a silence (a reactivation)."""
        t = self.times
        t["last_ts"] = ts
        if last <= 0:
            return False
        t["gap_s"] = ts - last
        if ts - last < spec.silence:
            return False
        t["react_ts"] = ts
        return True

    def _named(self, ev: Event) -> None:
        """The newest agent, named area and address (each newest by event time)."""
        t, ts = self.times, ev.ts
        if ev.agent_id and ts >= t["agent_ts"]:
            self.texts["agent_id"], t["agent_ts"] = ev.agent_id, ts
        if ev.area and ts >= t["named_area_ts"]:
            self.texts["named_area"], t["named_area_ts"] = ev.area, ts
        if ev.props:
            self._address(ev)

    def _remember(self, spec: FeatureSpec, h: bytes) -> None:
        self.seen.append(h)
        self.seen_set.add(h)
        if len(self.seen) > spec.dedup_ids:
            drop = self.seen[: len(self.seen) - spec.dedup_ids]
            del self.seen[: len(drop)]
            self.seen_set.difference_update(drop)

    def _behaviour(self, spec: FeatureSpec, ev: Event) -> None:
        """Window sets, and the newest event's property and area (a view names both)."""
        ts, pid, area = ev.ts, ev.property_id, ev.area
        view = ev.type == "property_view"
        if view and pid:
            bisect.insort(self.views, (ts, pid))
            _touch(self.pids, pid, ts)
            self.trim(spec)
        if view or pid:
            self._newest("last_property", "property_ts", pid, ts)
        if ev.type in AREA_TYPES and area:
            _touch(self.areas, area, ts)
            _trim_map(self.areas, self.times["last_ts"] - spec.w_distinct, spec.max_members)
        if view or (area and ev.type in AREA_TYPES):
            self._newest("last_area", "area_ts", area, ts)

    def _newest(self, name: str, clock: str, value: str, ts: float) -> None:
        if ts >= self.times[clock]:
            self.texts[name], self.times[clock] = value, ts

    def _address(self, ev: Event) -> None:
        """The newest ``props.address`` (bounded), with the property its event named."""
        address = ev.props.get("address")
        if isinstance(address, str) and address and ev.ts >= self.times["address_ts"]:
            self.texts["address"], self.texts["address_property"] = address[:200], ev.property_id
            self.times["address_ts"] = ev.ts

    def _conversation(self, ev: Event) -> None:
        etype = ev.type
        self.blocked.update(blocked_channels(ev))
        if etype == "reply":
            if not is_stop(ev):
                self._reply(ev.ts, ev.channel)
        elif etype == "call_answered":
            self._reply(ev.ts, "call")
        elif etype in CONTACTS:
            if ev.ts > self.times["last_reply_ts"]:
                bisect.insort(self.contacts, ev.ts)
                del self.contacts[:-MAX_CONTACTS]
        if etype in FLAGS:
            self.counts[FLAGS[etype]] = 1

    def _reply(self, ts: float, channel: str) -> None:
        self.counts["replies"] += 1
        if ts >= self.times["last_reply_ts"]:
            self.times["last_reply_ts"] = ts
            self.texts["last_reply_channel"] = channel
            self.contacts = [c for c in self.contacts if c > ts]

    def _profile(self, spec: FeatureSpec, ev: Event) -> None:
        profile, ts = self.profile, ev.ts
        for name in PROFILE_BUILTIN:
            value = getattr(ev, name)
            if value and value != "unknown":
                held = profile.get(name)
                if held is None or ts >= held[1]:
                    profile[name] = (value, ts)
        if not spec.profile:
            return
        for name, key in zip(spec.profile, spec.prop_keys, strict=True):
            value = prop_text(ev.props.get(key))
            if value:  # a declared field's "unknown" is a value like any other
                held = profile.get(name)
                if held is None or ts >= held[1]:
                    profile[name] = (value, ts)

    def trim(self, spec: FeatureSpec) -> None:
        """Drop window members outside every window and beyond the caps (bounded memory)."""
        now, v = self.times["last_ts"], self.views
        cut = bisect.bisect_left(v, (now - spec.view_keep,))
        cut = max(cut, len(v) - spec.max_members)
        if cut > 0:
            del v[:cut]
        _trim_map(self.pids, now - spec.w_distinct, spec.max_members)
        _trim_map(self.areas, now - spec.w_distinct, spec.max_members)

    # -- reading -----------------------------------------------------------------------------
    def features(
        self, spec: FeatureSpec, reactivated_now: bool = False
    ) -> tuple[dict[str, float | str], dict[str, Any]]:
        """(features, context) as of the lead's newest event time."""
        t, c, x = self.times, self.counts, self.texts
        now = t["last_ts"]
        best, best_pid = self._repeat(now - spec.w_repeat)
        views = self.views
        n_views = len(views)
        recency = 0.0
        if t["last_reply_ts"] > 0:
            recency = float(f"{math.exp(-(now - t['last_reply_ts']) / spec.reply_tau):.6g}")
        react = 1.0 if t["react_ts"] > 0 and now - t["react_ts"] <= spec.flag_window else 0.0
        f: dict[str, float | str] = _NUMERIC_ZERO.copy()  # NUMERIC's order, then counts
        f.update(zip(_COUNTED, map(float, _read_counted(c)), strict=True))
        left = bisect.bisect_left
        f["views_24h"] = n_views - left(views, (now - spec.w_short,))
        f["views_7d"] = n_views - left(views, (now - spec.w_mid,))
        f["views_30d"] = n_views - left(views, (now - spec.w_long,))
        f["repeat_views_48h"] = float(best)
        f["distinct_properties_30d"] = _count_since(self.pids, now - spec.w_distinct)
        f["distinct_areas_30d"] = _count_since(self.areas, now - spec.w_distinct)
        f["reply_recency"], f["dwell_min"] = recency, t["dwell_s"] / 60
        f["days_silent_before"], f["reactivated"] = t["gap_s"] / 86_400, react
        f["agent_contacts_unanswered"] = float(self.unanswered())
        for name in (*PROFILE_BUILTIN, *spec.profile):
            f[name] = self.profile.get(name, ("unknown", 0.0))[0] or "unknown"
        context: dict[str, Any] = {
            "last_ts": now, "repeat_property": best_pid, "reactivated_now": reactivated_now,
            "blocked": tuple(sorted(self.blocked)) if self.blocked else (),
            "last_reply_channel": x["last_reply_channel"],
            "not_interested": c["not_interested"] == 1,
            "invalid_contact": c["invalid_contact"] == 1,
            "agent_id": x["agent_id"], "last_area": x["last_area"],
            "last_property": x["last_property"], "last_hand_ts": t["last_hand_ts"],
            "named_area": x["named_area"], "address": _address_shown(x, t),
        }  # fmt: skip
        return f, context

    def personal(self) -> Personal:
        """The personalisation fields of a follow-up step, as of the lead's newest event
        (:class:`Personal`; what :func:`personal_of` reads from :meth:`features`)."""
        x, p = self.texts, self.profile
        timeline = p.get("timeline", _UNKNOWN)[0] or "unknown"  # (no generator: per step)
        side = p.get("side", _UNKNOWN)[0] or "unknown"
        source = p.get("source", _UNKNOWN)[0] or "unknown"
        return Personal(
            x["last_property"], _address_shown(x, self.times), x["named_area"] or x["last_area"],
            timeline, side, source, x["agent_id"],
        )  # fmt: skip

    def views_between(self, lo: float, hi: float) -> list[str]:
        """The properties viewed in [lo, hi], one entry per view (delivery's repeat views)."""
        v = self.views
        return [v[i][1] for i in range(bisect.bisect_left(v, (lo,)), len(v)) if v[i][0] <= hi]

    def unanswered(self) -> int:
        if not self.contacts:
            return 0
        last = self.times["last_reply_ts"]
        return len([1 for ts in self.contacts if ts > last])

    def _repeat(self, since: float) -> tuple[int, str]:
        """The most viewed property since ``since`` (ties: the smallest id) and its count."""
        v = self.views
        counts: dict[str, int] = {}
        for i in range(bisect.bisect_left(v, (since,)), len(v)):
            pid = v[i][1]
            counts[pid] = counts.get(pid, 0) + 1
        best, best_pid = 0, ""
        for pid, n in counts.items():
            if n > best or (n == best and pid < best_pid):
                best, best_pid = n, pid
        return best, best_pid

    # -- folding (identify, merge) -------------------------------------------------------
    def fold(self, spec: FeatureSpec, other: LeadFeatures) -> None:
        """Fold ``other`` (the same person) into this state: sums, unions, newest wins."""
        c, t, oc, ot = self.counts, self.times, other.counts, other.times
        for k in _SUMS:
            c[k] += oc[k]
        for k in FLAGS.values():
            c[k] = max(c[k], oc[k])
        t["dwell_s"] += ot["dwell_s"]
        for k in ("react_ts", "last_hand_ts", "last_ts"):
            t[k] = max(t[k], ot[k])
        self._fold_newest(other)
        for name, (value, ts) in other.profile.items():
            if name not in self.profile or ts > self.profile[name][1]:
                self.profile[name] = (value, ts)
        self._fold_members(spec, other)

    def _fold_newest(self, other: LeadFeatures) -> None:
        """The texts that follow their own clocks: the newer of the two wins."""
        t, x, ot, ox = self.times, self.texts, other.times, other.texts
        if ot["last_reply_ts"] > t["last_reply_ts"]:
            t["last_reply_ts"], x["last_reply_channel"] = (
                ot["last_reply_ts"], ox["last_reply_channel"])  # fmt: skip
        for name, clock in (("last_property", "property_ts"), ("last_area", "area_ts"),
                            ("named_area", "named_area_ts")):  # fmt: skip
            if ot[clock] > t[clock]:
                x[name], t[clock] = ox[name], ot[clock]
        if ot["address_ts"] > t["address_ts"]:
            x["address"], x["address_property"] = ox["address"], ox["address_property"]
            t["address_ts"] = ot["address_ts"]
        if ot["agent_ts"] > t["agent_ts"] and ox["agent_id"]:
            t["agent_ts"], x["agent_id"] = ot["agent_ts"], ox["agent_id"]

    def _fold_members(self, spec: FeatureSpec, other: LeadFeatures) -> None:
        """Unions: closed channels, views, window members, event ids, unanswered contacts
        (after the newest reply of the two), trimmed to the windows."""
        self.blocked |= other.blocked
        self.views = sorted(self.views + other.views)
        for src, dst in ((other.pids, self.pids), (other.areas, self.areas)):
            for k, ts in src.items():
                _touch(dst, k, ts)
        for h in other.seen:
            if h not in self.seen_set:
                self._remember(spec, h)
        self.contacts = sorted(ts for ts in set(self.contacts + other.contacts)
                               if ts > self.times["last_reply_ts"])[-MAX_CONTACTS:]  # fmt: skip
        self.trim(spec)

    # -- the record ------------------------------------------------------------------------
    def pack(self, spec: FeatureSpec) -> bytes:
        """The features alone as one msgpack array (schema :data:`SCHEMA`; the stored
        lead record, ``features/record.py``, begins with the same fields)."""
        return msgpack.packb([SCHEMA, *self.items(spec)], use_bin_type=True)

    def items(self, spec: FeatureSpec | None) -> list[Any]:
        """The record's feature fields (indexes 1-10 of the record), trimmed first."""
        if spec is not None:
            self.trim(spec)
        pids, areas = self.pids, self.areas
        return [
            _strip(list(_get_counts(self.counts)), 0),
            _strip(_nums(_get_times(self.times)), 0),
            _strip(list(_get_texts(self.texts)), ""),
            sorted(self.blocked), {k: [v, _num(ts)] for k, (v, ts) in self.profile.items()},
            _flat(self.views), _flat(sorted(zip(pids.values(), pids, strict=True))),
            _flat(sorted(zip(areas.values(), areas, strict=True))), b"".join(self.seen),
            _nums(self.contacts),
        ]  # fmt: skip

    def legacy_view(self) -> dict[str, str]:
        """The fields of schema 0's feature hash (``h``), for readers of the lead."""
        t, x = self.times, self.texts
        out = {k: str(_num(v)) for k, v in self.counts.items() if v}
        out.update({k: str(_num(t[k])) for k in _LEGACY_TIMES if t[k]})
        out.update({k: x[k] for k in _LEGACY_TEXTS if x[k]})
        out.update({k: v for k, (v, _) in self.profile.items()})
        out["unanswered"] = str(self.unanswered())
        if self.blocked:
            out["blocked"] = ",".join(sorted(self.blocked))
        return out


def unpack(blob: bytes) -> LeadFeatures:
    """A record back to state; raises ``ValueError`` on a record it cannot read. Reads
    schema 1 (features alone) and the lead record of ``features/record.py`` (schema 2:
    the same fields first, then the lead's score record, moments and report marks)."""
    try:
        r = msgpack.unpackb(blob, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"unreadable feature record: {exc}") from None
    return from_items(r)


def from_items(r: Any) -> LeadFeatures:
    """The features of a decoded record (schema 1 or 2); ``ValueError`` if unreadable."""
    if not isinstance(r, list) or len(r) < 11 or r[0] not in READABLE:
        head = r[0] if isinstance(r, list) and r else None
        raise ValueError(f"unknown feature record schema: {head!r}")
    try:
        return _from_fields(r)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise ValueError(f"malformed feature record: {exc.__class__.__name__}") from None


def _from_fields(r: list[Any]) -> LeadFeatures:
    s = LeadFeatures()
    s.counts.update(zip(COUNT_FIELDS, (int(v) for v in r[1]), strict=False))
    s.times.update(zip(TIME_FIELDS, (float(v) for v in r[2]), strict=False))
    s.texts.update(zip(TEXT_FIELDS, (str(v) for v in r[3]), strict=False))
    s.blocked = {str(c) for c in r[4]}
    s.profile = {str(k): (str(v), float(ts)) for k, (v, ts) in r[5].items()}
    s.views = sorted((float(r[6][i]), str(r[6][i + 1])) for i in range(0, len(r[6]) - 1, 2))
    s.pids = {str(r[7][i + 1]): float(r[7][i]) for i in range(0, len(r[7]) - 1, 2)}
    s.areas = {str(r[8][i + 1]): float(r[8][i]) for i in range(0, len(r[8]) - 1, 2)}
    seen = bytes(r[9])
    s.seen = [seen[i : i + _HASH_BYTES] for i in range(0, len(seen) - _HASH_BYTES + 1, _HASH_BYTES)]
    s.seen_set = set(s.seen)
    s.contacts = sorted(float(v) for v in r[10])
    return s


def read_record(blob: bytes | None) -> LeadFeatures:
    """A stored record for a reader (gateway, delivery): empty if absent or unreadable."""
    if blob is None:
        return LeadFeatures()
    try:
        return unpack(blob)
    except ValueError:
        return LeadFeatures()


def from_legacy(
    spec: FeatureSpec,
    h: Mapping[str, str],
    events: list[tuple[str, float]],
    views: list[tuple[str, float]],
    areas: list[tuple[str, float]],
) -> LeadFeatures:
    """Schema 0 (hash ``h`` + sorted sets ``e``, ``v``, ``a``, ``p``) -> a state (migration)."""

    def num(k: str) -> float:
        try:
            return float(h.get(k) or 0)
        except ValueError:
            return 0.0

    s = LeadFeatures()
    s.counts.update({k: int(num(k)) for k in COUNT_FIELDS})
    s.times.update({k: num(k) for k in TIME_FIELDS})
    for name, clock in (
        ("agent_id", "agent_ts"),
        ("last_property", "property_ts"),
        ("last_area", "area_ts"),
    ):
        s.times[clock] = s.times["last_ts"] if h.get(name) else 0.0
    s.texts.update({k: str(h.get(k) or "") for k in TEXT_FIELDS})
    s.blocked = {c for c in str(h.get("blocked") or "").split(",") if c}
    s.profile.update(_legacy_profile(spec, h, num))
    s.contacts = [s.times["last_ts"]] * min(int(num("unanswered")), MAX_CONTACTS)
    for eid, _ in sorted(events, key=lambda m: m[1]):
        s._remember(spec, eid_hash(eid))
    for member, ts in views:
        pid = member.split("|", 1)[-1]
        bisect.insort(s.views, (ts, pid))
        _touch(s.pids, pid, ts)
    for area, ts in areas:
        _touch(s.areas, area, ts)
    s.trim(spec)
    return s


def _legacy_profile(
    spec: FeatureSpec, h: Mapping[str, str], num: Callable[[str], float]
) -> dict[str, tuple[str, float]]:
    """Schema 0's profile fields: the built-in ones by name, a tenant's as ``pp<i>``."""
    out: dict[str, tuple[str, float]] = {}
    for name in PROFILE_BUILTIN:
        if h.get(name):
            out[name] = (str(h[name]), num(f"{name}_ts"))
    for i, name in enumerate(spec.profile, start=1):
        if h.get(f"pp{i}"):
            out[name] = (str(h[f"pp{i}"]), num(f"pp{i}_ts"))
    return out


def _touch(m: dict[str, float], key: str, ts: float) -> None:
    if ts > m.get(key, -math.inf):
        m[key] = ts


def _trim_map(m: dict[str, float], since: float, cap: int) -> None:
    if m and min(m.values()) < since:  # (min in C: most calls have nothing to drop)
        for k in [k for k, ts in m.items() if ts < since]:
            del m[k]
    if len(m) > cap:
        for _, k in sorted((ts, k) for k, ts in m.items())[: len(m) - cap]:
            del m[k]


def _count_since(m: dict[str, float], since: float) -> float:
    if not m or min(m.values()) >= since:  # the usual case (windows are trimmed), in C
        return float(len(m))
    return float(len([1 for ts in m.values() if ts >= since]))


def _strip(values: list[Any], zero: Any) -> list[Any]:
    while values and values[-1] == zero:
        values.pop()
    return values


def _nums(values: Sequence[float]) -> list[Any]:
    """:func:`_num` of each, with no Python call per value: most are timestamps with a
    fraction, floats as they are (checked in C)."""
    try:
        if not any(map(float.is_integer, values)):  # TypeError: not all floats
            return list(values)
    except TypeError:
        pass
    return [int(f) if f.is_integer() and -_BIG < f < _BIG else f for f in map(float, values)]


def _flat(pairs: list[tuple[float, str]]) -> list[Any]:
    """``[ts, key, ts, key, ...]``, each ``ts`` as :func:`_num` makes it."""
    out: list[Any] = [None] * (2 * len(pairs))
    if pairs:
        times, keys = zip(*pairs, strict=True)
        out[::2] = _nums(times)
        out[1::2] = keys
    return out
