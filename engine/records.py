"""The records the engine writes for others: score records and alerts.

:class:`Alert` is what goes on the alerts stream (msgpack of :meth:`Alert.wire`), read
by delivery, the page and files. :class:`ScoreRecord` is the score record: one compact
msgpack value per lead, reasons kept as codes.

The engine writes it once per lead per batch inside the batch transaction, as a part
of the lead's one record (``lp:{tenant:lead}:f``, ``features/record.py``; schema 1 kept
it at ``:r``, still read for a lead not written since); everyone else reads it here.
Reasons and concerns are stored as *codes* (the fact groups of ``engine/reasons.py``)
and put into words at read time from the same record's features: the words are the
ones the engine would have written, in a fraction of the bytes.

Readers get the record as the flat ``str -> str`` hash the score record used to be
(schema 0, a Redis hash at ``:s``), so the gateway, delivery and files see one shape.
A lead scored before this schema still has only ``:s``: it is read as it is until the
engine next scores the lead, which writes ``:r`` and deletes ``:s`` in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from engine.keys import StreamNames, lead_key
from engine.reasons import low_reasons, render
from engine.settings import Settings
from features.record import unpack_record as unpack_lead
from features.spec import FeatureSpec
from features.state import LeadFeatures, unpack

__all__ = [
    "RECORD_SCHEMA", "Alert", "AlertEvent", "AlertSla", "RecordReader", "ScoreRecord", "as_hash",
    "read_score", "record_from_items", "score_state", "unpack_record",
]  # fmt: skip

#: Bumped when the packed layout changes; a reader refuses a layout it does not know.
RECORD_SCHEMA = 1


@dataclass(slots=True)
class ScoreRecord:
    """A lead's latest score and the alert state the rules keep between batches (read-only
    by convention: not ``frozen``, whose ``__init__`` costs ~2x; one a lead a batch)."""

    tenant: str
    lead_id: str
    score: int
    probability: float
    bucket: str
    tier: str
    pros: tuple[str, ...]  # reason codes (groups), strongest first
    cons: tuple[str, ...]  # concern codes; the "why low" reasons are derived at read time
    prior_probability: float
    raw_prior_probability: float
    model_weight: float
    ts: float
    last_event_id: str
    last_alert_ts: float = 0.0
    jump_base: float = 0.0
    jump_base_ts: float = 0.0
    moment: str = ""
    outcome: str = ""
    outcome_ts: float = 0.0
    bucket_by: str = "score"

    def pack(self) -> bytes:
        """The value schema 1 kept at ``:r`` (tenant and lead are in the key)."""
        return msgpack.packb([RECORD_SCHEMA, *self.items()], use_bin_type=True)

    def items(self) -> list[Any]:
        """The record's fields as the lead record stores them (``features/record.py``)."""
        return [
            self.score, self.probability, self.bucket, self.tier,
            list(self.pros), list(self.cons), self.prior_probability,
            self.raw_prior_probability, self.model_weight, self.ts, self.last_event_id,
            _num(self.last_alert_ts), _num(self.jump_base), _num(self.jump_base_ts),
            self.moment, self.outcome, _num(self.outcome_ts), self.bucket_by,
        ]  # fmt: skip


@dataclass(slots=True)
class AlertEvent:
    """The event that raised an alert, with the listing it was about."""

    event_id: str
    type: str
    ts: float
    property_id: str
    area: str
    address: str
    title: str

    def wire(self) -> dict[str, Any]:
        """As the alert carries it (``dataclasses.asdict`` written out: a fifth of its cost)."""
        return {
            "event_id": self.event_id, "type": self.type, "ts": self.ts,
            "property_id": self.property_id, "area": self.area, "address": self.address,
            "title": self.title,
        }  # fmt: skip


@dataclass(slots=True)
class AlertSla:
    """The speed-to-lead rule the alert starts, and its deadline (event time)."""

    rule: str
    deadline_ts: float
    after_hours: bool

    def wire(self) -> dict[str, Any]:
        """As the alert carries it (``dataclasses.asdict`` written out)."""
        return {"rule": self.rule, "deadline_ts": self.deadline_ts, "after_hours": self.after_hours}


@dataclass(slots=True)
class Alert:
    """A score jump, hand-raise or reactivation for an agent (``engine/alerts.py`` decides)."""

    alert_id: str
    tenant: str
    lead_id: str
    triggers: tuple[str, ...]
    score_after: int
    probability: float
    bucket: str
    bucket_by: str
    tier: str
    reasons: tuple[str, ...]
    concerns: tuple[str, ...]
    event: AlertEvent
    first_touch: str
    blocked_channels: tuple[str, ...]
    sla: AlertSla
    agent_id: str
    ingest_ms: int  # when the event reached the stream (wall ms)
    score_before: float | None = None  # the score a jump is measured from, if any
    emit_ms: int = 0  # when the engine committed it (wall ms)

    def wire(self) -> dict[str, Any]:
        """The alert as the alerts stream carries it (field order as delivery documents)."""
        return {
            "alert_id": self.alert_id, "tenant": self.tenant, "lead_id": self.lead_id,
            "triggers": list(self.triggers), "score_before": self.score_before,
            "score_after": self.score_after, "probability": self.probability,
            "bucket": self.bucket, "bucket_by": self.bucket_by, "tier": self.tier,
            "reasons": list(self.reasons), "concerns": list(self.concerns),
            "event": self.event.wire(), "first_touch": self.first_touch,
            "blocked_channels": list(self.blocked_channels), "sla": self.sla.wire(),
            "agent_id": self.agent_id, "ingest_ms": self.ingest_ms, "emit_ms": self.emit_ms,
        }  # fmt: skip


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else float(v)


def unpack_record(tenant: str, lead_id: str, blob: bytes) -> ScoreRecord | None:
    """Schema 1's ``:r`` value back to a record; None for a value this version cannot read."""
    try:
        r = msgpack.unpackb(blob, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if not isinstance(r, list) or len(r) != 19 or r[0] != RECORD_SCHEMA:
        return None
    return record_from_items(tenant, lead_id, r[1:])


def record_from_items(tenant: str, lead_id: str, r: Any) -> ScoreRecord | None:
    """:meth:`ScoreRecord.items` back to a record; None for fields it cannot read."""
    try:
        if not isinstance(r, list) or len(r) != 18:
            return None
        return ScoreRecord(
            tenant, lead_id, int(r[0]), float(r[1]), str(r[2]), str(r[3]),
            tuple(map(str, r[4])), tuple(map(str, r[5])), float(r[6]), float(r[7]),
            float(r[8]), float(r[9]), str(r[10]), float(r[11]), float(r[12]), float(r[13]),
            str(r[14]), str(r[15]), float(r[16]), str(r[17]),
        )  # fmt: skip
    except (ValueError, TypeError):
        return None


def score_state(record: ScoreRecord) -> dict[str, str]:
    """The alert and learning state the engine reloads with a lead (``STATE_FIELDS``)."""
    return {
        "score": str(record.score), "bucket": record.bucket,
        "last_alert_ts": str(record.last_alert_ts), "jump_base": str(record.jump_base),
        "jump_base_ts": str(record.jump_base_ts), "moment": record.moment,
        "outcome": record.outcome, "outcome_ts": str(record.outcome_ts),
        "bucket_by": record.bucket_by,
    }  # fmt: skip


_SHOWN = ("score", "bucket", "bucket_by")  # state fields as_hash writes itself


def as_hash(
    record: ScoreRecord, features_blob: bytes | LeadFeatures | None, spec: FeatureSpec,
    settings: Settings,
) -> dict[str, str]:  # fmt: skip
    """The record as schema 0's score hash, its reasons in words (see the module doc)."""
    state = LeadFeatures()
    if isinstance(features_blob, LeadFeatures):
        state = features_blob
    elif features_blob is not None:
        try:
            state = unpack(features_blob)
        except ValueError:
            state = LeadFeatures()  # unreadable: the codes stay unsaid, nothing crashes
    features, context = state.features(spec)
    low = low_reasons(context, record.outcome, record.outcome_ts, settings)
    pros, cons = render(record.pros, record.cons, features, context, low)
    return {
        "tenant": record.tenant, "lead_id": record.lead_id, "score": str(record.score),
        "probability": repr(record.probability), "bucket": record.bucket, "tier": record.tier,
        "reasons": json.dumps(pros), "concerns": json.dumps(cons),
        "prior_probability": repr(record.prior_probability),
        "raw_prior_probability": repr(record.raw_prior_probability),
        "model_weight": repr(record.model_weight), "ts": repr(record.ts),
        "last_event_id": record.last_event_id, "agent_id": str(context.get("agent_id", "")),
        "blocked": ",".join(context.get("blocked", ())), "bucket_by": record.bucket_by,
        **{k: v for k, v in score_state(record).items() if k not in _SHOWN},
    }  # fmt: skip


class RecordReader:
    """Reads score records as hashes (one pipelined round trip; a second only for leads
    still on schema 0). Sync callers use :meth:`read`; async ones queue :meth:`queue`,
    execute, and pass the replies to :meth:`hashes`, then read :meth:`legacy_keys`.

    A lead's keys are read at its home (:meth:`StreamNames.home`: the deployment's prefix,
    or its partition's tag in the slot-per-partition layout); ``prefix`` replaces the
    settings' prefix (the settings' partitions and layout stay), ``names`` all three."""

    def __init__(
        self, settings: Settings, prefix: str | None = None, names: StreamNames | None = None
    ) -> None:
        self.settings = settings
        self.spec = FeatureSpec.from_settings(settings.features)
        if names is None:
            prefix = settings.redis.key_prefix if prefix is None else prefix
            names = StreamNames(prefix, settings.streams.partitions, settings.redis.key_layout)
        self.names = names
        self.prefix = names.prefix

    def queue(self, pipe: Any, leads: Sequence[tuple[str, str]]) -> None:
        """The lead's record (``:f``, schema 2 holds the score record) and schema 1's ``:r``."""
        for tenant, lead in leads:
            home = self.names.home(tenant, lead)
            pipe.get(lead_key(home, tenant, lead, "r"))
            pipe.get(lead_key(home, tenant, lead, "f"))

    def hashes(
        self, leads: Sequence[tuple[str, str]], replies: Sequence[Any]
    ) -> list[dict[str, str] | None]:
        """Per lead its score hash, or None when it has no score record in ``:f`` or ``:r``
        (schema 0: see :meth:`legacy_keys`)."""
        out: list[dict[str, str] | None] = []
        for i, (tenant, lead) in enumerate(leads):
            record, features = _score_of(tenant, lead, replies[2 * i + 1], replies[2 * i])
            out.append(None if record is None else as_hash(record, features, self.spec,
                                                           self.settings))  # fmt: skip
        return out

    def legacy_keys(self, leads: Sequence[tuple[str, str]]) -> list[str]:
        """Schema 0's score hash keys of ``leads`` (read with HGETALL)."""
        home = self.names.home
        return [lead_key(home(tenant, lead), tenant, lead, "s") for tenant, lead in leads]

    def read(self, client: Any, leads: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
        """Score hashes of ``leads`` that have one, in order (``{}`` for none)."""
        leads = list(leads)
        if not leads:
            return []
        pipe = client.pipeline(transaction=False)
        self.queue(pipe, leads)
        found = self.hashes(leads, pipe.execute())
        missing = [i for i, h in enumerate(found) if h is None]
        if missing:
            pipe = client.pipeline(transaction=False)
            for key in self.legacy_keys([leads[i] for i in missing]):
                pipe.hgetall(key)
            for i, raw in zip(missing, pipe.execute(), strict=True):
                found[i] = {_text(k): _text(v) for k, v in raw.items()}
        return [h or {} for h in found]


def read_score(tenant: str, lead: str, blob: bytes | None) -> ScoreRecord | None:
    """The score record in a lead's stored record (``:f``, schema 2), None if it has none."""
    return _score_of(tenant, lead, blob, None)[0]


def _score_of(
    tenant: str, lead: str, blob: bytes | None, packed: bytes | None
) -> tuple[ScoreRecord | None, LeadFeatures]:
    """The score record and features of a lead's record (schema 2), else of schema 1's
    ``:r`` beside a features-only ``:f`` (a lead the engine has not written since)."""
    features, rest = LeadFeatures(), None
    if blob is not None:
        try:
            features, rest = unpack_lead(blob)
        except ValueError:
            features = LeadFeatures()  # unreadable: the codes stay unsaid, nothing crashes
    if rest is not None:
        score = rest.score
        return (record_from_items(tenant, lead, score) if score else None), features
    return (unpack_record(tenant, lead, packed) if packed is not None else None), features


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
