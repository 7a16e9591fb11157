"""Where the time goes per event on the hot path (pyinstrument + Redis commandstats).

On a dedicated server, a replay of seeded events is pushed through the engine's
:class:`engine.processor.Processor` in stream-sized batches twice:

1. unprofiled: wall time per event, and the server's ``INFO commandstats`` (server µs
   per EVALSHA — the feature script, its inner commands included — and per EXEC —
   the batch commit);
2. under pyinstrument (sampling): each stage's share of the processor's time, found
   by function name in the call tree (a stage is counted once, at its outermost
   frame). Shares are applied to the unprofiled µs/event, so the sampler's own
   overhead does not inflate the figures.

Stages: decode+validate (``Decoder.decode_all``), features (``FeatureStore.apply``: the pipelined
read of the leads not cached, and applying the events to their state in Python), score
(model input, prior, blend, prediction, reasons, record), alerts (rules, alert
building), learn (labelling, snapshots), commit (``Committer.commit``), metrics, and
whatever else the processor does itself.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis

from benchmarks.harness import DedicatedServer, Workload, settings_for
from engine.app import build_parts
from engine.collector import between_batches, flow_collection

__all__ = ["STAGES", "measure_profile"]

#: stage -> function names (pyinstrument ``frame.function``) that belong to it
STAGES: dict[str, tuple[str, ...]] = {
    "decode+validate": ("_decode", "decode_all"),
    "features (Python state; one read per batch for uncached leads)": ("apply",),
    "score (input, prior, model, reasons, record)": (
        "assess", "model_input", "probability", "predict_proba_one", "explained", "record",
        "store", "bucket_move", "_lead_state", "predict", "score",
    ),
    "alerts (rules, alert body)": ("evaluate", "alert_payload"),
    "learn (labels, moments, model refresh)": (
        "label_outcome", "sweep_if_new_day", "take_moment", "flush_moment", "learn",
        "refresh", "consume_remote", "dumps", "publication",
    ),
    "model quality gauges (status, observe_model)": ("status", "observe_model"),
    "commit (MULTI/EXEC)": ("commit",),
    "metrics": ("inc", "observe", "set", "labels"),
}  # fmt: skip


def _entries(work: Workload, n: int) -> list[tuple[int, bytes, dict[bytes, bytes]]]:
    base_ms = int(time.time() * 1000)
    return [
        (work.partitions[i], f"{base_ms}-{i}".encode(), {b"e": work.payloads[i]})
        for i in range(min(n, len(work)))
    ]


def _run(client: redis.Redis, entries: list[Any], batch: int) -> float:
    """The batches through the processor, with the collector as a flow runs it
    (``engine/collector.py``: collections between batches)."""
    parts = build_parts(settings_for("lp"), client)
    with flow_collection():
        started = time.perf_counter()
        for lo in range(0, len(entries), batch):
            parts.processor.process(entries[lo : lo + batch])
            between_batches()
        return time.perf_counter() - started


#: Clean boundaries timed exactly (wrapped in this process only; engine code untouched):
#: stage -> (module, class, method, is_staticmethod)
_TIMED: dict[str, tuple[str, str, str, bool]] = {
    "decode+validate": ("engine.stages.decode", "Decoder", "decode_all", False),
    "features (Python state; one read per batch for uncached leads)": (
        "features.store",
        "FeatureStore",
        "apply",
        False,
    ),
    "commit (MULTI/EXEC)": ("engine.sinks", "Committer", "commit", False),
}


@contextlib.contextmanager
def _timers() -> Iterator[dict[str, float]]:
    """Wrap the clean boundaries with perf_counter timers; yields stage -> seconds."""
    spent: dict[str, float] = defaultdict(float)
    undo: list[tuple[Any, str, Any]] = []

    def wrap(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[stage] += time.perf_counter() - t

        return timed

    for stage, (module, cls_name, method, static) in _TIMED.items():
        cls = getattr(importlib.import_module(module), cls_name, None)
        raw = cls.__dict__.get(method) if cls is not None else None
        if raw is None:
            continue  # renamed by a later engine change: that stage falls back to sampling
        fn = raw.__func__ if static else raw
        setattr(cls, method, staticmethod(wrap(stage, fn)) if static else wrap(stage, fn))
        undo.append((cls, method, raw))
    try:
        yield spent
    finally:
        for cls, method, raw in undo:
            setattr(cls, method, raw)


def _stage_of(function: str) -> str | None:
    for stage, names in STAGES.items():
        if function in names:
            return stage
    return None


def _walk(frame: Any, acc: dict[str, float], inside: str | None) -> None:
    """Add each frame's time to its stage once, at the outermost frame of that stage."""
    stage = _stage_of(frame.function)
    if inside is None and stage is not None:
        acc[stage] += frame.time
        return
    for child in frame.children:
        _walk(child, acc, inside)


def _sum_named(frame: Any, name: str) -> float:
    if frame.function == name:
        return float(frame.time)
    return sum(_sum_named(c, name) for c in frame.children)


def _find(frame: Any, name: str) -> list[Any]:
    if frame.function == name:
        return [frame]
    out: list[Any] = []
    for child in frame.children:
        out.extend(_find(child, name))
    return out


@dataclass
class _Runs:
    """What the three replays measured, for the steps that turn it into figures."""

    wall: float  # 1. plain run, seconds
    timed_wall: float  # 2. run under the exact timers, seconds
    spent: dict[str, float]  # exact seconds by stage from the timed run
    stats: dict[str, Any]  # INFO commandstats after the plain run
    profiler: Any  # 3. the pyinstrument profiler of the sampled run
    server_kind: str
    batch: int


def measure_profile(work: Workload, n: int, html_out: str | None = None) -> dict[str, Any]:
    """Per-event µs by stage, client and server; optional pyinstrument HTML report."""
    entries = _entries(work, n)
    n_events = len(entries)
    runs = _replays(entries)
    session = runs.profiler.last_session
    stages = _stages(runs, n_events)
    if html_out and session is not None:
        runs.profiler.write_html(html_out)
    return {
        "events": n_events,
        "batch": runs.batch,
        "us_per_event": round(1e6 * runs.wall / n_events, 1),
        "events_per_s": round(n_events / runs.wall, 1),
        "stages_us_per_event": stages,
        "method": "exact timers at decode/apply/commit; the rest split by pyinstrument "
        "samples; all scaled to the unprofiled run",
        "server": _server(runs, n_events),
    }


def _replays(entries: list[Any]) -> _Runs:
    """The three replays on a dedicated server: plain, timed, sampled."""
    from pyinstrument import Profiler

    with DedicatedServer() as server:
        client = server.client
        batch = settings_for("lp").streams.read_count
        client.config_resetstat()
        wall = _run(client, entries, batch)  # 1. plain: the reference µs per event
        stats = cast(dict[str, Any], client.info("commandstats"))
        client.flushall()
        with _timers() as spent:  # 2. exact time at the clean boundaries
            timed_wall = _run(client, entries, batch)
        client.flushall()
        profiler = Profiler(interval=0.0005)  # 3. sampled shares of the rest
        profiler.start()
        _run(client, entries, batch)
        profiler.stop()
    return _Runs(
        wall, timed_wall, dict(spent), stats, profiler, f"{server.kind} {server.version}", batch
    )


def _stages(runs: _Runs, n_events: int) -> dict[str, float | None]:
    """µs an event by stage: exact timers where there are some, samples share the rest."""
    scale = runs.wall / runs.timed_wall  # timers cost a little: express stages in plain-run time
    exact = runs.spent
    session = runs.profiler.last_session
    root = session.root_frame() if session is not None else None
    sampled: dict[str, float] = defaultdict(float)
    total = 0.0
    if root is not None:
        for frame in _find(root, "process"):
            total += frame.time
            for child in frame.children:
                _walk(child, sampled, None)
    sampled["other (processor itself)"] = max(0.0, total - sum(sampled.values()))
    rest_s = max(0.0, runs.timed_wall - sum(exact.values()))
    rest_sampled = sum(v for k, v in sampled.items() if k not in exact)
    stages: dict[str, float | None] = {}
    for stage in (*STAGES, "other (processor itself)"):
        if stage in exact:
            seconds = exact[stage]
        elif rest_sampled:
            seconds = rest_s * sampled.get(stage, 0.0) / rest_sampled
        else:
            seconds = 0.0
        stages[stage] = round(1e6 * seconds * scale / n_events, 1)
    return stages


def _server(runs: _Runs, n_events: int) -> dict[str, Any]:
    """Server µs from INFO commandstats of the plain run."""
    stats = runs.stats
    evalsha = stats.get("cmdstat_evalsha", {})
    exec_stats = stats.get("cmdstat_exec", {})
    # EVALSHA: scripts still run per batch (none per event); EXEC: the queued commands
    server_total = (evalsha.get("usec", 0) + exec_stats.get("usec", 0)) / n_events
    by_command = {
        name.removeprefix("cmdstat_"): round(v["usec"] / n_events, 2) for name, v in stats.items()
    }
    return {
        "kind": runs.server_kind,
        "us_per_evalsha": evalsha.get("usec_per_call"),
        "evalsha_us_per_event": round(evalsha.get("usec", 0) / n_events, 1),
        "exec_us_per_event": round(exec_stats.get("usec", 0) / n_events, 1),
        "evalsha_plus_exec_us_per_event": round(server_total, 1),
        "by_command_us_per_event": dict(sorted(by_command.items(), key=lambda kv: -kv[1])[:12]),
    }
