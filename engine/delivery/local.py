"""Tenant-local time rules: SLA deadlines and first touch in the tenant's own hours.

The engine computes an alert's SLA deadline and first touch with the global
``[alerts]`` time zone, business hours and quiet hours. A tenant may override them in
``[delivery.tenants.<t>]``; then delivery recomputes both with the *same* functions
(:func:`engine.alerts.sla_deadline`, :func:`engine.alerts.first_touch`) on a copy of
``[alerts]`` with the tenant's values, so there is one implementation of seed 002.
"""

from __future__ import annotations

from typing import Any

from engine import alerts as rules
from engine.settings import AlertSettings, Settings, SlaRule, TenantDelivery

__all__ = ["LocalRules"]

_OVERRIDES = ("timezone", "business_open_h", "business_close_h", "quiet_start_h", "quiet_end_h")


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

    def localize(self, alert: dict[str, Any], blocked: tuple[str, ...], call_first: bool) -> None:
        """Recompute the alert's deadline and first touch when the tenant overrides hours
        or delivery knows of a blocked channel the alert did not list."""
        sla = alert.get("sla") or {}
        key = str(sla.get("rule") or "default")
        ts = float(alert["event"]["ts"])
        if self.overridden:
            deadline, after = self.deadline(ts, key)
            alert["sla"] = {**sla, "deadline_ts": deadline, "after_hours": after}
        if self.overridden or set(blocked) - set(alert.get("blocked_channels") or ()):
            alert["first_touch"] = self.first_touch(ts, key, blocked, call_first)
