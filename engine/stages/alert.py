"""Stage 6: an alert rule's decision (``engine/alerts.py``) as the payload delivery reads."""

from __future__ import annotations

from engine import alerts as rules
from engine.events import Event
from engine.records import Alert, AlertEvent, AlertSla
from engine.scoring import Score
from engine.settings import AlertSettings
from features.store import FeatureReply

__all__ = ["alert_payload"]


def alert_payload(
    s: AlertSettings,
    event: Event,
    score: Score,
    decision: rules.Decision,
    reply: FeatureReply,
    ingested: int,
) -> Alert:
    """The alert of ``decision`` (``score_before`` set by the caller)."""
    ctx = reply.context
    sla_key, rule = rules.sla_rule_for(event, str(reply.features.get("source")), s)
    deadline, after_hours = rules.sla_deadline(event.ts, rule, s)
    repeat = float(reply.features.get("repeat_views_48h", 0)) >= 3
    hand = event.type in s.hand_raise_types
    touch = rules.first_touch(event.ts, rule, ctx["blocked"], s, repeat or hand)
    return Alert(
        alert_id=decision.alert_id, tenant=event.tenant, lead_id=event.lead_id,
        triggers=tuple(decision.triggers), score_after=score.score,
        probability=score.probability, bucket=score.bucket, bucket_by=score.bucket_by,
        tier=score.tier, reasons=score.reasons, concerns=score.concerns,
        event=AlertEvent(
            event_id=event.event_id, type=event.type, ts=event.ts,
            property_id=event.property_id or ctx.get("last_property", ""),
            area=event.area or ctx.get("last_area", ""),
            address=_text_prop(event, "address"), title=_text_prop(event, "title"),
        ),
        first_touch=touch, blocked_channels=tuple(ctx["blocked"]),
        sla=AlertSla(rule=sla_key, deadline_ts=deadline, after_hours=after_hours),
        agent_id=ctx.get("agent_id", ""), ingest_ms=ingested,
    )  # fmt: skip


def _text_prop(event: Event, name: str) -> str:
    """A listing's address or title as the event carried it in ``props`` (else empty)."""
    value = event.props.get(name)
    return value[:200] if isinstance(value, str) else ""
