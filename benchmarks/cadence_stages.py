"""Where cadences cost, stage by stage: the month of ``benchmarks.cadence`` drained with
cadences off and on in turn, in one process, each stage of the processor timed in thread
CPU (``time.thread_time``) around its batch-level call (47 calls a drain: no per-event
timer); per stage the least of the rounds off and on, and on minus off, µs an event.

``python -m benchmarks.cadence_stages --rounds 2`` (old code: ``PYTHONPATH=<old tree>``).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import engine.cadence.runner as runner
import engine.processor as processor
import engine.sinks as sinks
import engine.stages.decode as decode
import features.store as store
from benchmarks.cadence import drain
from benchmarks.simulator import SimConfig, generate
from engine.redis_client import connect

#: stage -> (owner, attribute): the processor's stages, and the cadence's batch calls
STAGES: dict[str, tuple[Any, str]] = {
    "decode": (decode.Decoder, "decode_all"), "features": (store.FeatureStore, "apply"),
    "events": (processor.Processor, "_events"), "report": (processor, "report_batch"),
    "leads": (processor.Processor, "_finish_leads"), "commit": (sinks.Committer, "commit"),
    "cadence.begin": (runner.Cadences, "begin"), "cadence.finish": (runner.Cadences, "finish"),
    "cadence.events": (runner.Cadences, "events"),  # (after the processor's loop; not in old code)
    "process": (processor.Processor, "_process"),
}  # fmt: skip


def _timed(spent: dict[str, float], stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*a: Any, **kw: Any) -> Any:
        t = time.thread_time()
        try:
            return fn(*a, **kw)
        finally:
            spent[stage] += time.thread_time() - t

    return timed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--leads", type=int, default=2_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = ap.parse_args(argv)
    spent: dict[str, float] = defaultdict(float)
    for stage, (owner, name) in STAGES.items():
        if hasattr(owner, name):  # (a stage older code does not have: 0)
            setattr(owner, name, _timed(spent, stage, getattr(owner, name)))
    client = connect(args.redis_url)
    events = list(generate(SimConfig(seed=18, leads=args.leads, days=30.0, tenant="sim")))
    rows: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for r in range(args.rounds):
        for on in (False, True) if r % 2 == 0 else (True, False):
            spent.clear()
            run = drain(client, events, on, keep=False)
            row = {k: v / len(events) * 1e6 for k, v in spent.items()}
            rows[on].append({**row, "cpu (process)": run["cpu_us_per_event"]})
    names = {k for r in rows[True] for k in r}
    least = {on: {k: min(r.get(k, 0.0) for r in rows[on]) for k in names} for on in rows}
    print(f"{'stage':<16} {'off':>7} {'on':>7} {'on-off':>7}  (µs an event, least of rounds)")
    for k in sorted(least[True]):
        off, on_ = least[False][k], least[True][k]
        print(f"{k:<16} {off:7.2f} {on_:7.2f} {on_ - off:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
