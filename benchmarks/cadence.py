"""Cadence bench: a simulated month with follow-up cadences on (issue 18).

Three measurements, one invocation (``python -m benchmarks.cadence --leads 10000``):

1. **throughput, cadences off vs on**: the same simulated month (``benchmarks/simulator``)
   preloaded under two fresh prefixes and drained by the engine's bounded dataflow in
   this process (one worker, 4 partitions), off and on in turn (``--rounds`` rounds,
   alternating which goes first); events/s = events / drain time; also the CPU time of
   this process per event (the engine's own work, without the Redis server's; steadier
   than wall time on a shared machine) and each round's on/off ratio.
2. **correctness of the 'on' run**, checked from the events themselves: every step id
   emitted once; no step on a channel the lead had closed (opt-out, unsubscribe, STOP,
   bounce, invalid contact: ``features.spec.blocked_channels``) at or before its due
   time; no call, voicemail or SMS due in quiet hours (tenant zone); nothing left
   overdue in the due sets at the end; steps due within ``resume_after_d`` after a
   conversation event (reply, answered call, appointment) counted (should be none).
3. **lateness at live rate**: a live (unbounded) dataflow with clock ticks; ``--live``
   leads created at wall time over 20 s enter a plan with steps at 0, 1 and 2 minutes;
   lateness = the step's emission (``emit_ms``) minus its due time.

Writes ``benchmarks/results/cadence.json`` and prints the markdown table.

**Side by side** (``--side-by-side``): each round drains the month off and on **at the same
time**, each in its own process (``--drain off|on`` children, started together once both
have loaded their streams), and reports each round's on/off ratios of events/s and of CPU
an event. On a shared machine whose speed drifts from one minute to the next, sequential
drains compare minutes as much as code; drains that run together see the same machine.

**Same results** (a change that must not change what cadences do): ``--same OUT.json``
drains the month once with cadences on, with whatever ``engine`` is on the path, and
writes every key under its prefix, normalised (plan states decoded, streams without ids
and ``emit_ms``, sorted); ``--compare A.json B.json`` diffs two such dumps, keys that hold
wall-clock times (alerts, bucket moves, hot lists, model, positions; the cadence clock's
wall part) aside: they differ between two runs of the same code; for the steps' stream it
also counts, step by step, which fields differ. Plan states are compared decoded, without
the personalisation fields they held until those left them; lead records (``:f``)
decoded, without the fields appended for the steps (``named_area``, the address): both
dumps of one code give the same either way. Old code: run this file with the old tree
first on ``PYTHONPATH`` (``PYTHONPATH=<old> python <new>/benchmarks/cadence.py --same
old.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgpack
import redis

from benchmarks.simulator import SimConfig, generate
from engine.app import build_parts
from engine.cadence.decide import decode
from engine.cadence.plans import Hours
from engine.cadence.runner import step_entries
from engine.dataflow import build_flow, run_flow
from engine.events import Event
from engine.keys import cadence_clock_key, cadence_due_key
from engine.redis_client import connect
from engine.settings import Settings, load_settings
from engine.streams import Producer, StreamNames, stream_names
from features.spec import blocked_channels

OUT = Path(__file__).parent / "results" / "cadence.json"
CONVERSATIONS = {"reply", "call_answered", "appointment_set", "appointment_held"}


def _settings(prefix: str, on: bool, **extra: Any) -> Settings:
    over: dict[str, Any] = {"redis": {"key_prefix": prefix}, "metrics": {"port": 0},
                            "cadence": {"enabled": on, **extra.pop("cadence", {})}}  # fmt: skip
    over.update(extra)
    return load_settings(overrides=over, environ={})


def _drop(client: Any, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=2_000))
    for i in range(0, len(keys), 1_000):
        client.unlink(*keys[i : i + 1_000])


def _load(client: Any, settings: Settings, events: list[dict[str, Any]]) -> None:
    names = stream_names(settings)
    producer = Producer(client, names, maxlen=0)
    for i in range(0, len(events), 2_000):
        producer.send(events[i : i + 2_000])


def drain(
    client: Any, events: list[dict[str, Any]], on: bool, keep: bool,
    ready: Callable[[], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The month drained once (off or on); ``ready`` is called once it is loaded and the
    engine built, right before the timed drain (``--side-by-side`` waits there)."""
    # (unique within a process by the clock, between --side-by-side children by the pid)
    stamp = (int(time.time() * 1000) + os.getpid()) % 10**8
    prefix = f"bncad{'on' if on else 'off'}{stamp}"
    settings = _settings(prefix, on)
    _load(client, settings, events)
    parts = build_parts(settings, client)
    if ready is not None:
        ready()
    t0, cpu0 = time.perf_counter(), time.process_time()
    run_flow(build_flow(parts, bounded=True))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    out = {"on": on, "events": len(events), "seconds": round(seconds, 2),
           "events_per_s": round(len(events) / seconds),
           "cpu_us_per_event": round(cpu / len(events) * 1e6, 1),  # the engine's process only
           "load_avg_1m": round(os.getloadavg()[0], 2), "prefix": prefix}  # fmt: skip
    if not keep:
        _drop(client, prefix)
    return out


def _plain(x: Any) -> Any:
    if isinstance(x, bytes):
        try:
            return x.decode()
        except UnicodeDecodeError:
            return "hex:" + x.hex()
    return x


def _state(raw: bytes) -> list[Any]:
    """A ``:c`` value decoded, every field but the personalisation ones (old code's)."""
    s = decode(raw)
    return ["state", {f.name: getattr(s, f.name) for f in dataclasses.fields(s)
                      if f.name != "personal"}]  # fmt: skip


def _record(raw: bytes) -> list[Any]:
    """A lead record (``:f``) decoded, without the clocks and texts appended after the
    first 9 and 4 (``named_area``, the address: features/state.py), trailing empties
    stripped as the record packs them."""
    r = msgpack.unpackb(raw, raw=False)
    for i, (n, empty) in ((2, (9, 0)), (3, (4, ""))):
        kept = list(r[i][:n])
        while kept and kept[-1] == empty:
            kept.pop()
        r[i] = kept
    return ["record", json.loads(json.dumps(r, default=_plain))]


def _value(client: Any, key: bytes, kind: str) -> Any:
    """A key's value, normalised for :func:`same` (``:c`` states and ``:f`` records decoded)."""
    if kind == "string":
        raw = client.get(key)
        if key.endswith(b":c"):
            return _state(raw)
        return _record(raw) if key.endswith(b":f") else _plain(raw)
    if kind == "hash":
        return {_plain(a): _plain(b) for a, b in sorted(client.hgetall(key).items())}
    if kind == "zset":
        return [[_plain(m), s] for m, s in client.zrange(key, 0, -1, withscores=True)]
    if kind == "set":
        return sorted(_plain(m) for m in client.smembers(key))
    if kind == "list":
        return [_plain(m) for m in client.lrange(key, 0, -1)]
    if kind == "stream":
        rows = sorted(json.dumps(_row(fields), sort_keys=True) for _, fields in client.xrange(key))
        return {"n": len(rows), "rows": rows}
    return kind


def _row(fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    """A stream entry's fields, a step (``c``) decoded without its wall-clock ``emit_ms``."""
    row: dict[str, Any] = {}
    for a, b in fields.items():
        if a == b"c":
            step = msgpack.unpackb(b, raw=False)
            step.pop("emit_ms", None)
            row["c"] = step
        else:
            row[_plain(a)] = _plain(b)
    return row


def same(client: Any, events: list[dict[str, Any]], out: Path) -> None:
    """Drain the month with cadences on and dump every key under the prefix (``--same``)."""
    run = drain(client, events, True, keep=True)
    prefix = run["prefix"]
    tag = "{" + prefix + "}"
    dump = {}
    for key in sorted(client.scan_iter(match=f"{tag}:*", count=5_000)):
        kind = client.type(key).decode()
        dump[key.decode().replace(tag, "{P}")] = [kind, _value(client, key, kind)]
    _drop(client, prefix)
    out.write_text(json.dumps(dump, indent=0, sort_keys=True, default=str))


#: Keys holding wall-clock times: they differ between two runs of the same code.
_WALL = (":alerts", ":buckets", ":hotidx", ":model", ":pos")


def compare(a_path: Path, b_path: Path) -> int:
    """Diff two :func:`same` dumps (``--compare``): 0 if only wall-clock keys differ."""
    a, b = json.loads(a_path.read_text()), json.loads(b_path.read_text())

    def fix(key: str, v: Any) -> Any:  # the cadence clock: its watermark, not its wall time
        return {p: w.split(":")[0] for p, w in v[1].items()} if key.endswith(":cadwm") else v

    bad = sorted(set(a) ^ set(b)) + [
        k for k in sorted(set(a) & set(b))
        if fix(k, a[k]) != fix(k, b[k]) and not any(w in k for w in _WALL)
    ]  # fmt: skip
    steps = a.get("{P}:cadence", ["", {"n": 0}])[1]["n"]
    print(
        f"{len(a)} keys, {len(bad)} differ; steps {steps}, states "
        f"{sum(k.endswith(':c') for k in a)}, due members "
        f"{sum(len(a[k][1]) for k in a if ':cad:' in k)}, cad_ counters "
        f"{sum(str(f).startswith('cad_') for k in a if a[k][0] == 'hash' for f in a[k][1])}"
    )
    for key in bad[:20]:
        print("DIFFERS", key, str(a.get(key))[:200], "|", str(b.get(key))[:200])
    if "{P}:cadence" in bad:
        _step_diff(a["{P}:cadence"][1]["rows"], b["{P}:cadence"][1]["rows"])
    return 1 if bad else 0


def _step_diff(a_rows: list[str], b_rows: list[str]) -> None:
    """Steps of one run against the other's, by step id: which fields differ, how often."""

    def by_id(rows: list[str]) -> dict[str, dict[str, Any]]:
        out = {}
        for row in rows:
            step = json.loads(row)["c"]
            out[step["step_id"]] = {
                **{k: v for k, v in step.items() if k != "fields"},
                **{f"fields.{k}": v for k, v in step["fields"].items()},
            }
        return out

    a, b = by_id(a_rows), by_id(b_rows)
    both = set(a) & set(b)
    fields = Counter(k for sid in both for k in a[sid] if a[sid][k] != b[sid].get(k))
    changed = sum(1 for sid in both if a[sid] != b[sid])
    print(f"steps: {len(set(a) - set(b))} only in A, {len(set(b) - set(a))} only in B, "
          f"{changed} of {len(both)} in both differ; fields: {dict(fields)}")  # fmt: skip


def check(client: Any, settings: Settings, events: list[dict[str, Any]]) -> dict[str, Any]:
    """What the 'on' run emitted, checked against the events."""
    prefix = settings.redis.key_prefix
    steps = step_entries(client.xrange(f"{{{prefix}}}:cadence"))
    ids = Counter(s["step_id"] for s in steps)
    blocks: dict[tuple[str, str], list[tuple[float, str]]] = defaultdict(list)
    talks: dict[tuple[str, str], list[float]] = defaultdict(list)
    for e in events:
        key = (e.get("tenant") or "default", e.get("lead_id", ""))
        ev = Event(**{k: v for k, v in e.items() if k in Event.__slots__})
        for ch in blocked_channels(ev):
            blocks[key].append((float(e["ts"]), ch))
        if e["type"] in CONVERSATIONS:
            talks[key].append(float(e["ts"]))
    a = settings.alerts
    hours = Hours(a.timezone, a.quiet_start_h, a.quiet_end_h)
    quiet = set(settings.cadence.quiet_channels)
    resume = settings.cadence.resume_after_d * 86_400
    bad_channel = in_quiet = after_talk = 0
    for s in steps:
        key = (s["tenant"], s["lead_id"])
        ch = "call" if s["channel"] == "voicemail" else s["channel"]
        bad_channel += any(ts <= s["due_ts"] and c == ch for ts, c in blocks[key])
        in_quiet += s["channel"] in quiet and hours.quiet(s["due_ts"])
        after_talk += any(t < s["due_ts"] < t + resume for t in talks[key])
    clocks = {int(k): float(v.decode().split(":")[0])
              for k, v in client.hgetall(cadence_clock_key(prefix)).items()}  # fmt: skip
    overdue = sum(client.zcount(cadence_due_key(prefix, p), "-inf", f"({c}")
                  for p, c in clocks.items())  # fmt: skip
    kinds = Counter(s["kind"] for s in steps)
    return {"steps": len(steps), "tasks": kinds["task"], "messages": kinds["message"],
            "duplicates": sum(n - 1 for n in ids.values()), "to_closed_channel": bad_channel,
            "in_quiet_hours": in_quiet, "after_conversation": after_talk,
            "overdue_left": overdue,
            "leads_with_steps": len({(s["tenant"], s["lead_id"]) for s in steps}),
            "plans": dict(Counter(s["plan"] for s in steps))}  # fmt: skip


LIVE_PLAN = {"label": "bench track", "steps": [
    {"at": "0m", "channel": "email", "template": "b0", "goal": "g", "kind": "message"},
    {"at": "1m", "channel": "call", "template": "b1", "goal": "g", "kind": "task"},
    {"at": "2m", "channel": "sms", "template": "b2", "goal": "g", "kind": "message"},
]}  # fmt: skip


def live(client: Any, leads: int, spread_s: float = 20.0) -> dict[str, Any]:
    """Lateness of due steps at live rate (ticks fire them on idle partitions)."""
    prefix = f"bncl{int(time.time() * 1000) % 10**8}"
    settings = _settings(prefix, True, cadence={"plans": {"bench": LIVE_PLAN},
                         "rules": [{"plan": "bench"}]},
                         alerts={"quiet_start_h": 0, "quiet_end_h": 0})  # fmt: skip
    stop = threading.Event()
    parts = build_parts(settings, client)
    flow = build_flow(parts, stop=stop, drain=False)
    thread = threading.Thread(target=run_flow, args=(flow,), daemon=True)
    thread.start()
    names = StreamNames(prefix, settings.streams.partitions)
    producer = Producer(client, names, maxlen=0)
    start = time.time()
    for i in range(leads):
        at = start + spread_s * i / leads
        time.sleep(max(0.0, at - time.time()))
        producer.send([{"event_id": f"c{i}", "lead_id": f"L{i}", "type": "lead_created",
                        "ts": time.time(), "tenant": "live", "source": "website"}])  # fmt: skip
    time.sleep(max(0.0, start + spread_s + 125 - time.time()))
    stop.set()
    thread.join(30)
    steps = step_entries(client.xrange(names.cadence))
    late = sorted(s["emit_ms"] / 1000 - s["due_ts"] for s in steps)
    _drop(client, prefix)

    def q(p: float) -> float:
        return round(late[min(len(late) - 1, int(p * len(late)))] * 1000, 1)

    ids = Counter(s["step_id"] for s in steps)
    return {"leads": leads, "steps": len(steps), "expected": 3 * leads,
            "duplicates": sum(n - 1 for n in ids.values()),
            "lateness_ms": {"p50": q(0.5), "p99": q(0.99), "max": q(1.0)},
            "timer_steps_lateness_ms_p99": _p99([s["emit_ms"] / 1000 - s["due_ts"]
                                                 for s in steps if s["step"] > 0])}  # fmt: skip


def _p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(0.99 * len(xs)))] * 1000, 1) if xs else 0.0


def _throughput(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the drains off and on (wall events/s and the process's CPU per event), and
    each round's on/off ratio (its two drains ran back to back: less moved by load drift)."""
    off = statistics.median(r["events_per_s"] for r in runs if not r["on"])
    on = statistics.median(r["events_per_s"] for r in runs if r["on"])
    cpu_off = statistics.median(r["cpu_us_per_event"] for r in runs if not r["on"])
    cpu_on = statistics.median(r["cpu_us_per_event"] for r in runs if r["on"])
    pairs = []
    for a, b in zip(runs[::2], runs[1::2], strict=True):
        first, second = a["events_per_s"], b["events_per_s"]
        pairs.append(second / first if b["on"] else first / second)
    return {"off_events_per_s": off, "on_events_per_s": on, "on_vs_off": round(on / off - 1, 4),
            "on_vs_off_by_round": [round(x - 1, 4) for x in pairs],
            "on_vs_off_median_of_rounds": round(statistics.median(pairs) - 1, 4),
            "off_cpu_us_per_event": cpu_off, "on_cpu_us_per_event": cpu_on,
            "on_vs_off_cpu": round(cpu_on / cpu_off - 1, 4)}  # fmt: skip


def _wait_for_go() -> None:
    """A ``--drain`` child: loaded and built; the parent starts both drains at once."""
    print("ready", flush=True)
    sys.stdin.readline()


def _child(args: argparse.Namespace) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.cadence",
        "--drain",
        args.side,
        "--leads",
        str(args.leads),
        "--days",
        str(args.days),
        "--redis-url",
        args.redis_url,
    ]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def side_by_side(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each round drains the month off and on **at the same time**, in two processes (one
    core each; the Redis server is shared), so the machine's load moves both alike: on a
    shared machine whose speed drifts from one minute to the next, sequential drains
    compare minutes, not code. Returns the runs, off then on for each round."""
    runs: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        kids = [_child(argparse.Namespace(**{**vars(args), "side": side}))
                for side in ("off", "on")]  # fmt: skip
        try:
            runs.extend(_round(kids))
        finally:  # (a child that failed must not leave the other waiting for its "go")
            for kid in kids:
                if kid.poll() is None:
                    kid.kill()
                    kid.wait()
                for pipe in (kid.stdin, kid.stdout):
                    if pipe is not None:
                        pipe.close()
    return runs


def _round(kids: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Both children loaded and built, then started together; their runs."""
    for kid in kids:
        assert kid.stdout is not None
        if kid.stdout.readline().strip() != "ready":
            raise SystemExit("a --drain child failed before its drain")
    for kid in kids:
        assert kid.stdin is not None
        kid.stdin.write("go\n")
        kid.stdin.flush()
    runs = []
    for kid in kids:
        out, _ = kid.communicate(timeout=3_600)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if kid.returncode or not lines:
            raise SystemExit(f"a --drain child ended with {kid.returncode}")
        runs.append(json.loads(lines[-1]))
        print(lines[-1], flush=True)
    return runs


def _paired(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each side-by-side round's on/off ratios (events/s and CPU an event), and medians."""
    offs, ons = runs[::2], runs[1::2]
    rate = [b["events_per_s"] / a["events_per_s"] - 1 for a, b in zip(offs, ons, strict=True)]
    cpu = [b["cpu_us_per_event"] / a["cpu_us_per_event"] - 1
           for a, b in zip(offs, ons, strict=True)]  # fmt: skip
    return {"side_by_side": True,
            "on_vs_off_by_round": [round(x, 4) for x in rate],
            "on_vs_off_median_of_rounds": round(statistics.median(rate), 4),
            "on_vs_off_cpu_by_round": [round(x, 4) for x in cpu],
            "on_vs_off_cpu_median_of_rounds": round(statistics.median(cpu), 4),
            "off_cpu_us_per_event": statistics.median(r["cpu_us_per_event"] for r in offs),
            "on_cpu_us_per_event": statistics.median(r["cpu_us_per_event"] for r in ons),
            }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--leads", type=int, default=10_000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--live", type=int, default=2_000, help="leads of the live-rate phase")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--same", type=Path, help="drain once (on), dump every key here, stop")
    ap.add_argument("--compare", type=Path, nargs=2, help="diff two --same dumps")
    ap.add_argument(
        "--side-by-side",
        action="store_true",
        help="each round drains off and on at the same time, in two processes",
    )
    ap.add_argument("--drain", choices=("off", "on"), help=argparse.SUPPRESS)  # (a child)
    args = ap.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if args.side_by_side:
        return _main_side_by_side(args)
    client: redis.Redis = connect(args.redis_url)
    events = list(generate(SimConfig(seed=18, leads=args.leads, days=args.days, tenant="sim")))
    if args.drain:
        print(json.dumps(drain(client, events, args.drain == "on", False, _wait_for_go)))
        return 0
    if args.same:
        same(client, events, args.same)
        return 0
    runs: list[dict[str, Any]] = []
    checked: dict[str, Any] = {}
    for r in range(args.rounds):
        for on in (False, True) if r % 2 == 0 else (True, False):
            keep = on and not checked
            run = drain(client, events, on, keep)
            runs.append(run)
            if keep:
                checked = check(client, _settings(run["prefix"], True), events)
                _drop(client, run["prefix"])
            print(json.dumps(run), flush=True)
    result = {"leads": args.leads, "days": args.days, "events": len(events), "runs": runs,
              **_throughput(runs), "month": checked,
              "live": live(client, args.live) if args.live else None}  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


def _main_side_by_side(args: argparse.Namespace) -> int:
    runs = side_by_side(args)
    result = {"leads": args.leads, "days": args.days, "runs": runs, **_paired(runs)}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
