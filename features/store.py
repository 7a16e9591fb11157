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

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

import msgpack
import redis

from engine.events import Event
from engine.settings import FeatureSettings
from features.definitions import parse_reply

__all__ = ["APPLIED", "DUPLICATE", "FeatureReply", "FeatureStore", "LATE", "REPLAYED", "lead_key"]

APPLIED, DUPLICATE, REPLAYED, LATE = 1, 0, 2, 3
_HOUR = 3600.0
_DAY = 86_400.0
_PARTS = ("h", "e", "v", "a", "x", "s", "n")
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})


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


def _is_stop(event: Event) -> bool:
    text = event.props.get("text") if event.type == "reply" else None
    return isinstance(text, str) and text.strip().upper() in STOP_WORDS


class FeatureStore:
    """Applies events to Redis; one pipeline round trip per batch."""

    def __init__(self, client: redis.Redis, settings: FeatureSettings, prefix: str) -> None:
        self._r = client
        self._prefix = prefix
        source = resources.files("features").joinpath("update.lua").read_text()
        self._script = client.register_script(source)
        w = settings.view_windows_h
        self._config = [
            w[0] * _HOUR,
            w[1] * _HOUR,
            w[2] * _HOUR,
            settings.repeat_window_h * _HOUR,
            settings.distinct_window_h * _HOUR,
            settings.reactivation_silence_d * _DAY,
            settings.reactivation_flag_d * _DAY,
            settings.dedup_horizon_h * _HOUR,
            settings.max_window_members,
            int(settings.idle_expire_d * _DAY),
            72 * _HOUR,  # reply recency halves in about two days
        ]

    def keys(self, tenant: str, lead_id: str) -> list[str]:
        """The seven keys the script touches, in its KEYS order."""
        return [
            lead_key(self._prefix, tenant, lead_id, p) for p in ("h", "e", "v", "a", "x", "s", "n")
        ]

    def apply(self, events: Sequence[Event]) -> list[FeatureReply]:
        """Apply a batch in order, in one pipelined round trip (EVALSHA, reloading if needed)."""
        if not events:
            return []
        pipe = self._r.pipeline(transaction=False)
        for ev in events:
            args = [
                ev.event_id, ev.type, ev.ts, ev.property_id, ev.area, ev.source, ev.side,
                ev.timeline, ev.channel, ev.dwell_s, ev.agent_id, "stop" if _is_stop(ev) else "",
                *self._config,
            ]  # fmt: skip
            self._script(keys=self.keys(ev.tenant, ev.lead_id), args=args, client=pipe)
        return [self._parse(r) for r in pipe.execute()]

    @staticmethod
    def _parse(reply: list[Any]) -> FeatureReply:
        status = int(reply[0])
        if status in (DUPLICATE, LATE):
            return FeatureReply(status, {}, {}, {}, [])
        feats, context = parse_reply(msgpack.unpackb(reply[1], raw=False))
        flat = reply[2]
        state = {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)}
        return FeatureReply(status, feats, context, state, list(reply[3]))

    def read(self, tenant: str, lead_id: str) -> dict[str, str]:
        """The raw feature hash of a lead (for inspection and tests)."""
        key = lead_key(self._prefix, tenant, lead_id, "h")
        raw = cast(dict[bytes, bytes], self._r.hgetall(key))
        return {_s(k): _s(v) for k, v in raw.items()}


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
