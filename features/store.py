"""The Redis feature store: one atomic, idempotent script call per event, pipelined.

All keys of a lead share the hash tag ``{tenant:lead}`` so they live in one slot.
The script (``update.lua``) applies an event once (by ``event_id``), trims its
windows, and returns the lead's feature vector as of the lead's newest event time,
the lead's score state, and (for outcome events) its learning snapshots.

A reply is cached under the lead until the batch commits (``x`` hash), so an event
that was applied but whose batch never committed (a crash) gets the *same* reply
again on replay: that is what makes a restart produce exactly what an
uninterrupted run produces.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, cast

import msgpack
import redis

from engine.events import Event, partition_of
from engine.settings import FeatureSettings
from features.definitions import COUNTERS, NUMERIC, parse_reply, profile_prop

__all__ = ["APPLIED", "DUPLICATE", "FeatureReply", "FeatureStore", "LATE", "REPLAYED", "lead_key"]

APPLIED, DUPLICATE, REPLAYED, LATE = 1, 0, 2, 3
_HOUR = 3600.0
_DAY = 86_400.0
_PARTS = ("h", "e", "v", "a", "x", "s", "n", "p")
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})


def hot_key(prefix: str, tenant: str) -> str:
    """Per-tenant hot list: a sorted set of lead ids by score."""
    return f"{prefix}:hot:{tenant}"


def due_key(prefix: str, partition: int) -> str:
    """Per partition: leads with learning snapshots, by their oldest snapshot's event time."""
    return f"{prefix}:due:{partition}"


def alias_key(prefix: str, tenant: str) -> str:
    """Per tenant: lead id -> the lead it was folded into (identify, merge)."""
    return f"{prefix}:alias:{tenant}"


def lead_key(prefix: str, tenant: str, lead_id: str, part: str) -> str:
    """Key of one piece of a lead's state; the ``{tenant:lead}`` tag keeps a lead in one slot."""
    return f"{prefix}:{{{tenant}:{lead_id}}}:{part}"


@dataclass(frozen=True, slots=True)
class FeatureReply:
    """What the store says about one event."""

    status: int
    features: dict[str, float | str]
    context: dict[str, Any]
    score_state: dict[str, str]
    snapshots: list[bytes]


#: Score-state fields the script returns with every reply (for the alert rules).
STATE_FIELDS = (
    "score", "bucket", "last_alert_ts", "jump_base", "jump_base_ts", "moment", "outcome",
    "outcome_ts",
)  # fmt: skip


_WINDOWED = {
    "views_24h": "redis.call('ZCOUNT', v, now - w_short, '+inf')",
    "views_7d": "redis.call('ZCOUNT', v, now - w_mid, '+inf')",
    "views_30d": "redis.call('ZCOUNT', v, now - w_long, '+inf')",
    "repeat_views_48h": "best",
    "distinct_properties_30d": "redis.call('ZCOUNT', p, now - w_distinct, '+inf')",
    "distinct_areas_30d": "redis.call('ZCOUNT', a, now - w_distinct, '+inf')",
    "reply_recency": "string.format('%.6g', reply_recency)",
    "dwell_min": "string.format('%.17g', num('dwell_s') / 60)",
    "days_silent_before": "string.format('%.17g', num('gap_s') / 86400)",
    "reactivated": "reactivated",
    "agent_contacts_unanswered": "f('unanswered')",
}
#: The Lua expression of each numeric feature (a counter is read as stored).
_LUA_NUMERIC = {name: _WINDOWED.get(name, f"f('{name}')") for name in NUMERIC}


def script_source(settings: FeatureSettings) -> str:
    """``update.lua`` with the configured windows baked in (one argument per event on the wire)."""
    w = settings.view_windows_h
    values = {
        "W_SHORT_S": w[0] * _HOUR,
        "W_MID_S": w[1] * _HOUR,
        "W_LONG_S": w[2] * _HOUR,
        "W_REPEAT_S": settings.repeat_window_h * _HOUR,
        "W_DISTINCT_S": settings.distinct_window_h * _HOUR,
        "REACTIVATION_SILENCE_S": settings.reactivation_silence_d * _DAY,
        "REACTIVATION_FLAG_S": settings.reactivation_flag_d * _DAY,
        "DEDUP_HORIZON_S": settings.dedup_horizon_h * _HOUR,
        "MAX_MEMBERS": settings.max_window_members,
        "IDLE_EXPIRE_S": int(settings.idle_expire_d * _DAY),
        "REPLY_TAU_S": 72 * _HOUR,  # reply recency falls to 1/e in three days
    }
    text = resources.files("features").joinpath("update.lua").read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", repr(float(value)))
    text = text.replace("@STATE_FIELDS@", ", ".join(f"'{f}'" for f in STATE_FIELDS))
    counters = ", ".join(f"{etype}='{name}'" for etype, name in COUNTERS.items())
    text = text.replace("@COUNTERS@", "{" + counters + "}")
    text = text.replace("@NUMERIC_EXPR@", ", ".join(_LUA_NUMERIC[n] for n in NUMERIC))
    text = text.replace("@N_PROPS@", str(len(settings.profile)))
    if "@" in text:
        raise ValueError("update.lua has an unfilled @PLACEHOLDER@")
    return text


def fold_source(settings: FeatureSettings) -> str:
    """``fold.lua`` with the counters it sums and the declared profile fields filled in."""
    text = resources.files("features").joinpath("fold.lua").read_text()
    sums = ["n", *sorted(set(COUNTERS.values())), "replies", "unanswered", "dwell_s"]
    text = text.replace("@SUMS@", ", ".join(f"'{k}'" for k in sums))
    fields = "".join(f", 'pp{i + 1}'" for i in range(len(settings.profile)))
    return text.replace("@PROFILE_FIELDS@", fields)


def _prop_text(value: Any) -> str:
    """A declared profile value as the script stores it (bounded; non-text becomes text)."""
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value)[:64]


def _is_stop(event: Event) -> bool:
    text = event.props.get("text") if event.type == "reply" else None
    return isinstance(text, str) and text.strip().upper() in STOP_WORDS


class FeatureStore:
    """Applies events to Redis; one pipeline round trip per batch."""

    def __init__(
        self, client: redis.Redis, settings: FeatureSettings, prefix: str, partitions: int = 1
    ) -> None:
        self._r = client
        self._prefix = prefix
        self._script = client.register_script(script_source(settings))
        self._fold = client.register_script(fold_source(settings))
        self._partitions = partitions
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="feature-store")
        self._idle = int(settings.idle_expire_d * _DAY)
        self._profile = settings.profile
        self._props = [profile_prop(name) or name for name in settings.profile]

    def keys(self, tenant: str, lead_id: str) -> list[str]:
        """The keys the script touches, in its KEYS order."""
        base = f"{self._prefix}:{{{tenant}:{lead_id}}}:"
        return [base + part for part in _PARTS]

    def resolve_aliases(self, events: list[Event]) -> list[Event]:
        """Anonymous events of a visitor already folded into a lead go to that lead.

        The visitor's events and its ``identify`` travel on different partitions, so
        some anonymous events can be applied after the fold; without this they would
        start a new anonymous state. One round trip, only when the batch has ``~`` ids.
        """
        wanted = {(e.tenant, e.lead_id) for e in events if e.lead_id.startswith("~")}
        if not wanted:
            return events
        pairs = sorted(wanted)
        pipe = self._r.pipeline(transaction=False)
        for tenant, lead in pairs:
            pipe.hget(alias_key(self._prefix, tenant), lead)
        found = {
            pair: target.decode()
            for pair, target in zip(pairs, pipe.execute(), strict=True)
            if target is not None
        }
        if not found:
            return events
        return [
            replace(e, lead_id=found[(e.tenant, e.lead_id)])
            if (e.tenant, e.lead_id) in found and e.type != "identify"
            else e
            for e in events
        ]

    def apply(self, events: Sequence[Event]) -> list[FeatureReply]:
        """Apply a batch in order, in one pipelined round trip (EVALSHA, reloading if needed)."""
        if not events:
            return []
        pipe = self._r.pipeline(transaction=False)
        pack = msgpack.Packer(use_bin_type=False).pack
        script = self._script
        props = self._props
        folds = 0
        for ev in events:
            if ev.type == "identify" and ev.visitor_id and ev.lead_id != f"~{ev.visitor_id}":
                self._queue_fold(pipe, ev.tenant, f"~{ev.visitor_id}", ev.lead_id)
                folds += 1
            packed = pack(
                (
                    ev.event_id, ev.type, ev.ts, ev.property_id, ev.area, ev.source, ev.side,
                    ev.timeline, ev.channel, ev.dwell_s, ev.agent_id,
                    "stop" if ev.type == "reply" and _is_stop(ev) else "",
                    [_prop_text(ev.props.get(k)) for k in props],
                )
            )  # fmt: skip
            script(keys=self.keys(ev.tenant, ev.lead_id), args=(packed,), client=pipe)
        replies = pipe.execute()
        if folds:  # fold replies sit before their identify event's reply
            replies = [r for r in replies if isinstance(r, list)]
        return [self._parse(r) for r in replies]

    def apply_iter(self, events: Sequence[Event], chunk: int = 128) -> Iterator[FeatureReply]:
        """Replies in event order, applied chunk by chunk on a helper thread.

        While the caller scores chunk ``k``, Redis already runs the scripts of chunk
        ``k + 1``: the server's time overlaps the client's instead of adding to it (the
        chunks are still applied strictly in order, one after the other).
        """
        if len(events) <= chunk:
            yield from self.apply(events)
            return
        results: queue.Queue[list[FeatureReply] | BaseException] = queue.Queue()

        def work() -> None:
            try:
                for start in range(0, len(events), chunk):
                    results.put(self.apply(events[start : start + chunk]))
            except BaseException as exc:  # handed to the caller, raised there
                results.put(exc)

        self._pool.submit(work)
        for _ in range(0, len(events), chunk):
            item = results.get()
            if isinstance(item, BaseException):
                raise item
            yield from item

    def _queue_fold(self, pipe: Any, tenant: str, source: str, target: str) -> None:
        p = self._prefix
        source_due = due_key(p, partition_of(tenant, source, self._partitions))
        target_due = due_key(p, partition_of(tenant, target, self._partitions))
        keys = [
            *self.keys(tenant, source), *self.keys(tenant, target), alias_key(p, tenant),
            hot_key(p, tenant), source_due, target_due,
        ]  # fmt: skip
        args: list[str | int] = [
            source, target, f"{tenant}\x1f{source}", self._idle, f"{tenant}\x1f{target}",
        ]  # fmt: skip
        self._fold(keys=keys, args=args, client=pipe)

    def merge(self, tenant: str, keep: str, other: str) -> bool:
        """Fold lead ``other`` into ``keep`` (the same person from two sources) and leave a
        pointer; True if there was state to fold. Idempotent."""
        pipe = self._r.pipeline(transaction=False)
        self._queue_fold(pipe, tenant, other, keep)
        return bool(pipe.execute()[0])

    def _parse(self, reply: list[Any]) -> FeatureReply:
        status = reply[0]
        if status in (DUPLICATE, LATE):
            return FeatureReply(status, {}, {}, {}, [])
        feats, context = parse_reply(reply[1].decode().split("\x1f"), self._profile)
        state = {k: _s(v) for k, v in zip(STATE_FIELDS, reply[2], strict=True) if v is not None}
        return FeatureReply(status, feats, context, state, reply[3])

    def read(self, tenant: str, lead_id: str) -> dict[str, str]:
        """The raw feature hash of a lead (for inspection and tests)."""
        key = lead_key(self._prefix, tenant, lead_id, "h")
        raw = cast(dict[bytes, bytes], self._r.hgetall(key))
        return {_s(k): _s(v) for k, v in raw.items()}


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
