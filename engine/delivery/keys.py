"""Redis key names of everything delivery keeps, from the engine's key prefix.

All under ``{prefix}:dlv:`` so they never collide with the engine's keys:

- ``dlv:pos``                   hash partition -> last events-stream id read (SLA, consent)
- ``dlv:feed:{tenant}``         stream: what the SSE feed and the page show, per tenant
- ``dlv:dead``                  stream: webhook deliveries that gave up, with the last error
- ``dlv:rcpt:{alert_id}``       hash "{delivery_id}|{target}" -> receipt JSON
- ``dlv:route:{alert_id}``      the routing decision made for an alert (replays reuse it)
- ``dlv:asg:{tenant}:{lead}``   hash: the lead's current assignment and its reason
- ``dlv:hist:{tenant}:{lead}``  list: assignment history (reasons), newest first
- ``dlv:rr:{tenant}:{group}``   round-robin counter of a group
- ``dlv:load:{tenant}``         hash agent -> leads assigned (fairness, for people)
- ``dlv:claims``                zset "{tenant}:{lead}" -> claim deadline (first-to-claim)
- ``dlv:clock:{tenant}:{lead}`` hash: the lead's SLA clock
- ``dlv:due``                   zset "{tenant}:{lead}" -> deadline of open clocks
- ``dlv:resp:{tenant}:{lead}``  hash: the lead's last agent response (ts, agent, kind)
- ``dlv:rep:{tenant}``          hash: SLA report counters by source and agent
- ``dlv:rt:{tenant}:{dim}:{v}`` list: recent response times (seconds) for medians
- ``dlv:consent:{tenant}:{lead}`` hash channel -> why it is blocked (JSON)
- ``dlv:card:{tenant}:{lead}``  the lead's last delivered alert (JSON); expires with the lead
- ``dlv:leads:{tenant}``        zset lead -> last alert time (the page's leads; idle ones go)

Tenant ids match ``[A-Za-z0-9_.-]``, so ``{tenant}:{lead}`` splits at the first colon.
"""

from __future__ import annotations

__all__ = ["DeliveryKeys", "member", "split_member"]


def member(tenant: str, lead: str) -> str:
    return f"{tenant}:{lead}"


def split_member(value: str | bytes) -> tuple[str, str]:
    text = value.decode() if isinstance(value, bytes) else value
    tenant, _, lead = text.partition(":")
    return tenant, lead


class DeliveryKeys:
    def __init__(self, prefix: str) -> None:
        self.base = f"{prefix}:dlv"
        self.positions = f"{self.base}:pos"
        self.dead = f"{self.base}:dead"
        self.claims = f"{self.base}:claims"
        self.due = f"{self.base}:due"

    def feed(self, tenant: str) -> str:
        return f"{self.base}:feed:{tenant}"

    def receipts(self, alert_id: str) -> str:
        return f"{self.base}:rcpt:{alert_id}"

    def route(self, alert_id: str) -> str:
        return f"{self.base}:route:{alert_id}"

    def assignment(self, tenant: str, lead: str) -> str:
        return f"{self.base}:asg:{tenant}:{lead}"

    def history(self, tenant: str, lead: str) -> str:
        return f"{self.base}:hist:{tenant}:{lead}"

    def round_robin(self, tenant: str, group: str) -> str:
        return f"{self.base}:rr:{tenant}:{group}"

    def load(self, tenant: str) -> str:
        return f"{self.base}:load:{tenant}"

    def clock(self, tenant: str, lead: str) -> str:
        return f"{self.base}:clock:{tenant}:{lead}"

    def response(self, tenant: str, lead: str) -> str:
        return f"{self.base}:resp:{tenant}:{lead}"

    def report(self, tenant: str) -> str:
        return f"{self.base}:rep:{tenant}"

    def response_times(self, tenant: str, dim: str, value: str) -> str:
        return f"{self.base}:rt:{tenant}:{dim}:{value}"

    def consent(self, tenant: str, lead: str) -> str:
        return f"{self.base}:consent:{tenant}:{lead}"

    def card(self, tenant: str, lead: str) -> str:
        return f"{self.base}:card:{tenant}:{lead}"

    def leads(self, tenant: str) -> str:
        return f"{self.base}:leads:{tenant}"

    def tasks(self, tenant: str, agent: str) -> str:
        """Zset step id -> due time: an agent's follow-up tasks (``*``: nobody's yet)."""
        return f"{self.base}:tasks:{tenant}:{agent or '*'}"
