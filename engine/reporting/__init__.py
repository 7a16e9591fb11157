"""Brokerage reporting: the weekly numbers of the playbook, kept as the data flows.

- ``keys.py``        Redis key names (per-tenant, per-day counter hashes; per-lead marks)
- ``aggregates.py``  the pure rules: a counted event -> (day, field, increment)
- ``batch.py``       the engine's side: a batch's increments, committed with the batch
- ``figures.py``     read a period's counters and compute the figures
- ``render.py``      markdown and PNG plots; ``cli.py``: ``leadpulse report``
"""
