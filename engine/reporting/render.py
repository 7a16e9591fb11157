"""A :class:`~engine.reporting.figures.Report` as markdown, and its PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.reporting.figures import MIN_N, FunnelRow, Ratio, Report, SpeedRow

__all__ = ["PLOTS_EXTRA", "duration", "markdown", "plots"]

PLOTS_EXTRA = "plots skipped: matplotlib is missing (pip install 'leadpulse[bench]')"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5_400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _pct(r: Ratio) -> str:
    if r.value is None:
        return f"{r.num}/{r.den} (too few)"
    return f"{100 * r.value:.1f} % ({r.num}/{r.den})"


def _speed_table(rows: list[SpeedRow]) -> list[str]:
    out = [
        "| | alerts (clocks) | responses | median | p90 | within SLA |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        over = "—" if r.note else "> 24 h"  # enough responses: None means the open last bin
        median = duration(r.median_s) if r.median_s is not None else over
        p90 = duration(r.p90_s) if r.p90_s is not None else over
        clocks = "" if r.clocks is None else str(r.clocks)
        out.append(
            f"| {r.name} | {clocks} | {r.responses} | {median} | {p90} | {_pct(r.within_sla)} |"
        )
    return out


def _funnel_table(rows: list[FunnelRow], lift: bool = True) -> list[str]:
    head = "| | leads | contact rate | appointment rate | conversion |" + (
        " lift |" if lift else ""
    )
    out = [head, "|---|---|---|---|---|" + ("---|" if lift else "")]
    for r in rows:
        cells = [r.name, str(r.leads), _pct(r.contacted), _pct(r.appointments), _pct(r.converted)]
        if lift:
            cells.append("—" if r.lift is None else f"{r.lift:.2f}×")
        out.append("| " + " | ".join(cells) + " |")
    return out


def markdown(r: Report) -> str:
    """The report as markdown (tables; "too few" where a figure would mislead)."""
    who = f", agent {r.agent}" if r.agent else ""
    lines = [f"# Weekly report: tenant {r.tenant}{who}, {r.since} to {r.until}", ""]
    lines += [f"_{n}_" for n in r.notes] + ([""] if r.notes else [])
    lines += [
        "Leads are counted on the day leadpulse first saw them, with their outcomes so far; "
        "speed to lead is the first agent response (contact or acknowledgement) after an "
        "alert, timed from the alert's event, on the day the alert came. Percentiles are "
        "read from fixed histogram bins (30 s ... 24 h).",
        "",
        "## Speed to lead",
        "",
    ]
    for dim in ("all", "trigger", "source", "agent"):
        if r.speed.get(dim):
            lines += [f"By {dim}:" if dim != "all" else "All leads:", ""]
            lines += _speed_table(r.speed[dim]) + [""]
    lines += _funnels(r) + _agents(r)
    if r.optouts:
        lines += ["", "## Opt-outs", "", "| channel | leads |", "|---|---|"]
        lines += [f"| {ch} | {n} |" for ch, n in r.optouts.get("channel", {}).items()]
    lines += _cadence(r)
    if not r.agent:
        lines += ["", "## The model's live quality (labels of the period)", ""]
        q = r.quality
        if q.auc is None or q.log_loss is None or q.ece is None:
            lines.append(f"_{q.note}_")
        else:
            lines.append(
                f"{q.labels} labels ({q.positives} positive): AUC {q.auc:.3f}, "
                f"log loss {q.log_loss:.3f}, ECE {q.ece:.3f}"
            )
    return "\n".join(lines) + "\n"


def _cadence(r: Report) -> list[str]:
    """Follow-up cadences: plan completion, replies and opt-outs by step."""
    if not r.cadence_plans and not r.cadence_steps and not r.send_time:
        return []
    lines = ["", "## Follow-up cadences", "",
             "Runs of each plan in the period (completion = completed / runs that finished):",
             "", "| plan | entered | completed | ended otherwise | completion |",
             "|---|---|---|---|---|"]  # fmt: skip
    for p in r.cadence_plans:
        lines.append(f"| {p.plan} | {p.entered} | {p.completed} | {p.ended} "
                     f"| {_pct(p.completion)} |")  # fmt: skip
    lines += [
        "",
        "By step (`plan.index.channel`; a reply counts once, for the step before it; an "
        "opt-out for the step before it, `none` if no step was sent yet):",
        "",
        "| step | sent | replies | reply rate | opt-outs |",
        "|---|---|---|---|---|",
    ]
    for st in r.cadence_steps:
        lines.append(f"| {st.step} | {st.sent} | {st.replies} | {_pct(st.reply_rate)} "
                     f"| {st.optouts} |")  # fmt: skip
    if r.send_time:
        lines += [
            "",
            "Send time that learns (automatic messages; `holdout`: leads kept on the plan's "
            "times for comparison; `planned`: too few opens, clicks or replies yet):",
            "",
            "| timing | sent | replies | reply rate |",
            "|---|---|---|---|",
        ]
        lines += [f"| {t.timing} | {t.sent} | {t.replies} | {_pct(t.reply_rate)} |"
                  for t in r.send_time]  # fmt: skip
    return lines


def _funnels(r: Report) -> list[str]:
    lines: list[str] = []
    if not r.agent:
        lines += ["## Contact, appointment and conversion", "", *_funnel_table([r.total]), ""]
        lines += [
            "By bucket at first alert (`none`: never alerted; lift = rate / all leads' rate):",
            "",
        ]
        lines += _funnel_table(r.funnel.get("bucket", [])) + ["", "By source:", ""]
        lines += _funnel_table(r.funnel.get("source", [])) + [""]
    if r.funnel.get("agent"):
        lines += ["By agent (leads assigned to the agent):", ""]
        lines += _funnel_table(r.funnel["agent"], False) + [""]
    return lines


def _agents(r: Report) -> list[str]:
    lines = ["## SLA misses and redistributions by agent", ""]
    lines += [
        "| agent | responses | within SLA | late | SLA misses (escalated) | redistributed to "
        "| SLA misses (delivery clock) |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in r.sla_by_agent:
        cells = (a.agent, a.responses, a.within_sla, a.late, a.sla_missed, a.redistributed_to,
                 a.missed_on_clock)  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def plots(r: Report, out: Path) -> list[Path] | str:
    """PNG plots in ``out``; the one-line reason instead when matplotlib is missing.

    Drawn with ``matplotlib.figure.Figure`` and fixed margins (no pyplot, no
    ``tight_layout``): half the time, which is most of ``leadpulse report``'s."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return PLOTS_EXTRA
    written: list[Path] = []
    drawings = (
        ("speed_to_lead.png", _plot_speed, 0.22),
        ("conversion_by_bucket.png", _plot_buckets, 0.08),
        ("funnel_by_source.png", _plot_sources, 0.08),
        ("sla_by_agent.png", _plot_agents, 0.08),
    )
    for name, draw, left in drawings:
        fig = Figure(figsize=(8, 4.2))
        if draw(r, fig.add_subplot()):
            fig.subplots_adjust(left=left, right=0.98, bottom=0.2, top=0.9)
            fig.savefig(out / name, dpi=100)
            written.append(out / name)
    return written


def _plot_speed(r: Report, ax: Any) -> bool:
    """Share of alerts answered within SLA by trigger and source, median on each bar."""
    rows = [
        s for s in r.speed.get("trigger", []) + r.speed.get("source", [])
        if s.within_sla.value is not None
    ]  # fmt: skip
    if not rows:
        return False
    names = [s.name for s in rows]
    shares = [100 * (s.within_sla.value or 0) for s in rows]
    ax.barh(names, shares, color=["#b35c00" if s in r.speed.get("trigger", []) else "#35588f"
                                  for s in rows])  # fmt: skip
    for i, s in enumerate(rows):
        median = duration(s.median_s) if s.median_s is not None else "> 24 h"
        ax.text(shares[i] + 1, i, f"median {median}" if not s.note else "", va="center")
    ax.set_xlim(0, 115)
    ax.invert_yaxis()
    ax.set_xlabel("% of alerts answered within the SLA (trigger, then source)")
    ax.set_title(f"Speed to lead, {r.since} to {r.until}")
    return True


def _rate_bars(ax: Any, rows: list[FunnelRow], title: str) -> bool:
    rows = [x for x in rows if x.converted.value is not None]
    if not rows:
        return False
    xs = range(len(rows))
    for k, (label, get) in enumerate(
        (
            ("contact", lambda x: x.contacted),
            ("appointment", lambda x: x.appointments),
            ("conversion", lambda x: x.converted),
        )
    ):
        vals = [100 * (get(x).value or 0) for x in rows]
        ax.bar([i + (k - 1) * 0.27 for i in xs], vals, width=0.27, label=label)
    ax.set_xticks(list(xs), [x.name for x in rows], rotation=20)
    ax.set_ylabel("% of leads")
    ax.set_title(f"{title} (groups under {MIN_N} leads left out)")
    ax.legend()
    return True


def _plot_buckets(r: Report, ax: Any) -> bool:
    return _rate_bars(ax, r.funnel.get("bucket", []), "Rates by bucket at first alert")


def _plot_sources(r: Report, ax: Any) -> bool:
    return _rate_bars(ax, r.funnel.get("source", []), "Rates by lead source")


def _plot_agents(r: Report, ax: Any) -> bool:
    rows = r.sla_by_agent
    if not rows:
        return False
    names = [a.agent for a in rows]
    ax.bar(names, [a.within_sla for a in rows], label="responses within SLA")
    ax.bar(names, [a.late for a in rows], bottom=[a.within_sla for a in rows], label="late")
    ax.plot(names, [a.sla_missed for a in rows], "kx", label="SLA misses (escalated)")
    ax.set_title("SLA by agent")
    ax.tick_params(axis="x", rotation=30)
    ax.legend()
    return True
