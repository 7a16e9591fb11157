"""The engine against two peers, on ONE event file, in ONE run (issue 12, item 6).

- **Engine**: the real ``leadpulse replay FILE --redis-url URL`` (``python -m engine.cli
  replay``) in its own process under a fresh key prefix; its events/s is the figure
  replay prints itself: events / seconds of the dataflow (stream loading excluded),
  full pipeline with alerts and the one commit per batch.
- **In-memory Bytewax peer**: a Bytewax 0.21 dataflow run with the production entry
  point, ``python -m bytewax.run "benchmarks.peers:peer_flow(...)"`` (one worker, no
  recovery, so no durability): ``FileSource`` over the same file -> ``json.loads`` ->
  keyed by lead -> ``stateful_map`` whose state is a Python dict of per-lead features
  (counters by type, view windows 24 h / 7 d / 30 d, distinct properties, hand raises,
  recency) and a River ``StandardScaler | LogisticRegression`` predicting on every
  event and learning from outcome events -> a counting sink. Timed inside the process
  from the flow's construction to the sink's close (interpreter start-up excluded, as
  the engine's stream loading is).
- **Naive peer**: what a user writes by hand: one loop over the same file that makes 5
  unpipelined Redis round trips an event (HINCRBY the type counter, HGETALL the
  counters, GET the lead's state, SET it back, ZADD the hot list) plus an XADD when
  the score crosses the alert threshold, under a private key prefix, with the same
  features and River model as the Bytewax peer. No dedup, no exactly-once.

``measure_peers`` writes the workload as a JSONL file (event contract v1) and runs
the three on it; :func:`peer_ratios` gives engine / peer.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from bisect import bisect_right, insort
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import redis
from bytewax import operators as op
from bytewax.connectors.files import FileSource
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from river import compose, linear_model, optim, preprocessing

from benchmarks.baselines import CountingClient
from benchmarks.harness import Workload, delete_prefix, new_prefix
from benchmarks.throughput import engine_env
from engine.events import (
    BEHAVIOUR_TYPES,
    CONVERSATION_TYPES,
    HAND_RAISE_TYPES,
    NEGATIVE_TYPES,
    OUTCOME_TYPES,
    POSITIVE_OUTCOMES,
)

__all__ = [
    "LeadScorer",
    "PeerRun",
    "measure_bytewax_peer",
    "measure_engine_replay",
    "measure_naive_peer",
    "measure_peers",
    "peer_flow",
    "peer_ratios",
    "write_event_file",
]

_DAY = 86_400.0
_HAND = frozenset(HAND_RAISE_TYPES)
_OUTCOMES = frozenset(OUTCOME_TYPES)
_POSITIVE = frozenset(POSITIVE_OUTCOMES)
#: the counters in the model input, in a fixed order (outcomes are labels, not inputs)
_COUNTED: tuple[str, ...] = (
    BEHAVIOUR_TYPES + HAND_RAISE_TYPES + CONVERSATION_TYPES + NEGATIVE_TYPES + ("agent_contact",)
)
_INPUTS = tuple((t, f"n_{t}") for t in _COUNTED)
_MAX_VIEWS = 64  # view timestamps kept per lead (the windows are bounded)
_MAX_PROPS = 64  # distinct properties kept per lead
ALERT_AT = 0.5  # probability the score must cross upwards to alert
_REPLAY_LINE = re.compile(r"replayed (\d+) events .*?: (\d+) alerts; dataflow ([\d.]+) s")


@dataclass(frozen=True)
class PeerRun:
    """One side of the comparison: events processed, seconds, and what it produced."""

    name: str
    events: int
    seconds: float
    events_per_s: float
    alerts: int
    how: str  # how it was run and timed
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 3)
        out["events_per_s"] = round(self.events_per_s, 1)
        return out


def write_event_file(work: Workload, path: Path, n: int | None = None) -> int:
    """The first ``n`` events of ``work`` as JSONL (contract v1); returns the count."""
    events = work.events if n is None else work.events[:n]
    with path.open("w") as fh:
        for ev in events:
            fh.write(json.dumps(ev, separators=(",", ":")) + "\n")
    return len(events)


# --- the features and the model both peers compute -------------------------------------


def new_state() -> dict[str, Any]:
    """A lead's features, as a Python dict (what the Bytewax peer keeps per key)."""
    return {"counts": {}, "views": [], "props": {}, "first": None, "last": None, "p": None}


def observe(state: dict[str, Any], ev: dict[str, Any]) -> None:
    """Everything but the type counter: windows, distinct properties, recency, profile."""
    ts = float(ev["ts"])
    if state["first"] is None:
        state["first"] = ts
    state["last"] = ts
    if ev["type"] == "property_view":
        views = state["views"]  # sorted: the windows are two bisects
        insort(views, ts)
        if len(views) > _MAX_VIEWS:
            del views[0]
        prop = ev.get("property_id")
        if prop:
            props = state["props"]
            props[prop] = ts
            if len(props) > _MAX_PROPS:
                del props[min(props, key=props.__getitem__)]
    for key in ("side", "timeline"):
        if ev.get(key):
            state[key] = ev[key]


def features(state: dict[str, Any], now: float) -> dict[str, float]:
    """The model input, 32 values in a fixed order: log counts by type, view windows,
    distinct properties, hand raises, age, profile."""
    counts: dict[str, int] = state["counts"]
    log1p = math.log1p
    x = {name: log1p(counts.get(t, 0)) for t, name in _INPUTS}
    views = state["views"]
    n = len(views)
    x["views_24h"] = log1p(n - bisect_right(views, now - _DAY))
    x["views_7d"] = log1p(n - bisect_right(views, now - 7 * _DAY))
    x["views_30d"] = log1p(n - bisect_right(views, now - 30 * _DAY))
    x["distinct_30d"] = math.log1p(sum(1 for t in state["props"].values() if t > now - 30 * _DAY))
    x["hand_raises"] = math.log1p(sum(counts.get(t, 0) for t in _HAND))
    x["age_days"] = math.log1p(max(0.0, now - (state["first"] or now)) / _DAY)
    x["seller"] = 1.0 if state.get("side") == "seller" else 0.0
    x["soon"] = 1.0 if state.get("timeline") in ("0-3m", "asap") else 0.0
    return x


class LeadScorer:
    """River ``StandardScaler | LogisticRegression``: predict every event, learn outcomes."""

    def __init__(self) -> None:
        self.model = compose.Pipeline(
            preprocessing.StandardScaler(),
            linear_model.LogisticRegression(optimizer=optim.SGD(0.05)),
        )
        self.predictions = 0
        self.learned = 0

    def score(self, state: dict[str, Any], ev: dict[str, Any]) -> bool:
        """Predict (and learn on an outcome); True on a hand raise, or when the lead's
        probability crosses ``ALERT_AT`` upwards (from its previous prediction)."""
        x = features(state, float(ev["ts"]))
        p = float(self.model.predict_proba_one(x).get(True, 0.0))
        self.predictions += 1
        if ev["type"] in _OUTCOMES:
            self.model.learn_one(x, ev["type"] in _POSITIVE)
            self.learned += 1
        before, state["p"] = state["p"], p
        return ev["type"] in _HAND or (before is not None and before < ALERT_AT <= p)


def lead_of(ev: dict[str, Any]) -> str:
    who = ev.get("lead_id") or f"~{ev.get('visitor_id')}"
    return f"{ev.get('tenant') or 'default'}:{who}"


# --- the in-memory Bytewax peer --------------------------------------------------------


class _CountingPartition(StatelessSinkPartition[tuple[str, bool]]):
    def __init__(self, summary: str, started: float, scorer: LeadScorer) -> None:
        self._summary, self._started, self._scorer = summary, started, scorer
        self.events = 0
        self.alerts = 0
        self.leads: set[str] = set()

    def write_batch(self, items: list[tuple[str, bool]]) -> None:
        self.events += len(items)
        for lead, alert in items:
            self.leads.add(lead)
            self.alerts += alert

    def close(self) -> None:
        seconds = time.perf_counter() - self._started
        row = {
            "events": self.events,
            "alerts": self.alerts,
            "leads": len(self.leads),
            "seconds": seconds,
            "predictions": self._scorer.predictions,
            "learned": self._scorer.learned,
        }
        Path(self._summary).write_text(json.dumps(row))


class _CountingSink(DynamicSink[tuple[str, bool]]):
    """Counts what reaches it; writes the counts and the elapsed time at close."""

    def __init__(self, summary: str, started: float, scorer: LeadScorer) -> None:
        self._args = (summary, started, scorer)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CountingPartition:
        return _CountingPartition(*self._args)


def peer_flow(path: str, summary: str) -> Dataflow:
    """The in-memory peer's dataflow (``python -m bytewax.run`` builds it from its args)."""
    started = time.perf_counter()
    scorer = LeadScorer()

    def step(state: dict[str, Any] | None, ev: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        state = state if state is not None else new_state()
        counts = state["counts"]
        counts[ev["type"]] = counts.get(ev["type"], 0) + 1
        observe(state, ev)
        return state, scorer.score(state, ev)

    flow = Dataflow("leadpulse_inmemory_peer")
    lines = op.input("file", flow, FileSource(path, batch_size=500))
    events = op.map("decode", lines, json.loads)
    keyed = op.key_on("lead", events, lead_of)
    scored = op.stateful_map("features_and_score", keyed, step)
    op.output("count", scored, _CountingSink(summary, started, scorer))
    return flow


def measure_bytewax_peer(path: Path, timeout_s: float = 600.0) -> PeerRun:
    """Run :func:`peer_flow` on ``path`` with ``python -m bytewax.run``, one worker."""
    with tempfile.TemporaryDirectory(prefix="leadpulse-peer-") as tmp:
        summary = Path(tmp) / "summary.json"
        target = f"benchmarks.peers:peer_flow({str(path)!r}, {str(summary)!r})"
        done = subprocess.run(
            [sys.executable, "-m", "bytewax.run", target, "-w", "1"],
            capture_output=True, text=True, timeout=timeout_s, check=False,
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        if done.returncode != 0 or not summary.exists():
            tail = (done.stderr or done.stdout)[-1_500:]
            raise RuntimeError(f"bytewax peer exited with {done.returncode}: {tail}")
        row = json.loads(summary.read_text())
    return PeerRun(
        "in-memory Bytewax peer",
        row["events"],
        row["seconds"],
        row["events"] / row["seconds"],
        row["alerts"],
        "python -m bytewax.run, 1 worker, no recovery; timed from the flow's construction "
        "to the sink's close",
        {k: row[k] for k in ("leads", "predictions", "learned")},
    )


# --- the naive Redis peer --------------------------------------------------------------


@dataclass(frozen=True)
class _NaiveKeys:
    """The naive peer's private keys (all under ``prefix:``, deleted after the run)."""

    prefix: str

    def counts(self, lead: str) -> str:
        return f"{self.prefix}:{{{lead}}}:c"

    def state(self, lead: str) -> str:
        return f"{self.prefix}:{{{lead}}}:s"

    def hot(self, tenant: str) -> str:
        return f"{self.prefix}:hot:{tenant}"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}:alerts"


def _naive_event(r: Any, keys: _NaiveKeys, scorer: LeadScorer, ev: dict[str, Any]) -> bool:
    """One event, 5 unpipelined round trips (+ XADD on an alert); True when it alerted."""
    lead = lead_of(ev)
    r.hincrby(keys.counts(lead), ev["type"], 1)
    raw_counts = cast(dict[bytes, bytes], r.hgetall(keys.counts(lead)))
    blob = cast(bytes | None, r.get(keys.state(lead)))
    state = json.loads(blob) if blob else new_state()
    state["counts"] = {k.decode(): int(v) for k, v in raw_counts.items()}
    observe(state, ev)
    alert = scorer.score(state, ev)
    p = state["p"]
    del state["counts"]
    r.set(keys.state(lead), json.dumps(state, separators=(",", ":")), ex=30 * 86_400)
    r.zadd(keys.hot(str(ev.get("tenant") or "default")), {lead: round(100 * p)})
    if alert:
        r.xadd(keys.alerts, {"lead": lead, "p": f"{p:.3f}"})
    return alert


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as fh:
        for raw in fh:
            if raw.strip():
                yield json.loads(raw)


def measure_naive_peer(
    client: redis.Redis, path: Path, progress: Callable[[int], object] | None = None
) -> PeerRun:
    """The hand-written loop over ``path``, against ``client`` under a private prefix."""
    keys = _NaiveKeys(new_prefix("np"))
    counter = CountingClient(client)
    scorer = LeadScorer()
    events = alerts = 0
    try:
        started = time.perf_counter()
        for ev in _lines(path):
            alerts += _naive_event(counter, keys, scorer, ev)
            events += 1
            if progress is not None and events % 500 == 0:
                progress(events)
        seconds = time.perf_counter() - started
    finally:
        delete_prefix(client, keys.prefix)
    return PeerRun(
        "naive peer (5 unpipelined round trips an event)",
        events,
        seconds,
        events / seconds if seconds > 0 else 0.0,
        alerts,
        "one Python loop in the bench process over the file, timed from the first line",
        {
            "redis_round_trips_per_event": round(counter.calls / events, 3) if events else None,
            "predictions": scorer.predictions,
            "learned": scorer.learned,
        },
    )


# --- the engine ------------------------------------------------------------------------


def measure_engine_replay(url: str, path: Path, timeout_s: float = 1_800.0) -> PeerRun:
    """``leadpulse replay path --redis-url url`` under a fresh prefix; its own rate line."""
    prefix = new_prefix("rp")
    client = redis.Redis.from_url(url)
    try:
        with tempfile.TemporaryDirectory(prefix="leadpulse-replay-") as tmp:
            cmd = [sys.executable, "-m", "engine.cli", "replay", str(path), "--redis-url", url,
                   "--scores-out", str(Path(tmp) / "scores.jsonl")]  # fmt: skip
            began = time.perf_counter()
            done = subprocess.run(
                cmd, env=engine_env(url, prefix), capture_output=True, text=True,
                timeout=timeout_s, check=False, cwd=Path(__file__).resolve().parent.parent,
            )  # fmt: skip
            wall = time.perf_counter() - began
        found = _REPLAY_LINE.search(done.stderr)
        if done.returncode != 0 or found is None:
            raise RuntimeError(f"leadpulse replay exited with {done.returncode}: "
                               f"{done.stderr[-1_500:]}")  # fmt: skip
        events, alerts, seconds = int(found[1]), int(found[2]), float(found[3])
    finally:
        delete_prefix(client, prefix)
        client.close()
    return PeerRun(
        "engine: leadpulse replay (full pipeline, 1 worker)",
        events,
        seconds,
        events / seconds if seconds > 0 else 0.0,
        alerts,
        "python -m engine.cli replay FILE --redis-url URL; replay's own timing of the "
        "dataflow (stream loading excluded)",
        {"process_wall_s": round(wall, 2)},
    )


def peer_ratios(engine: PeerRun, inmemory: PeerRun, naive: PeerRun) -> dict[str, float]:
    """engine / in-memory peer and engine / naive peer (events/s over events/s)."""
    return {
        "engine_over_inmemory": round(engine.events_per_s / inmemory.events_per_s, 4),
        "engine_over_naive": round(engine.events_per_s / naive.events_per_s, 3),
    }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def measure_peers(
    client: redis.Redis,
    url: str,
    work: Workload,
    n: int,
    rounds: int = 1,
    log: Callable[[str], object] | None = None,
) -> dict[str, Any]:
    """Engine, in-memory peer, naive peer on one file of ``n`` events, ``rounds`` times.

    Each round runs the three back to back; the ratios are taken within a round and the
    median over rounds is reported (the machine is shared: a neighbour's burst can halve
    one measurement)."""
    per_round: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="leadpulse-peers-") as tmp:
        path = Path(tmp) / "events.jsonl"
        count = write_event_file(work, path, n)
        size = path.stat().st_size
        for k in range(1, rounds + 1):
            engine = measure_engine_replay(url, path)
            inmemory = measure_bytewax_peer(path)
            naive = measure_naive_peer(client, path)
            row = {
                "engine": engine.as_dict(),
                "inmemory": inmemory.as_dict(),
                "naive": naive.as_dict(),
                **peer_ratios(engine, inmemory, naive),
                "loadavg_1m_after": round(os.getloadavg()[0], 2),
            }
            per_round.append(row)
            if log is not None:
                rates = (engine.events_per_s, inmemory.events_per_s, naive.events_per_s)
                log(f"peers [{k}/{rounds}]: engine {rates[0]:,.0f}, in-memory {rates[1]:,.0f}, "
                    f"naive {rates[2]:,.0f} events/s")  # fmt: skip
    out: dict[str, Any] = {
        "file": {
            "events": count,
            "leads": len({lead_of(e) for e in work.events[:n]}),
            "bytes": size,
            "format": "JSONL, event contract v1",
        },
        "rounds": per_round,
        "method": "per round: engine, in-memory peer, naive peer back to back on the same "
        "file; events/s medians over rounds, ratios the median of per-round ratios",
    }
    for side in ("engine", "inmemory", "naive"):
        out[side] = {
            **per_round[-1][side],
            "events_per_s": round(_median([r[side]["events_per_s"] for r in per_round]), 1),
        }
    for ratio in ("engine_over_inmemory", "engine_over_naive"):
        out[ratio] = round(_median([r[ratio] for r in per_round]), 4)
    return out
