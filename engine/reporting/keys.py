"""Redis key names of the brokerage reports (next to the engine's and delivery's keys).

- ``{prefix}:rpt:{tenant}:{YYYY-MM-DD}``  hash: one tenant's counters for one day (the
  tenant's local date), fields ``metric|dim|value`` (``leads|source|portal``) or
  ``metric|dim|value|bin`` for histogram bins; expires ``retention_d`` after its last write
- ``{prefix}:rpt:tenants``                set: tenants that have reports
- ``{prefix}:{tenant:lead}:rp``           hash: what the reports know of one lead (its
  first day and source, bucket at first alert, open speed-to-lead clock, firsts done)
"""

from __future__ import annotations

from engine.keys import day_key, mark_key, tenants_key

__all__ = ["day_key", "field", "mark_key", "tenants_key"]


def field(metric: str, dim: str = "all", value: str = "", bin_: int | None = None) -> str:
    """A counter's field name; ``|`` never occurs inside a part (it is replaced)."""
    clean = value.replace("|", "_")
    return f"{metric}|{dim}|{clean}" if bin_ is None else f"{metric}|{dim}|{clean}|{bin_}"
