"""Settings of a tenant's delivery targets beside its signed webhook (README "Integrations").

``[delivery.tenants.<t>.targets.<id>]``, one table per target:

- ``kind = "http"``: a CRM write-back of your own shape: ``method``, ``url`` (a template:
  ``{lead_id}``, ``{crm_id}``, ``{tenant}``, ``{alert_id}``), ``auth`` (``none``,
  ``basic`` with ``username`` + ``secret``, ``bearer`` with ``secret``), ``headers``
  (a value may say ``{secret}``) and ``body`` (a table whose string values are templates;
  a value that is one placeholder keeps its type, so ``score = "{score}"`` is a number);
- ``kind = "fub"``: Follow Up Boss, ready made: ``PUT {url}/v1/people/{crm_id}`` with the
  custom fields in ``fields``, Basic auth with the API key (``secret``), ``X-System`` /
  ``X-System-Key``; with ``receive = true`` its webhooks come in at
  ``POST /v1/crm/<tenant>/<id>`` (``engine/gateway/crm.py``);
- ``kind = "slack"`` / ``"teams"``: a chat message per alert (Block Kit, Adaptive Card)
  to an incoming-webhook ``url``, with a link to the lead on ``page_url``.

``on`` lists what a target gets (default: chat ``alert`` + ``escalated``, a CRM ``alert``
+ ``bucket``). ``cadence`` (opt-in, never by default) adds the automatic messages of
follow-up plans (engine/cadence): an ``http`` target gets ``cadence_body`` (a template,
default: the step id, lead, template id, channel, goal and the personalisation fields),
a chat target a message naming them. Follow Up Boss has no API that sends a text or an
email for you: a ``fub`` target refuses ``cadence``.

Only pydantic here: ``engine/settings.py`` imports it (no cycle).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = ["FUB_API", "FUB_FIELDS", "FUB_STAGES", "TargetSettings"]

FUB_API = "https://api.followupboss.com"
#: leadpulse's values -> the Follow Up Boss custom fields they are written to (create
#: them in FUB under Admin > Custom Fields; the API names start with ``custom``).
FUB_FIELDS = {
    "score": "customLeadpulseScore",
    "bucket": "customLeadpulseBucket",
    "top_reason": "customLeadpulseReason",
}
#: FUB person stages -> the contract-v1 event a stage change becomes (README "Integrations").
FUB_STAGES = {
    "Appointment Set": "appointment_set",
    "Met With Customer": "appointment_held",
    "Showing Homes": "appointment_held",
    "Listing Agreement": "agreement_signed",
    "Buyer Agreement": "agreement_signed",
    "Under Contract": "agreement_signed",
    "Pending": "agreement_signed",
    "Closed": "closed",
    "Past Client": "closed",
    "Trash": "lost",
    "Lost": "lost",
    "Unresponsive": "lost",
}
_STAGE_TYPES = frozenset(
    {"appointment_set", "appointment_held", "agreement_signed", "closed", "lost", "agent_contact"}
)
_HEADER = re.compile(r"^[A-Za-z0-9-]{1,64}$")
Trigger = Literal["alert", "escalated", "bucket", "cadence"]


class TargetSettings(BaseModel):
    """One delivery target of a tenant (module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["http", "fub", "slack", "teams"]
    url: str = ""
    on: tuple[Trigger, ...] = ()
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    auth: Literal["none", "basic", "bearer"] = "none"
    username: str = ""
    secret: SecretStr = SecretStr("")
    headers: dict[str, str] = Field(default_factory=dict)
    body: dict[str, Any] = Field(default_factory=dict)
    rate_per_s: float = Field(0, ge=0, le=10_000)
    system: str = Field("leadpulse", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    system_key: SecretStr = SecretStr("")
    fields: dict[str, str] = Field(default_factory=dict)
    receive: bool = False
    lead_prefix: str = Field("", pattern=r"^[A-Za-z0-9_.:-]{0,32}$")
    stages: dict[str, str] = Field(default_factory=dict)
    users: dict[str, str] = Field(default_factory=dict)  # CRM user id -> leadpulse agent id
    page_url: str = ""
    cadence_body: dict[str, Any] = Field(default_factory=dict)  # on = [..., "cadence"]: http

    @field_validator("url", "page_url")
    @classmethod
    def _http(cls, v: str) -> str:
        if v and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http:// or https:// URL (or empty)")
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not _HEADER.fullmatch(name) or any(c in value for c in "\r\n"):
                raise ValueError(f"header {name!r}: a name of A-Z 0-9 -, a value on one line")
        return v

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: dict[str, str]) -> dict[str, str]:
        for stage, kind in v.items():
            if kind not in _STAGE_TYPES:
                allowed = ", ".join(sorted(_STAGE_TYPES))
                raise ValueError(f"stage {stage!r} -> {kind!r}: allowed {allowed}")
        return v

    @model_validator(mode="after")
    def _complete(self) -> TargetSettings:
        if self.kind != "fub" and not self.url:
            raise ValueError(f"a {self.kind} target needs its url")
        if self.kind == "http" and self.auth != "none" and not self.secret.get_secret_value():
            raise ValueError(f"auth = {self.auth!r} needs the secret (password or token)")
        if self.kind == "fub" and not self.secret.get_secret_value():
            raise ValueError("a fub target needs secret = the Follow Up Boss API key")
        if self.kind == "fub" and "cadence" in self.on:
            raise ValueError(
                "a fub target cannot take 'cadence': Follow Up Boss has no API that sends "
                "a text or an email; send automatic messages through an http target"
            )
        if self.receive and (self.kind != "fub" or not self.system_key.get_secret_value()):
            raise ValueError("receive = true needs kind = 'fub' and its system_key")
        return self

    # -- what the kind implies ---------------------------------------------------------
    @property
    def triggers(self) -> tuple[str, ...]:
        """What is sent: chat gets alerts and escalations; a CRM gets the score changes
        that matter: alerts, and every bucket change, drops to P5 and to lost included
        (``bucket``; written once when the batch's alert carries the same bucket)."""
        if self.on:
            return self.on
        return ("alert", "escalated") if self.kind in ("slack", "teams") else ("alert", "bucket")

    @property
    def api_base(self) -> str:
        return (self.url or FUB_API).rstrip("/")

    @property
    def fub_fields(self) -> dict[str, str]:
        return {**FUB_FIELDS, **self.fields}

    @property
    def fub_stages(self) -> dict[str, str]:
        return {**FUB_STAGES, **self.stages}

    @property
    def pace_per_s(self) -> float:
        """Client-side pacing: FUB allows 250 requests per 10 s per system (stay under)."""
        if self.rate_per_s:
            return self.rate_per_s
        return 24.0 if self.kind == "fub" else 0.0
