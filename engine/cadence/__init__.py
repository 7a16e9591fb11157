"""Follow-up cadences: named plans of steps that run themselves on the lead's stream.

- :mod:`engine.cadence.settings`: the ``[cadence]`` configuration (plans, entry rules).
- :mod:`engine.cadence.plans`: the configuration compiled into typed plans and rules.
- :mod:`engine.cadence.decide`: the decisions, pure: enter, advance, pause, resume, end,
  opt-outs and quiet hours.
- :mod:`engine.cadence.runner`: the engine's side: per batch, the lead's events move its
  state, and due steps (found by time in a per-partition sorted set) are emitted with
  the batch's one transaction.
"""
