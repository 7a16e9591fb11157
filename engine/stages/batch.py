"""What the stages of a batch hand each other: entries, a lead's state in the batch, results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine import alerts as rules
from engine.events import OUTCOME_TYPES, Event
from engine.learning import Moments
from engine.model import OnlineModel
from engine.scoring import Score
from features.store import FeatureReply

__all__ = ["LABEL_KINDS", "OUTCOMES", "BatchResult", "Entry", "LeadInBatch", "Scored",
           "first_and_last"]  # fmt: skip

OUTCOMES = frozenset(OUTCOME_TYPES)
#: ``leadpulse_labels_total{label}``: examples learned (positive, negative: an explicit
#: ``lost``, expired: the horizon passed with no outcome) and outcome events that taught
#: nothing (repeat_outcome: the lead's first outcome already counted; no_moment: nothing
#: to label, e.g. an outcome for an unknown lead).
LABEL_KINDS = ("positive", "negative", "expired", "repeat_outcome", "no_moment")

#: One stream entry as the source hands it over: (partition, stream id, fields).
Entry = tuple[int, bytes, dict[bytes, bytes]]


@dataclass(slots=True)
class Scored:
    """One event's score with what its reasons are made from (``engine/stages/score.py``).
    Read-only by convention (not ``frozen``: one is made per event, and a frozen
    dataclass's ``__init__`` costs ~3x a plain one); :meth:`with_score` makes a changed one."""

    event: Event
    score: Score
    reply: FeatureReply
    ready: bool  # the model was ready (it scored the event); its input is built when explained
    model: OnlineModel
    points: Mapping[str, float]  # the points prior's points per signal
    segment: str

    def with_score(self, score: Score) -> Scored:
        """This with another score (``dataclasses.replace`` without its field walk)."""
        return Scored(
            self.event, score, self.reply, self.ready, self.model, self.points, self.segment
        )


@dataclass
class LeadInBatch:
    """A lead's mutable state while its events in one batch are scored."""

    partition: int
    alert: rules.AlertState
    snaps: Moments
    outcome: str = ""  # the lead's first outcome: no example is made after it
    outcome_ts: float = 0.0
    placeholder: bool = False  # made by the expiry sweep before any event of the lead
    stored_bucket: tuple[str, str] = ("", "")  # (bucket, bucket_by) of its stored record
    latest_view: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None  # its record's
    pending: dict[str, Any] | None = None  # the latest moment, packed only when it lasts
    latest: Scored | None = None  # the latest scored event not yet stored


@dataclass(frozen=True)
class BatchResult:
    """What a batch produced, for callers that print or count (demo, replay, tests)."""

    alerts: tuple[dict[str, Any], ...]
    processed: int
    rejected: int
    duplicates: int


def first_and_last(events: Sequence[Event]) -> tuple[list[bool], dict[tuple[str, str], int]]:
    """Which events are the first of their id in the batch, and each lead's last one (its
    score is stored, so it gets reasons at once, with the model as it is at that moment,
    whatever the batch boundaries)."""
    seen: set[tuple[str, str]] = set()
    first: list[bool] = []
    last_of: dict[tuple[str, str], int] = {}
    for i, event in enumerate(events):
        first.append((event.tenant, event.event_id) not in seen)
        seen.add((event.tenant, event.event_id))
        if first[-1]:
            last_of[(event.tenant, event.lead_id)] = i
    return first, last_of
