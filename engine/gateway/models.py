"""The gateway's HTTP shapes, for responses and for ``/openapi.json``.

:class:`EventIn` documents contract v1 in the schema only: requests are validated
by the engine's validator (``engine/validate.py``), which answers per event, not by
these models, so a bad event never fails a whole batch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ErrorOut",
    "EventIn",
    "EventResult",
    "HealthOut",
    "HotListOut",
    "IngestOut",
    "LeadOut",
    "PartitionOut",
    "ScoreOut",
]


class EventIn(BaseModel):
    """A contract-v1 event (README "Event contract v1"). ``lead_id`` or ``visitor_id``."""

    model_config = ConfigDict(extra="allow", title="Event")

    event_id: str = Field(min_length=1, max_length=128, description="unique per tenant")
    lead_id: str | None = Field(None, max_length=128)
    visitor_id: str | None = Field(None, max_length=127, description="anonymous browser id")
    type: str = Field(description="one of the contract-v1 event types, e.g. property_view")
    ts: float | str = Field(description="epoch seconds, or ISO-8601 with a UTC offset")
    tenant: str | None = Field(None, description="must be the API key's tenant if given")
    property_id: str | None = None
    price: float | None = Field(None, ge=0, le=1e10)
    area: str | None = None
    source: str | None = None
    side: str | None = None
    timeline: str | None = None
    channel: str | None = None
    dwell_s: float | None = Field(None, ge=0, le=86_400)
    agent_id: str | None = None
    props: dict[str, Any] | None = Field(
        None,
        description="free-form extras; props.email / props.phone are replaced by keyed "
        "hashes (props.email_hash / props.phone_hash) before anything is stored",
    )


class EventResult(BaseModel):
    index: int = Field(description="position in the request array")
    status: Literal["accepted", "duplicate", "rejected"]
    event_id: str | None = Field(None, description="for accepted and duplicate events")
    reason: str | None = Field(None, description="for rejected events: a stable reason code")
    notes: list[str] = Field(
        default_factory=list, description="what was dropped from an accepted event, and why"
    )


class IngestOut(BaseModel):
    accepted: int
    duplicate: int
    rejected: int
    results: list[EventResult]


class ErrorOut(BaseModel):
    error: str = Field(description="a stable error code, e.g. unauthorized, rate_limited")
    detail: str = Field(description="what is wrong, in words")


class ScoreOut(BaseModel):
    """The engine's score record (``engine.views.score_record``); newer fields pass through."""

    model_config = ConfigDict(extra="allow")

    tenant: str
    lead_id: str
    score: int = Field(ge=0, le=100)
    probability: float
    bucket: str
    tier: str
    reasons: list[Any]
    prior_probability: float
    model_weight: float
    ts: float = Field(description="event time of the event that produced this score")
    last_event_id: str
    agent_id: str
    blocked_channels: list[str]


class CadenceOut(BaseModel):
    """The lead's follow-up plan (engine/cadence): where it is, what is next, and why."""

    plan: str
    label: str
    status: Literal["active", "paused", "ended"]
    step: int = Field(description="index of the next step in the plan")
    steps: int | None = Field(description="steps in the plan (null: no longer configured)")
    cycle: int = Field(description="plans the lead has entered so far")
    next_due_ts: float | None = Field(description="event time the next step or resume is due")
    next_due_local: str | None = Field(description="the same in the tenant's time zone")
    next_step: dict[str, Any] | None
    why: str
    ended: str | None = Field(description="why the plan ended (lost, completed, ...)")
    blocked_channels: list[str]


class LeadOut(BaseModel):
    tenant: str
    lead_id: str
    score: ScoreOut | None = Field(description="null until the engine has scored the lead")
    cadence: CadenceOut | None = Field(
        default=None, description="the follow-up plan, null when the lead is in none"
    )
    features: dict[str, float | str] = Field(
        description="the lead's lifetime counters and profile from its feature hash "
        "(windowed counts such as views_7d are in the score's reasons)"
    )
    last_event_ts: float | None


class HotListOut(BaseModel):
    tenant: str
    leads: list[ScoreOut]


class PartitionOut(BaseModel):
    partition: int
    committed: str = Field(description="last stream id whose batch the engine committed")
    lag: int = Field(description="entries after it (counted up to a cap)")
    lag_capped: bool
    oldest_age_s: float | None = Field(description="age of the oldest unprocessed entry")


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    redis: str
    lag: int | None = None
    partitions: list[PartitionOut] = Field(default_factory=list)
