"""``[cadence]``: follow-up plans as configuration (README "Follow-up cadences").

A plan is a list of steps; a step has an offset from the plan's start (``at``: "0m",
"2h", "1d", "14d", "1d2h"), a channel (call, voicemail, sms, email), a template id, a
goal and a kind: ``task`` (an agent does it: shown on the agent's feed and page) or
``message`` (an automatic message: sent to the tenant's delivery targets, never a
call or a voicemail). Rules, first match wins, say which plan a lead enters by its
source, intent tier, side, score bucket, the event or the alert triggers; a plan's
``heat`` orders plans, so a hand-raise or a score jump moves a lead to a hotter one.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "CHANNELS", "CadenceSettings", "PlanSettings", "RuleSettings", "StepSettings", "offset_s",
]  # fmt: skip

CHANNELS = ("call", "voicemail", "sms", "email")
Channel = Literal["call", "voicemail", "sms", "email"]
_OFFSET = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?$")
_NAME = r"^[a-z][a-z0-9_]{0,39}$"


def offset_s(text: str) -> float:
    """Seconds of an offset such as "0m", "2h", "1d", "1d2h30m"."""
    m = _OFFSET.fullmatch(text.strip())
    if m is None or not text.strip() or not any(m.groups()):
        raise ValueError(f"offset {text!r} must look like 0m, 15m, 2h, 1d or 1d2h30m")
    d, h, mins = (int(g or 0) for g in m.groups())
    return d * 86_400.0 + h * 3_600.0 + mins * 60.0


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StepSettings(_Section):
    at: str
    channel: Channel
    template: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,80}$")
    goal: str = Field(min_length=1, max_length=200)
    kind: Literal["task", "message"]

    @field_validator("at")
    @classmethod
    def _at(cls, v: str) -> str:
        offset_s(v)
        return v

    @model_validator(mode="after")
    def _sendable(self) -> StepSettings:
        if self.kind == "message" and self.channel in ("call", "voicemail"):
            raise ValueError(f'a {self.channel} cannot be an automatic message: kind = "task"')
        return self


class PlanSettings(_Section):
    label: str = Field(min_length=1, max_length=80)  # "hot track": what an agent reads
    heat: int = Field(0, ge=0, le=100)  # hotter plans win when a lead qualifies for one
    next: str = ""  # the plan entered after the last step ("": the plan ends there)
    steps: tuple[StepSettings, ...] = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _ordered(self) -> PlanSettings:
        offsets = [offset_s(s.at) for s in self.steps]
        if offsets != sorted(offsets):
            raise ValueError("steps must be in order of their offset (at)")
        return self


class RuleSettings(_Section):
    plan: str = Field(pattern=_NAME)
    sources: tuple[str, ...] = ()
    tiers: tuple[Literal["hot", "warm", "long-term"], ...] = ()
    sides: tuple[Literal["buyer", "seller", "both", "unknown"], ...] = ()
    buckets: tuple[Literal["P1", "P2", "P3", "P4", "P5"], ...] = ()
    events: tuple[str, ...] = ()  # the event types that match (e.g. the hand-raises)
    triggers: tuple[str, ...] = ()  # alert triggers that match, by prefix ("jump", "hand_raise")
    reactivated: bool | None = None  # back after the reactivation silence


class CadenceSettings(_Section):
    enabled: bool = False
    tick_ms: int = Field(250, ge=10, le=60_000)  # live: idle partitions check due steps this often
    quiet_channels: tuple[Channel, ...] = ("call", "voicemail", "sms")
    resume_after_d: float = Field(7, gt=0, le=365)  # a paused plan resumes after this silence
    # a lead moves up into a plan at most once per this many days (a score jump or a
    # hand-raise does not send it back into a track it entered within this period)
    rerun_after_d: float = Field(30, ge=0, le=365)
    # send time that learns: after this many opens, clicks or replies (0: off), a lead's
    # automatic messages move forward, by at most send_time_max_shift_h, to the hour of day
    # it engages most (then out of quiet hours); a holdout share of leads keeps the plan's
    # times, so the report can say whether it helped
    send_time_min_signals: int = Field(2, ge=0, le=100)
    send_time_max_shift_h: float = Field(12, ge=0, le=48)
    send_time_holdout: float = Field(0.2, ge=0, le=1)
    max_due_per_batch: int = Field(2_000, ge=1, le=100_000)  # per partition; the rest next time
    rules: tuple[RuleSettings, ...] = ()
    plans: dict[str, PlanSettings] = Field(default_factory=dict)

    @field_validator("plans")
    @classmethod
    def _names(cls, v: dict[str, PlanSettings]) -> dict[str, PlanSettings]:
        for name in v:
            if not re.fullmatch(_NAME, name):
                raise ValueError(f"plan name {name!r} must match {_NAME}")
        return v

    @model_validator(mode="after")
    def _known(self) -> CadenceSettings:
        names = set(self.plans)
        for i, rule in enumerate(self.rules):
            if rule.plan not in names:
                raise ValueError(f"rules[{i}]: unknown plan {rule.plan!r}; plans: {sorted(names)}")
        for name, plan in self.plans.items():
            if plan.next and plan.next not in names:
                raise ValueError(f"plans.{name}.next: unknown plan {plan.next!r}")
        return self
