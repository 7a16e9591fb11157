"""Keys of lead state in Redis, built here and nowhere else.

Every key of one lead carries the hash tag ``{tenant:lead}``, so a lead's keys share a
cluster slot.
"""

from __future__ import annotations

__all__ = ["alias_key", "due_key", "generation_key", "hot_key", "lead_key"]


def hot_key(prefix: str, tenant: str) -> str:
    """Per-tenant hot list: a sorted set of lead ids by score."""
    return f"{prefix}:hot:{tenant}"


def due_key(prefix: str, partition: int) -> str:
    """Per partition: leads with learning snapshots, by their oldest snapshot's event time."""
    return f"{prefix}:due:{partition}"


def alias_key(prefix: str, tenant: str) -> str:
    """Per tenant: lead id -> the lead it was folded into (identify, merge)."""
    return f"{prefix}:alias:{tenant}"


def generation_key(prefix: str) -> str:
    """Bumped by anything that changes lead records outside the engine (``leadpulse merge``)."""
    return f"{prefix}:fgen"


def lead_key(prefix: str, tenant: str, lead_id: str, part: str) -> str:
    """Key of one piece of a lead's state; the ``{tenant:lead}`` tag keeps a lead in one slot.

    ``f`` feature record, ``r`` score record (``s``: schema 0's score hash), ``n`` learning
    moments, ``rp`` reporting.
    """
    return f"{prefix}:{{{tenant}:{lead_id}}}:{part}"
