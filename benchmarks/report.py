"""Turn a benchmark result (the JSON ``leadpulse bench`` writes) into markdown and PNGs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["markdown", "plots"]


def _f(x: Any, digits: int = 0) -> str:
    if x is None:
        return "—"
    if isinstance(x, float | int):
        return f"{x:,.{digits}f}"
    return str(x)


def markdown(result: dict[str, Any]) -> str:
    """The summary tables, in the order a reader asks: how fast, how slow, how big."""
    m = result["machine"]
    lines = [
        f"# leadpulse bench ({result['mode']})",
        "",
        f"{m['nproc']} cores, {m['cpu_model']}, Python {m['python']}, Redis {m['redis_version']}"
        f" at {m['redis_url']}; load average at start {m['loadavg_at_start'][0]:.2f}; "
        f"{m['started_at']}, code {m.get('commit', '?')}. All figures from this one run.",
        "",
    ]
    lines += _throughput(result.get("throughput"), result)
    lines += _baselines(result.get("baselines"), result)
    lines += _peers(result.get("peers"))
    lines += _latency(result.get("latency"))
    lines += _memory(result.get("memory"))
    lines += _profile(result.get("profile"))
    lines += _targets(result.get("targets"))
    lines += _quality(result.get("quality"))
    return "\n".join(lines)


def _throughput(tp: dict[str, Any] | None, result: dict[str, Any]) -> list[str]:
    """Throughput of each configuration, and the ones that failed."""
    if not tp:
        return []
    lines: list[str] = []
    w = result["workload"]
    lines += [
        f"## Throughput (full pipeline, backlog of {w['throughput_events']:,} events, "
        f"alerts on; median of {tp.get('rounds', 1)} interleaved rounds)",
        "",
        "| configuration | events/s | drain s | vs 1 worker | load avg after |",
        "|---|---:|---:|---:|---:|",
    ]
    one = tp["configs"].get("1 worker", {}).get("events_per_s")
    for name, row in tp["configs"].items():
        ratio = row["events_per_s"] / one if one else None
        lines.append(
            f"| {name} | {_f(row['events_per_s'])} | {_f(row['seconds'], 2)} "
            f"| {_f(ratio, 2)}× | {_f(row.get('loadavg_1m_after'), 2)} |"
        )
    for name, err in tp.get("failed", {}).items():
        lines.append(f"| {name} | **failed**: {err} | | | |")
    lines.append("")
    return lines


def _baselines(base: dict[str, Any] | None, result: dict[str, Any]) -> list[str]:
    """The engine against the floor and the naive peer (per-round ratios)."""
    if not base:
        return []
    lines: list[str] = []
    r = result.get("ratios", {})
    lines += [
        "## Engine vs floor and naive peer (one process, one thread)",
        "",
        "Ratios: median over rounds of per-round ratios, each side measured back to back.",
        "",
        "| | events/s | engine / this |",
        "|---|---:|---:|",
        f"| engine, 1 worker (full pipeline) | {_f(r.get('engine_events_per_s'))} | 1.00× |",
        f"| floor: pipelined Lua + predict, no dataflow | "
        f"{_f(base['floor']['events_per_s'])} | {_f(r.get('engine_over_floor'), 2)}× |",
        f"| naive peer: unpipelined, predict+learn per event | "
        f"{_f(base['naive']['events_per_s'])} | {_f(r.get('engine_over_naive'), 2)}× |",
        "",
    ]
    return lines


def _latency(lat: dict[str, Any] | None) -> list[str]:
    """Event -> alert latency at each load level."""
    if not lat:
        return []
    lines: list[str] = []
    lines += [
        f"## Event → alert latency, open loop, one `leadpulse run` "
        f"(load = share of {_f(lat['max_events_per_s'])} events/s, the 1-worker maximum)",
        "",
        "| load | offered/s | sent/s | alerts | p50 ms | p95 ms | p99 ms | max ms "
        "| engine histogram p50 / p99 ms | lag at end of send | batches > 100 ms "
        "| load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in lat["levels"]:
        if "error" in row:
            lines.append(f"| {row['load']:.0%} | {_f(row['offered_per_s'])} | **failed**: "
                         f"{row['error']} |||||||||| ")  # fmt: skip
            continue
        q, h = row["latency_ms"], row["engine_histogram"]
        lines.append(
            f"| {row['load']:.0%} | {_f(row['offered_per_s'])} | {_f(row['sent_per_s'])} "
            f"| {row['alerts']} | {_f(q['p50'])} | {_f(q['p95'])} | {_f(q['p99'])} "
            f"| {_f(q['max'])} | {_f(h['p50_ms'], 1)} / {_f(h['p99_ms'], 1)} "
            f"| {row['lag_events_at_end_of_send']} "
            f"| {_f(row.get('engine_batches', {}).get('over_100ms'))} "
            f"| {_f(row.get('loadavg_1m_after'), 2)} |"
        )
    lines.append("")
    return lines


def _memory(mem: dict[str, Any] | None) -> list[str]:
    """Redis bytes per lead at each point."""
    if not mem:
        return []
    lines: list[str] = []
    lines += [
        f"## Redis memory per lead ({mem.get('server', '')})",
        "",
        "| leads | events a lead | used_memory delta | bytes per lead | by key part "
        "(MEMORY USAGE of the sample, B a lead) |",
        "|---:|---:|---:|---:|---|",
    ]
    for p in mem["points"]:
        s = p["sample"]
        split = ", ".join(f"`{k}` {v:,.0f}" for k, v in s["bytes_per_lead_by_part"].items())
        lines.append(
            f"| {p['leads']:,} | {s['events_per_lead']} | "
            f"{_f(p.get('used_memory_delta'))} | "
            f"{_f(p.get('bytes_per_lead')) if 'skipped' not in p else p['skipped']} "
            f"| {split} |"
        )
    lines.append("")
    return lines


def _profile(prof: dict[str, Any] | None) -> list[str]:
    """Where the time goes: µs an event by stage, and the server side."""
    if not prof:
        return []
    lines: list[str] = []
    sv = prof["server"]
    lines += [
        f"## Where the time goes ({prof['events']:,}-event replay through the processor, "
        f"batches of {prof['batch']}, {_f(prof['us_per_event'], 1)} µs an event)",
        "",
        "| stage | µs / event |",
        "|---|---:|",
    ]
    for stage, us in prof["stages_us_per_event"].items():
        lines.append(f"| {stage} | {_f(us, 1)} |")
    lines += [
        "",
        f"Server side ({sv['kind']}): {_f(sv['us_per_evalsha'], 1)} µs per EVALSHA "
        f"(scripts; none per event since issue 12), {_f(sv['exec_us_per_event'], 1)} µs "
        "per event in EXEC "
        f"(commit); {_f(sv['evalsha_plus_exec_us_per_event'], 1)} µs of server time an "
        "event in all.",
        "",
    ]
    return lines


def _targets(tg: dict[str, Any] | None) -> list[str]:
    """Each target, its measured figure and whether it is met."""
    if not tg:
        return []
    lines: list[str] = []
    lines += ["## Targets", "", "| target | measured | met |", "|---|---:|:---:|"]
    for name, row in tg.items():
        met = "—" if row["met"] is None else ("yes" if row["met"] else "**no**")
        lines.append(f"| {name} | {_f(row['measured'], 2)} | {met} |")
    lines.append("")
    return lines


def _quality(q: dict[str, Any] | None) -> list[str]:
    """The model-quality figures, when the quality step ran."""
    if not q:
        return []
    lines: list[str] = []
    lines += ["## Model quality (benchmarks/quality*.py)", ""]
    for name, body in q.items():
        targets = body.get("targets") if isinstance(body, dict) else None
        if targets:
            lines += [f"`{name}`:", "", "| target | measured | met |", "|---|---:|:---:|"]
            for tname, t in targets.items():
                met = "—" if t.get("met") is None else ("yes" if t["met"] else "**no**")
                lines.append(f"| {tname} {t.get('target', '')} | {_f(t.get('measured'), 3)} "
                             f"| {met} |")  # fmt: skip
            lines.append("")
        else:
            lines += [f"`{name}`: {json.dumps(body)[:800]}", ""]
    return lines


def _peers(peers: dict[str, Any] | None) -> list[str]:
    """The engine against the in-memory Bytewax peer and the naive peer, one file."""
    if not peers:
        return []
    if "error" in peers:
        return ["## Engine vs in-memory and naive peers", "", f"**failed**: {peers['error']}", ""]
    f = peers["file"]
    n = len(peers["rounds"])
    lines = [
        f"## Engine vs in-memory Bytewax peer and naive peer (one file: {f['events']:,} "
        f"events, {f['leads']:,} leads; median of {n} round(s), each side back to back)",
        "",
        "| | events/s | alerts | engine / this | how |",
        "|---|---:|---:|---:|---|",
    ]
    ratio = {"engine": None, "inmemory": "engine_over_inmemory", "naive": "engine_over_naive"}
    for side, key in ratio.items():
        row = peers[side]
        r = f"{_f(peers[key], 3)}×" if key else "1.00×"
        lines.append(
            f"| {row['name']} | {_f(row['events_per_s'])} | {_f(row['alerts'])} | {r} "
            f"| {row['how']} |"
        )
    rounds = " / ".join(
        f"{r['engine_over_inmemory']:.3f}× & {r['engine_over_naive']:.2f}× "
        f"(load {r['loadavg_1m_after']:.2f})"
        for r in peers["rounds"]
    )
    trips = peers["naive"]["detail"].get("redis_round_trips_per_event")
    lines += [
        "",
        f"Per round, engine / in-memory & engine / naive: {rounds}. The naive peer made "
        f"{_f(trips, 2)} Redis round trips an event.",
        "",
    ]
    return lines


def plots(result: dict[str, Any], out: Path) -> list[str]:
    """latency.png (percentiles vs offered load) and throughput.png; returns file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []
    lat = result.get("latency")
    ok = [row for row in lat["levels"] if "error" not in row] if lat else []
    if ok:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        xs = [row["offered_per_s"] for row in ok]
        for key, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-"), ("max", "x--")):
            ys = [row["latency_ms"][key] for row in ok]
            if all(y is not None for y in ys):
                ax.plot(xs, [max(0.5, y) for y in ys], style, label=key)
        ax.set_yscale("log")
        ax.set_xlabel("offered load, events/s (open loop)")
        ax.set_ylabel("event → alert latency, ms")
        ax.set_title("leadpulse: latency vs offered load (1 process)")
        for row in ok:
            ax.annotate(f"{row['load']:.0%}", (row["offered_per_s"], 0.6), ha="center")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=110)
        plt.close(fig)
        written.append("latency.png")
    tp = result.get("throughput")
    if tp and tp["configs"]:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        names = list(tp["configs"])
        values = [tp["configs"][n]["events_per_s"] for n in names]
        base = result.get("baselines") or {}
        for label, key in (("floor", "floor"), ("naive peer", "naive")):
            if key in base:
                names.append(label)
                values.append(base[key]["events_per_s"])
        colors = ["#3b6ea5"] * len(tp["configs"]) + ["#999999", "#c8553d"][: len(names)]
        failed = list(tp.get("failed", {}))
        names += failed
        values += [0.0] * len(failed)
        colors = colors[: len(names) - len(failed)] + ["#dddddd"] * len(failed)
        bars = ax.bar(names, values, color=colors)
        for bar, v in zip(bars, values, strict=True):
            label = f"{v:,.0f}" if v else "crashed"
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, v), ha="center",
                        va="bottom")  # fmt: skip
        ax.set_ylabel("events/s")
        ax.set_title("leadpulse: sustained throughput (full pipeline) vs workers")
        ax.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "throughput.png", dpi=110)
        plt.close(fig)
        written.append("throughput.png")
    return written
