"""Tenant-local time rules: SLA deadlines and first touch in the tenant's own hours.

The engine computes an alert's SLA deadline and first touch with the global
``[alerts]`` time zone, business hours and quiet hours. A tenant may override them in
``[delivery.tenants.<t>]``; then delivery recomputes both with the *same* functions
(:func:`engine.alerts.sla_deadline`, :func:`engine.alerts.first_touch`) on a copy of
``[alerts]`` with the tenant's values, so there is one implementation of seed 002.

Deadlines run from the alert's **arrival** (wall clock), not from the event's own
timestamp: :meth:`LocalRules.arrival` says when the clock starts, the deadline from
there, and whether the event was already past its own deadline when it arrived (late
on arrival: the lead waited before anyone could see it, which is nobody's miss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine import alerts as rules
from engine.settings import AlertSettings, Settings, SlaRule, TenantDelivery

__all__ = ["Arrival", "LocalRules"]

_OVERRIDES = ("timezone", "business_open_h", "business_close_h", "quiet_start_h", "quiet_end_h")


@dataclass(frozen=True, slots=True)
class Arrival:
    """When an alert's SLA clock starts and ends (wall clock), and why."""

    start_ts: float  # the alert's emission, or delivery's handling if it came too late
    deadline_ts: float
    after_hours: bool
    event_ts: float  # the event's own time
    late_on_arrival: bool  # the event's own deadline had passed when the alert arrived
    arrival_delay_s: float  # start - event time (>= 0)


class LocalRules:
    """The alert rules as one tenant sees them."""

    def __init__(self, settings: Settings, tenant: TenantDelivery) -> None:
        update = {k: getattr(tenant, k) for k in _OVERRIDES if getattr(tenant, k) is not None}
        self.overridden = bool(update)
        merged = settings.alerts.model_dump() | update
        # validated (not model_copy): a tenant's hours must still satisfy open < close
        self.alerts: AlertSettings = (
            AlertSettings.model_validate(merged) if update else settings.alerts
        )

    def rule(self, key: str) -> SlaRule:
        return self.alerts.sla.get(key) or self.alerts.sla["default"]

    def deadline(self, ts: float, rule_key: str) -> tuple[float, bool]:
        """(deadline, after_hours) for a lead needing a response from ``ts``."""
        return rules.sla_deadline(ts, self.rule(rule_key), self.alerts)

    def first_touch(
        self, ts: float, rule_key: str, blocked: tuple[str, ...], call_first: bool
    ) -> str:
        return rules.first_touch(ts, self.rule(rule_key), blocked, self.alerts, call_first)

    def arrival(self, alert: dict[str, Any], now: float) -> Arrival:
        """The clock of an alert handled at wall time ``now``: it starts at the alert's
        emission (``emit_ms``; ``now`` without one), or at ``now`` when the deadline from
        the emission has already passed (delivery was behind: not the agent's time)."""
        sla = alert.get("sla") if isinstance(alert.get("sla"), dict) else {}
        key = str((sla or {}).get("rule") or "default")
        event = alert.get("event") if isinstance(alert.get("event"), dict) else {}
        start = _num(alert.get("emit_ms"), now * 1000) / 1000
        start = min(start, now)  # an emission "in the future" is a skewed clock: now
        deadline, after = self.deadline(start, key)
        if deadline <= now:
            start = now
            deadline, after = self.deadline(start, key)
        event_ts = _num((event or {}).get("ts"), start)
        own_deadline, _ = self.deadline(event_ts, key)
        return Arrival(start, deadline, after, event_ts, own_deadline <= start,
                       max(0.0, start - event_ts))  # fmt: skip

    def localize(
        self,
        alert: dict[str, Any],
        blocked: tuple[str, ...],
        call_first: bool,
        arrival: Arrival | None = None,
    ) -> None:
        """Put the arrival's deadline on the alert (``sla.deadline_ts`` on the wall clock,
        with ``start_ts``, ``late_on_arrival``, ``arrival_delay_s``), and recompute the
        first touch at arrival when the tenant overrides hours, delivery knows of a
        blocked channel the alert did not list, or the event is more than a minute old."""
        sla = alert.get("sla") or {}
        key = str(sla.get("rule") or "default")
        ts = float(alert["event"]["ts"])
        at = ts if arrival is None else arrival.start_ts
        if arrival is not None:
            alert["sla"] = {
                **sla, "deadline_ts": arrival.deadline_ts, "after_hours": arrival.after_hours,
                "start_ts": arrival.start_ts, "late_on_arrival": arrival.late_on_arrival,
                "arrival_delay_s": round(arrival.arrival_delay_s, 3),
            }  # fmt: skip
        elif self.overridden:
            deadline, after = self.deadline(ts, key)
            alert["sla"] = {**sla, "deadline_ts": deadline, "after_hours": after}
        newer = set(blocked) - set(alert.get("blocked_channels") or ())
        if self.overridden or newer or at - ts > 60:
            alert["first_touch"] = self.first_touch(at, key, blocked, call_first)


def _num(x: Any, default: float) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float | str):
        return default
    try:
        value = float(x)
    except ValueError:
        return default
    return value if value == value and abs(value) < 1e13 else default
