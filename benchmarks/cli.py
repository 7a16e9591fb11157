"""``leadpulse bench``: every benchmark figure of the project, measured in ONE run.

The machine is shared and noisy, so ratios taken in the same run are what to
compare; absolute figures from different runs are not. Steps (``--only`` picks):

- ``throughput``  maximum sustained events/s of ``leadpulse run`` draining a backlog:
                  1 worker, 2 workers, 2 processes (benchmarks/throughput.py)
- ``baselines``   the floor (pipelined Lua + predict, no dataflow) and a naive peer
                  (unpipelined, predict+learn per event) (benchmarks/baselines.py);
                  throughput and baselines run interleaved in ``--rounds`` rounds
                  (3 in the full run) and report medians and per-round ratios
- ``peers``       issue 12's anchors on ONE event file, in ``--rounds`` rounds: the real
                  ``leadpulse replay``, an in-memory Bytewax peer (``python -m
                  bytewax.run``; features in a dict, River scaler + logistic regression,
                  no durability) and a naive peer (5 unpipelined round trips an event);
                  engine / each peer (benchmarks/peers.py)
- ``latency``     event -> alert p50/p95/p99/max at 25/50/80 % of the 1-worker
                  maximum, open loop, against a live ``leadpulse run`` (latency.py)
- ``memory``      Redis bytes per lead at 100k and 1M leads, dedicated server (memory.py)
- ``profile``     µs per event by stage, client and server (profile.py)
- ``quality``     the learning issue's figures, when ``benchmarks/quality*.py`` exists

Writes ``bench.json`` (``bench-quick.json`` with ``--quick``), a markdown summary and
``latency.png`` / ``throughput.png`` to ``--out`` (default ``benchmarks/results``).

    leadpulse bench            # full run; ~16 minutes on 2 cores without the quality step
    leadpulse bench --quick    # under a minute: same steps, small sizes
    python -m benchmarks.cli --quick --out /tmp/bench
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["STEPS", "add_parser", "main", "run"]

STEPS = ("throughput", "baselines", "peers", "latency", "memory", "profile", "quality")
RESULTS = Path(__file__).resolve().parent / "results"
LOAD_LEVELS = (0.25, 0.50, 0.80)


@dataclass(frozen=True)
class Sizes:
    rounds: int  # interleaved rounds of throughput configurations and baselines
    throughput_events: int
    baseline_events: int
    naive_events: int
    latency_seconds: float
    memory_sample: int
    memory_points: tuple[tuple[int, int | None], ...]  # (leads, events per lead or all)
    profile_events: int
    peer_events: int  # the one file the engine and both peers process


FULL = Sizes(
    3, 50_000, 20_000, 8_000, 30.0, 2_000, ((100_000, None), (1_000_000, 10)), 30_000, 100_000
)
QUICK = Sizes(1, 6_000, 2_000, 1_000, 2.5, 30, ((2_000, None), (10_000, 10)), 2_000, 3_000)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bench`` to an ``add_subparsers()`` object (engine/cli.py calls this)."""
    p = subparsers.add_parser(
        "bench",
        help="measure throughput, latency, memory, floor and naive ratios in one run",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    _arguments(p)
    return p


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small sizes: the whole run in < 1 min")
    p.add_argument("--out", default=str(RESULTS), help="results directory")
    p.add_argument(
        "--redis-url",
        default="",
        help="measure against this server (it gets written to); default: a dedicated server "
        "started for the run (redis-server from PATH, else the embedded Valkey); REDIS_URL "
        "is never used silently",
    )
    p.add_argument("--only", default=",".join(STEPS), help=f"comma list of {', '.join(STEPS)}")
    p.add_argument("--events", type=int, help="throughput backlog size (overrides the mode's)")
    p.add_argument("--rounds", type=int, help="interleaved throughput/baseline (and peers) rounds")
    p.add_argument("--peer-events", type=int, help="events in the peers step's file")
    p.add_argument("--seconds", type=float, help="seconds of traffic per latency level")
    p.add_argument(
        "--memory-points",
        help='comma list of LEADS[:EVENTS_PER_LEAD] (default "100000,1000000:10")',
    )
    p.add_argument("--memory-sample", type=int, help="leads replayed in full before copying")
    p.add_argument("--profile-html", help="also write the pyinstrument HTML report here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


class _Bars:
    """rich progress bars, one task per measurement (or silence)."""

    def __init__(self, enabled: bool) -> None:
        self._progress: Any = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )  # fmt: skip

            self._progress = Progress(
                TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), transient=False,
            )  # fmt: skip

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        if self._progress is None:
            yield
        else:
            with self._progress:
                yield

    def task(self, description: str, total: int) -> Callable[[int, int], None]:
        if self._progress is None:
            return lambda done, total: None
        tid = self._progress.add_task(description, total=total)

        def update(done: int, new_total: int) -> None:
            self._progress.update(tid, completed=done, total=new_total)

        return update

    def log(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            print(text, file=sys.stderr)


def _quality(quick: bool) -> dict[str, Any] | None:
    """The learning issue's quality figures: ``benchmarks/quality*.py`` exposing
    ``run(quick: bool) -> dict``, else its JSON results; None when neither exists."""
    here = Path(__file__).resolve().parent
    out: dict[str, Any] = {}
    for path in sorted(here.glob("quality*.py")):
        module = importlib.import_module(f"benchmarks.{path.stem}")
        fn = getattr(module, "run", None)
        if callable(fn):
            out[path.stem] = fn(quick=quick)
    if not out:
        for path in sorted((here / "results").glob("quality*.json")):
            out[path.stem] = {"from_file": path.name, **json.loads(path.read_text())}
    return out or None


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


@dataclass
class _Rounds:
    """What the interleaved rounds measured so far, config by config and baseline by baseline."""

    runs: dict[str, list[dict[str, Any]]]
    failed: dict[str, str] = field(default_factory=dict)
    floors: list[dict[str, Any]] = field(default_factory=list)
    naives: list[dict[str, Any]] = field(default_factory=list)
    paired: list[dict[str, float]] = field(default_factory=list)


def _throughput_and_baselines(
    result: dict[str, Any],
    args: argparse.Namespace,
    client: Any,
    url: str,
    work: Any,
    tp_work: Any,
    sizes: Sizes,
    steps: list[str],
    bars: _Bars,
) -> None:
    """Rounds of (1 worker, 2 workers, 2 processes, floor, naive), medians reported.

    The machine is shared: a neighbour's burst can halve one measurement. Interleaving
    the configurations and baselines in rounds, and taking per-round ratios, pairs
    each ratio's two sides in time; the median over rounds drops the odd round out.
    """
    from benchmarks.throughput import CONFIGS

    rounds = args.rounds or sizes.rounds
    done = _Rounds(runs={name: [] for name in CONFIGS})
    for k in range(1, rounds + 1):
        tag = f"[{k}/{rounds}]"
        if "throughput" in steps:
            _throughput_round(done, client, url, tp_work, tag, bars)
        if "baselines" in steps:
            _baselines_round(done, client, work, sizes, k, tag, bars)
    if "throughput" in steps:
        result["throughput"] = _throughput_summary(done, rounds)
    if "baselines" in steps:
        _baselines_summary(result, done)


def _throughput_round(
    done: _Rounds, client: Any, url: str, tp_work: Any, tag: str, bars: _Bars
) -> None:
    """One drain of the backlog by each configuration that has not failed yet."""
    from benchmarks.throughput import CONFIGS, measure_drain

    n_tp = len(tp_work)
    for name, (procs, workers) in CONFIGS.items():
        if name in done.failed:
            continue
        try:
            drain = measure_drain(
                client, url, tp_work, procs, workers,
                bars.task(f"throughput {tag}: {name}", n_tp),
            )  # fmt: skip
        except (RuntimeError, TimeoutError) as exc:  # an engine crash is a finding
            done.failed[name] = _error(exc)
            bars.log(f"throughput: {name} FAILED: {done.failed[name]}")
            continue
        done.runs[name].append({**drain.as_dict(), "loadavg_1m_after": _load()})


def _baselines_round(
    done: _Rounds, client: Any, work: Any, sizes: Sizes, k: int, tag: str, bars: _Bars
) -> None:
    """The floor and the naive peer once, paired with this round's 1-worker drain."""
    from benchmarks.baselines import measure_floor, measure_naive

    n, nn = sizes.baseline_events, sizes.naive_events
    done.floors.append(measure_floor(client, work, n, bars.task(f"floor {tag}", n)))
    done.naives.append(measure_naive(client, work, nn, bars.task(f"naive peer {tag}", nn)))
    one = done.runs["1 worker"][-1] if done.runs["1 worker"] else None
    if one is not None and len(done.runs["1 worker"]) == k:
        e, f = one["events_per_s"], done.floors[-1]["events_per_s"]
        v = done.naives[-1]["events_per_s"]
        done.paired.append(
            {"engine": e, "floor": f, "naive": v,
             "engine_over_floor": round(e / f, 3), "engine_over_naive": round(e / v, 3)}
        )  # fmt: skip


def _throughput_summary(done: _Rounds, rounds: int) -> dict[str, Any]:
    """Each configuration's medians over its rounds, and the fastest one."""
    configs: dict[str, Any] = {}
    for name, rows in done.runs.items():
        if rows:
            configs[name] = {
                "events": rows[0]["events"],
                "events_per_s": round(_median([r["events_per_s"] for r in rows]), 1),
                "seconds": round(_median([r["seconds"] for r in rows]), 3),
                "loadavg_1m_after": round(_median([r["loadavg_1m_after"] for r in rows]), 2),
                "rounds": rows,
            }
    summary: dict[str, Any] = {"configs": configs, "failed": done.failed, "rounds": rounds}
    if configs:
        best = max(configs, key=lambda c: configs[c]["events_per_s"])
        summary["max_events_per_s"] = configs[best]["events_per_s"]
        summary["max_config"] = best
    return summary


def _baselines_summary(result: dict[str, Any], done: _Rounds) -> None:
    """The floor's and naive peer's medians, and the per-round ratios' medians."""

    def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            **rows[-1],
            "events_per_s": round(_median([r["events_per_s"] for r in rows]), 1),
            "rounds": rows,
        }

    result["baselines"] = {
        "floor": summary(done.floors),
        "naive": summary(done.naives),
        "loadavg_1m_after": _load(),
    }
    paired = done.paired
    if paired:
        result["ratios"] = {
            "engine_events_per_s": round(_median([p["engine"] for p in paired]), 1),
            "engine_over_floor": round(_median([p["engine_over_floor"] for p in paired]), 3),
            "engine_over_naive": round(_median([p["engine_over_naive"] for p in paired]), 3),
            "method": "median over rounds of per-round ratios (each side measured "
            "back to back in the same round)",
            "per_round": paired,
        }


def _load() -> float:
    """The 1-minute load average: how contended the machine was during a step."""
    return round(os.getloadavg()[0], 2)


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _error(exc: BaseException) -> str:
    """The exception's type and its last meaningful lines (an engine traceback's cause)."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    causes = [ln.strip() for ln in lines if "Error" in ln and not ln.startswith(" ")]
    return f"{type(exc).__name__}: " + " | ".join((causes or lines)[-3:])[:600]


def _memory_at(result: dict[str, Any], heavy: bool) -> float | None:
    """Bytes per lead of the 10-events-a-lead point, or (heavy) of the all-events point."""
    for p in result.get("memory", {}).get("points", []):
        light = isinstance(p.get("events_per_lead"), int)
        if "bytes_per_lead" in p and light != heavy:
            return float(p["bytes_per_lead"])
    return None


def _targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Issue 12's targets (and the earlier floor / naive ones), measured in this run."""

    def row(measured: float | None, ok: Callable[[float], bool]) -> dict[str, Any]:
        return {"measured": measured, "met": None if measured is None else ok(measured)}

    tp = result.get("throughput", {}).get("configs", {})
    one_process = ("1 worker", "2 workers")
    ratios = result.get("ratios", {})
    peers = result.get("peers", {})
    p99 = None
    latency = result.get("latency", {})
    measured_max = str(latency.get("max_from", "")).startswith("throughput")
    for level in latency.get("levels", []) if measured_max else ():  # (not of an assumed max)
        if level["load"] == 0.5 and "latency_ms" in level:
            p99 = level["latency_ms"]["p99"]
    return {
        ">= 25,000 events/s, one process, alerts on (leadpulse run)": row(
            max((tp[k]["events_per_s"] for k in one_process if k in tp), default=None),
            lambda v: v >= 25_000,
        ),
        ">= 20,000 events/s, leadpulse replay of the peers' file": row(
            peers.get("engine", {}).get("events_per_s"), lambda v: v >= 20_000
        ),
        "engine >= 0.12x in-memory Bytewax peer": row(
            peers.get("engine_over_inmemory"), lambda v: v >= 0.12
        ),
        "engine >= 8x naive peer (5 round trips)": row(
            peers.get("engine_over_naive"), lambda v: v >= 8.0
        ),
        "p99 <= 50 ms at 50 % of max (ms)": row(p99, lambda v: v <= 50),
        "<= 1 KB Redis per lead, 10 events a lead (B)": row(
            _memory_at(result, heavy=False), lambda v: v <= 1024
        ),
        "<= 2 KB Redis per lead, all events (~56) a lead (B)": row(
            _memory_at(result, heavy=True), lambda v: v <= 2048
        ),
        "engine >= 0.7x floor": row(ratios.get("engine_over_floor"), lambda v: v >= 0.7),
        "engine >= 4x naive": row(ratios.get("engine_over_naive"), lambda v: v >= 4.0),
    }


def run(args: argparse.Namespace) -> int:
    """Run the selected steps; write JSON, markdown and plots; 0 on success."""
    from engine.redis_client import connect

    missing = [m for m in ("hdrh", "matplotlib", "rich", "pyinstrument") if not _importable(m)]
    if missing:
        print(
            f"leadpulse bench: missing {', '.join(missing)}; install the bench extra: "
            "pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return 2
    quick = bool(args.quick)
    sizes = QUICK if quick else FULL
    steps = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        print(f"leadpulse bench: unknown step(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with _server(args.redis_url) as url:
        client = connect(url)
        try:
            return _run(args, client, url, quick, sizes, steps, out)
        finally:
            client.close()


@contextlib.contextmanager
def _server(url: str) -> Iterator[str]:
    """``--redis-url`` when given, else a dedicated server for this run, stopped after."""
    from engine.redis_client import check_url

    if url:
        check_url(url)
        yield url
        return
    from benchmarks.harness import DedicatedServer

    with DedicatedServer() as server:
        note = (
            " (REDIS_URL is not used: pass --redis-url for that)"
            if os.environ.get("REDIS_URL")
            else ""
        )
        print(f"leadpulse bench: dedicated {server.kind} {server.version}{note}", file=sys.stderr)
        yield server.url


def _run(
    args: argparse.Namespace,
    client: Any,
    url: str,
    quick: bool,
    sizes: Sizes,
    steps: list[str],
    out: Path,
) -> int:
    from benchmarks.harness import machine_info
    from engine.redis_client import redact_url

    points = _memory_points(args, sizes)
    bars = _Bars(not args.no_progress)
    began = time.perf_counter()
    result: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "machine": machine_info(client, redact_url(url)),
        "steps": steps,
    }
    with bars.running():
        work, tp_work = _workloads(result, args, sizes, steps)
        if "throughput" in steps or "baselines" in steps:
            _throughput_and_baselines(result, args, client, url, work, tp_work, sizes, steps, bars)
        if "peers" in steps:
            _peers_step(result, args, client, url, work, sizes, bars)
        if "latency" in steps:
            _latency_step(result, args, client, url, work, sizes, bars)
        if "memory" in steps:
            _memory_step(result, args, sizes, points, bars)
        if "profile" in steps:
            from benchmarks.profile import measure_profile

            update = bars.task("profile (2 replays)", 1)
            result["profile"] = measure_profile(work, sizes.profile_events, args.profile_html)
            update(1, 1)
        if "quality" in steps:
            try:
                quality = _quality(quick)
            except Exception as exc:  # a broken quality module must not lose the other figures
                quality = {"error": f"{type(exc).__name__}: {exc}"}
            result["quality"] = quality if quality is not None else {"status": "absent"}
    result["targets"] = _targets(result)
    result["elapsed_s"] = round(time.perf_counter() - began, 1)
    _write(result, out, quick, bars)
    return 0


def _workloads(
    result: dict[str, Any], args: argparse.Namespace, sizes: Sizes, steps: list[str]
) -> tuple[Any, Any]:
    """The seeded events every step shares, and the throughput backlog (its head)."""
    from benchmarks.harness import Workload

    n_tp = args.events or sizes.throughput_events
    n_peers = args.peer_events or sizes.peer_events
    need = max(n_tp, sizes.baseline_events, sizes.profile_events)
    need = max(need, n_peers if "peers" in steps else 0)
    work = Workload.build(need)
    result["workload"] = {
        "generator": "benchmarks.simulator, seed 7, 60 days",
        "events": len(work),
        "leads": work.leads,
        "throughput_events": min(n_tp, len(work)),
    }
    tp_work = Workload(work.events[:n_tp], work.payloads[:n_tp], work.partitions[:n_tp], work.leads)
    return work, tp_work


def _peers_step(
    result: dict[str, Any],
    args: argparse.Namespace,
    client: Any,
    url: str,
    work: Any,
    sizes: Sizes,
    bars: _Bars,
) -> None:
    from benchmarks.peers import measure_peers

    n_peers = args.peer_events or sizes.peer_events
    rounds = args.rounds or sizes.rounds
    try:
        result["peers"] = measure_peers(client, url, work, n_peers, rounds, bars.log)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        bars.log(f"peers FAILED: {_error(exc)}")
        result["peers"] = {"error": _error(exc)}


def _latency_step(
    result: dict[str, Any],
    args: argparse.Namespace,
    client: Any,
    url: str,
    work: Any,
    sizes: Sizes,
    bars: _Bars,
) -> None:
    from benchmarks.latency import measure_latency

    seconds = args.seconds or sizes.latency_seconds
    one = result.get("throughput", {}).get("configs", {}).get("1 worker")
    max_rate = one["events_per_s"] if one else float(args.events or 4_000)
    levels = []
    for load in LOAD_LEVELS:
        rate = load * max_rate
        n = int(rate * seconds)
        try:
            row = measure_latency(
                client, url, work, rate, seconds, bars.task(f"latency at {load:.0%}", n)
            )
        except (RuntimeError, TimeoutError) as exc:
            bars.log(f"latency at {load:.0%} FAILED: {_error(exc)}")
            levels.append({"load": load, "offered_per_s": rate, "error": _error(exc)})
            continue
        levels.append({"load": load, **row, "loadavg_1m_after": _load()})
    result["latency"] = {
        "max_events_per_s": max_rate,
        "max_from": "throughput: 1 worker" if one else "assumed (throughput not run)",
        "seconds_per_level": seconds,
        "levels": levels,
    }


def _memory_points(args: argparse.Namespace, sizes: Sizes) -> tuple[tuple[int, int | None], ...]:
    """``--memory-points`` parsed (read before any step runs), else the mode's points."""
    points = sizes.memory_points
    if args.memory_points:
        points = tuple(
            (int(a), int(b) if b else None)
            for a, _, b in (x.partition(":") for x in args.memory_points.split(","))
        )
    return points


def _memory_step(
    result: dict[str, Any],
    args: argparse.Namespace,
    sizes: Sizes,
    points: tuple[tuple[int, int | None], ...],
    bars: _Bars,
) -> None:
    from benchmarks.memory import measure_memory

    tasks: dict[str, Callable[[int, int], None]] = {}

    def mem_progress(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = bars.task(f"memory: {label}", total)
        tasks[label](done, total)

    result["memory"] = measure_memory(
        args.memory_sample or sizes.memory_sample, points, mem_progress
    )


def _write(result: dict[str, Any], out: Path, quick: bool, bars: _Bars) -> None:
    """bench.json, the markdown summary and the plots (quick runs: their own names)."""
    from benchmarks import report

    stem = "bench-quick" if quick else "bench"
    result["files"] = {"json": f"{stem}.json", "markdown": f"{stem}.md"}
    result["files"]["plots"] = report.plots(result, out) if not quick else []
    if quick:  # quick plots get their own names so they never replace the full run's
        quick_dir = out / "quick-plots"
        quick_dir.mkdir(exist_ok=True)
        result["files"]["plots"] = [f"quick-plots/{f}" for f in report.plots(result, quick_dir)]
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(report.markdown(result))
    bars.log(report.markdown(result))
    bars.log(f"wrote {out / stem}.json, {stem}.md and plots in {result['elapsed_s']} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cli", description=__doc__)
    _arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
