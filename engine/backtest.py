"""``leadpulse backtest``: how well the score would have ranked a brokerage's own leads.

What a brokerage runs on its CRM export before trusting the score. The file is
replayed forward in event time through the same dataflow as ``run`` (one stream
partition, so every lead is scored by a model that learned exactly the labels known
before that moment); the engine scores before it learns (progressive validation), so
every labelled example on ``<prefix>:labels`` carries what was served *before* its
label was known. Those examples are read back and judged on a forward-in-time hold-out:

- *test*: examples scored after the ``--split`` quantile (default 0.7) of their scored
  moments; *train* (for the batch model only): examples whose label was known before
  that moment (the outcome's time, else ``at``, before the split);
- scores: the points prior (``pp``), the served score (``pb``) and a batch
  ``StandardScaler`` + ``LogisticRegression`` (scikit-learn) fitted on the train
  examples' model input ``x``;
- figures: ROC AUC, precision in the top 15 %, expected calibration error (10 equal-width
  bins, and the reliability plot), conversion rate and lift by bucket P1-P5;
- if some labels came from horizon expiry (no outcome within ``label_horizon_d``),
  examples scored in the file's last horizon are dropped: their expiry never came, so
  only the ones that converted would be labelled (a false high rate).

Too few examples (fewer than 30 test examples, or one class only) give "too few
examples", never a figure. scikit-learn and matplotlib come with the ``bench`` extra;
without them the batch model or the plot is skipped with one line saying so.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import msgpack
import numpy as np

from engine.errors import LeadpulseError
from engine.evaluation import (
    BUCKETS,
    ECE_BINS,
    auc,
    bucket_of_probability,
    calibration_bins,
    ece,
    lift_by_bucket,
    precision_at_top,
)
from engine.events import OUTCOME_TYPES, POSITIVE_OUTCOMES
from engine.keys import every_pattern
from engine.shards import Entry, dead_letter_streams, label_streams, merge_entries

__all__ = [
    "MIN_EXAMPLES",
    "SCORES",
    "Replayed",
    "add_parser",
    "evaluate",
    "markdown",
    "read_labels",
    "replay_examples",
    "run",
]

MIN_EXAMPLES = 30  # below this many test (or training) examples no figure is given
BENCH_EXTRA = "pip install 'leadpulse[bench]'"
DAY = 86_400.0
POSITIVE = frozenset(POSITIVE_OUTCOMES)
OUTCOMES = frozenset(OUTCOME_TYPES)

#: Score key -> what it is, in table order.
SCORES: dict[str, str] = {
    "prior": "points prior (`pp`)",
    "served": "served score (`pb`)",
    "batch_lr": "batch logistic regression",
}


class BacktestError(LeadpulseError):
    """Input the backtest cannot judge (said in one line)."""


# -- the file and the replay ---------------------------------------------------------------


@dataclass
class Replayed:
    """The labelled examples of one replay, and what the file held."""

    examples: list[dict[str, Any]]
    events: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    outcome_events: int = 0
    last_ts: float | None = None
    horizon_d: float = 30.0
    floors: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def _epoch(ts: Any) -> float | None:
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return float(ts)
    if isinstance(ts, str):
        try:
            when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            return None
        return when.timestamp() if when.tzinfo is not None else None
    return None


def _read(path: str | Path) -> tuple[int, int, int, float | None]:
    """(lines, JSON objects, outcome events, newest ``ts``); one-line errors for bad files."""
    lines = objects = outcomes = 0
    last: float | None = None
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                if not raw.strip():
                    continue
                lines += 1
                try:
                    obj = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(obj, dict):
                    continue
                objects += 1
                outcomes += obj.get("type") in OUTCOMES
                ts = _epoch(obj.get("ts"))
                if ts is not None and (last is None or ts > last):
                    last = ts
    except FileNotFoundError:
        raise BacktestError(f"backtest: {path}: no such file") from None
    except IsADirectoryError:
        raise BacktestError(f"backtest: {path} is a directory, not an events file") from None
    except OSError as exc:
        raise BacktestError(f"backtest: cannot read {path}: {exc.strerror or exc}") from None
    return lines, objects, outcomes, last


def scan(path: str | Path) -> tuple[int, int, float | None]:
    """(lines, outcome events, newest ``ts``) of a file worth replaying, or one line why not.

    Without an outcome event (``appointment_set`` ... ``closed``, ``lost``) no score can
    be checked against what happened: every label would be a horizon expiry.
    """
    lines, objects, outcomes, last = _read(path)
    if lines == 0:
        raise BacktestError(f"backtest: {path} holds no events (empty file)")
    if objects == 0:
        raise BacktestError(
            f"backtest: none of the {lines} lines of {path} is a JSON object (contract v1: "
            "one event per line)"
        )
    if outcomes == 0:
        kinds = ", ".join(sorted(OUTCOMES))
        raise BacktestError(
            f"backtest: no labelled examples: the {lines} events of {path} hold no outcome "
            f"event ({kinds}), so no lead's score can be checked against what happened"
        )
    return lines, outcomes, last


def read_labels(client: Any, *keys: str) -> list[dict[str, Any]]:
    """Every labelled example on the labels streams ``keys`` (one per shard in the
    slot-per-partition key layout, merged by stream id), once per example id."""
    examples: list[dict[str, Any]] = []
    ids: set[str] = set()
    for _sid, fields in merge_entries([_entries(client, key) for key in keys]):
        ex = msgpack.unpackb(fields[b"l"], raw=False)
        if ex["id"] not in ids:
            ids.add(ex["id"])
            examples.append(ex)
    return examples


def _entries(client: Any, key: str) -> list[Entry]:
    """Every entry of a stream, read in pages."""
    out: list[Entry] = []
    position = "-"
    while True:
        rows = cast(list[Any], client.xrange(key, min=position, count=5_000))
        if not rows:
            return out
        out.extend(rows)
        position = "(" + rows[-1][0].decode()  # exclusive: after the last one read


def _rejections(client: Any, keys: list[str]) -> Counter[str]:
    reasons: Counter[str] = Counter()
    for key in keys:
        for _sid, fields in cast(list[Any], client.xrange(key, count=100_000)):
            reason = fields.get(b"reason", b"?").decode(errors="replace")
            reasons[reason.split(":", 1)[0]] += 1
    return reasons


def replay_examples(path: str, config: str | None = None, redis_url: str = "") -> Replayed:
    """Replay ``path`` (fresh embedded server unless ``redis_url``; then a fresh key
    prefix, deleted afterwards) and return its labelled examples."""
    from engine.app import build_parts
    from engine.dataflow import build_flow, run_flow
    from engine.redis_client import connect, resolve_url
    from engine.replay import load_events
    from engine.settings import load_settings
    from engine.streams import Producer

    lines, outcomes, last = scan(path)
    prefix = "bt" + uuid.uuid4().hex[:10]
    # one partition: every event, label and expiry sweep in event-time order
    overrides = {"redis": {"key_prefix": prefix}, "streams": {"partitions": 1}}
    settings = load_settings(config, overrides=overrides)
    url, server = resolve_url(redis_url)
    try:
        client = connect(url, settings.redis.retries, settings.redis.socket_timeout_s)
        try:
            began = time.perf_counter()
            parts = build_parts(settings, client)
            producer = Producer(client, parts.names, maxlen=max(settings.streams.maxlen, 10**9))
            load_events(client, producer, path)
            run_flow(build_flow(parts, bounded=True))
            return Replayed(
                examples=read_labels(client, *label_streams(parts.names)),
                events=lines,
                rejected=_rejections(client, dead_letter_streams(parts.names)),
                outcome_events=outcomes,
                last_ts=last,
                horizon_d=float(settings.scoring.label_horizon_d),
                floors={k: float(getattr(settings.buckets, k)) for k in ("p1", "p2", "p3")},
                seconds=time.perf_counter() - began,
            )
        finally:
            if server is None:
                keys = list(client.scan_iter(match=every_pattern(prefix), count=1_000))
                for i in range(0, len(keys), 500):
                    client.delete(*keys[i : i + 500])
            client.close()
    finally:
        if server is not None:
            server.stop()


def why_no_examples(got: Replayed) -> str:
    """One line: why the replay labelled nothing although the file has outcome events."""
    if got.rejected and sum(got.rejected.values()) >= got.events:
        top = ", ".join(f"{r} {n}" for r, n in got.rejected.most_common(3))
        return f"backtest: all {got.events} events were rejected ({top}); see `Event contract v1`"
    return (
        f"backtest: no labelled examples from {got.outcome_events} outcome events: their "
        "leads had no scored moment before the outcome (an outcome must follow the lead's "
        "other events, in the same tenant)"
    )


# -- the evaluation (pure) ------------------------------------------------------------------


def _kind(ex: Mapping[str, Any]) -> str:
    if ex["y"]:
        return "positive"
    return "lost" if ex.get("outcome") == "lost" else "expired"


@dataclass
class Split:
    test: list[dict[str, Any]]
    train: list[dict[str, Any]]
    split_ts: float
    censored: int
    kinds: dict[str, int]


def split(
    examples: Sequence[dict[str, Any]],
    fraction: float,
    horizon_d: float,
    last_ts: float | None,
) -> Split:
    """Forward-in-time hold-out; censored examples dropped when expiry labels exist."""
    kinds = dict(sorted(Counter(_kind(ex) for ex in examples).items()))
    usable = list(examples)
    if kinds.get("expired") and last_ts is not None:
        until = last_ts - horizon_d * DAY
        usable = [ex for ex in examples if ex["ts"] <= until]
    usable.sort(key=lambda e: (e["ts"], str(e.get("lead")), str(e["id"])))
    if not usable:
        return Split([], [], last_ts or 0.0, len(examples), kinds)
    at = float(np.quantile([float(ex["ts"]) for ex in usable], fraction))
    return Split(
        test=[ex for ex in usable if ex["ts"] > at],
        # known by the split: an outcome when it happened, an expiry when the horizon ended
        train=[ex for ex in usable if (ex.get("outcome_at") or ex["at"]) < at],
        split_ts=at,
        censored=len(examples) - len(usable),
        kinds=kinds,
    )


def too_few(y: Sequence[bool], what: str) -> str | None:
    """Why ``y`` is too small to judge on, or None."""
    pos = sum(bool(v) for v in y)
    if len(y) < MIN_EXAMPLES:
        return f"too few examples: {len(y)} {what} examples (need at least {MIN_EXAMPLES})"
    if pos in (0, len(y)):
        one = "positive" if pos else "negative"
        return f"too few examples: all {len(y)} {what} examples are {one} (need both classes)"
    return None


def _matrix(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> np.ndarray:
    out = np.zeros((len(rows), len(columns)), dtype=np.float64)
    where = {c: j for j, c in enumerate(columns)}
    for i, x in enumerate(rows):
        for k, v in x.items():
            j = where.get(k)
            if j is not None and isinstance(v, int | float):
                out[i, j] = float(v)
    return out


def batch_lr(
    train: Sequence[Mapping[str, Any]], test: Sequence[Mapping[str, Any]]
) -> tuple[np.ndarray | None, str | None]:
    """The batch model's test probabilities, or None and why not."""
    why = too_few([bool(ex["y"]) for ex in train], "training")
    if why:
        return None, f"batch logistic regression not trained: {why}"
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        return None, f"batch logistic regression skipped: scikit-learn missing ({BENCH_EXTRA})"
    columns = sorted({k for ex in train for k in ex["x"]})
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5_000))
    model.fit(_matrix([ex["x"] for ex in train], columns), [bool(ex["y"]) for ex in train])
    proba = model.predict_proba(_matrix([ex["x"] for ex in test], columns))[:, 1]
    return np.asarray(proba, dtype=np.float64), None


def _score_row(y: np.ndarray, p: np.ndarray, buckets: Sequence[str]) -> dict[str, Any]:
    return {
        "n": int(len(y)),
        "positives": int(y.sum()),
        "mean_p": float(p.mean()),
        "auc": auc(y, p),
        "precision_top15": precision_at_top(y, p),
        "ece": ece(y, p),
        "calibration": calibration_bins(y, p, ECE_BINS),
        "buckets": lift_by_bucket(y, buckets),
    }


def _probability(ex: Mapping[str, Any], key: str) -> float:
    value = ex.get(key)
    if value is None and key == "pp":
        value = ex.get("pr")
    return float(value) if value is not None else float("nan")


def evaluate(
    examples: Sequence[dict[str, Any]],
    fraction: float = 0.7,
    horizon_d: float = 30.0,
    floors: Mapping[str, float] | None = None,
    last_ts: float | None = None,
) -> dict[str, Any]:
    """Every figure of the backtest, as data (see the module docstring)."""
    floors = dict(floors or {"p1": 90.0, "p2": 70.0, "p3": 50.0})
    parts = split(examples, fraction, horizon_d, last_ts)
    test = parts.test
    y = np.array([bool(ex["y"]) for ex in test], dtype=bool)
    out: dict[str, Any] = {
        "examples": len(examples),
        "positives": sum(bool(ex["y"]) for ex in examples),
        "by_kind": parts.kinds,
        "censored_dropped": parts.censored,
        "split": {
            "fraction": fraction,
            "at": _iso(parts.split_ts),
            "test": len(test),
            "test_positives": int(y.sum()),
            "test_leads": len({(ex.get("tenant"), ex.get("lead")) for ex in test}),
            "train": len(parts.train),
            "train_positives": sum(bool(ex["y"]) for ex in parts.train),
        },
        "scores": {},
        "notes": [],
    }
    why = too_few(list(y), "test")
    if why and parts.censored == len(examples):
        why += f"; all {len(examples)} were scored in the file's last {horizon_d:g} days (censored)"
    if why:
        out["too_few"] = why
        return out
    probs: dict[str, np.ndarray | None] = {
        "prior": np.array([_probability(ex, "pp") for ex in test]),
        "served": np.array([_probability(ex, "pb") for ex in test]),
    }
    probs["batch_lr"], note = batch_lr(parts.train, test)
    if note:
        out["notes"].append(note)
    if np.isnan(cast(np.ndarray, probs["prior"])).any():
        probs["prior"] = None
        out["notes"].append("points prior: some examples carry no prior (`pp`/`pr`)")
    for name, p in probs.items():
        if p is None:
            out["scores"][name] = None
            continue
        if name == "served":
            buckets = [
                str(ex.get("bucket") or bucket_of_probability(ex["pb"], floors)) for ex in test
            ]
        else:
            buckets = [bucket_of_probability(v, floors) for v in p]
        out["scores"][name] = _score_row(y, p, buckets)
    return out


# -- report ------------------------------------------------------------------------------------


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _f(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _lines_buckets(scores: Mapping[str, Any]) -> list[str]:
    present = [k for k in SCORES if scores.get(k)]
    head = " | ".join(f"{SCORES[k]}: n, rate, lift" for k in present)
    lines = ["| bucket | " + head + " |", "|---|" + "---:|" * len(present)]
    for i, bucket in enumerate(BUCKETS):
        cells = []
        for k in present:
            row = scores[k]["buckets"][i]
            cells.append(f"{row['n']}, {_f(row['rate'])}, {_f(row['lift'], 2)}")
        lines.append(f"| {bucket} | " + " | ".join(cells) + " |")
    return lines


def _lines_calibration(scores: Mapping[str, Any]) -> list[str]:
    """Predicted against observed in each of the ECE's bins (where a score has examples)."""
    present = [k for k in SCORES if scores.get(k)]
    head = " | ".join(f"{SCORES[k]}: mean p, rate (n)" for k in present)
    lines = ["| predicted | " + head + " |", "|---|" + "---:|" * len(present)]
    for b in range(ECE_BINS):
        lo = b / ECE_BINS
        cells = []
        for k in present:
            got = [c for c in scores[k]["calibration"] if abs(c["lo"] - lo) < 1e-9]
            cells.append(
                f"{got[0]['mean_p']:.3f}, {got[0]['rate']:.3f} ({got[0]['n']})" if got else "–"
            )
        if any(c != "–" for c in cells):
            lines.append(f"| {lo:.1f}-{lo + 1 / ECE_BINS:.1f} | " + " | ".join(cells) + " |")
    return lines


def markdown(result: Mapping[str, Any]) -> str:
    """The report: what was replayed, the hold-out, the table of figures, the buckets."""
    s = result["split"]
    kinds = ", ".join(f"{k} {v}" for k, v in result["by_kind"].items())
    lines = [
        f"# Backtest of {result.get('file', 'the events file')}",
        "",
        f"{result.get('events', '?')} events ({result.get('rejected', 0)} rejected), "
        f"{result['examples']} labelled examples ({kinds}); "
        f"{result['censored_dropped']} scored in the last label horizon dropped (censored).",
        f"Forward hold-out at the {s['fraction']:.2f} quantile of scored moments "
        f"({s['at']}): test {s['test']} examples of {s['test_leads']} leads "
        f"({s['test_positives']} converted); batch training {s['train']} examples "
        f"({s['train_positives']} converted) whose label was known before then.",
        "",
    ]
    if result.get("too_few"):
        return "\n".join(lines + [result["too_few"]] + _notes(result))
    lines += [
        "| score | n | converted | AUC | precision top 15 % | ECE (10 bins) | mean p |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, what in SCORES.items():
        row = result["scores"].get(key)
        if not row:
            lines.append(f"| {what} | – | – | – | – | – | – |")
            continue
        lines.append(
            f"| {what} | {row['n']} | {row['positives']} | {_f(row['auc'])} | "
            f"{_f(row['precision_top15'])} | {_f(row['ece'])} | {_f(row['mean_p'])} |"
        )
    lines += ["", "Conversion rate and lift (rate / overall rate) by bucket, test set:", ""]
    lines += _lines_buckets(result["scores"])
    lines += ["", "Calibration, test set (the ECE's 10 equal-width bins):", ""]
    lines += _lines_calibration(result["scores"])
    return "\n".join(lines + _notes(result))


def _notes(result: Mapping[str, Any]) -> list[str]:
    notes = result.get("notes") or []
    return [""] + [f"- {n}" for n in notes] + [""] if notes else [""]


def plot(result: Mapping[str, Any], path: Path) -> str | None:
    """Reliability (the ECE's bins) and lift by bucket; None, or why there is no plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"no plot: matplotlib missing ({BENCH_EXTRA})"
    present = [k for k in SCORES if result["scores"].get(k)]
    fig, (rel, lift) = plt.subplots(1, 2, figsize=(11.0, 4.8))
    for i, key in enumerate(present):
        bins = result["scores"][key]["calibration"]
        xs, ys = [b["mean_p"] for b in bins], [b["rate"] for b in bins]
        sizes = [12 + 120 * b["n"] / result["split"]["test"] for b in bins]
        (line,) = rel.plot(xs, ys, "-", linewidth=1.2, label=SCORES[key].replace("`", ""))
        rel.scatter(xs, ys, s=sizes, alpha=0.7, color=line.get_color())
        rows = result["scores"][key]["buckets"]
        bars = lift.bar(
            np.arange(len(BUCKETS)) + (i - (len(present) - 1) / 2) * 0.25,
            [r["lift"] or 0.0 for r in rows],
            width=0.25,
            label=SCORES[key].replace("`", ""),
        )
        lift.bar_label(bars, [f"n={r['n']}" if r["n"] else "" for r in rows], fontsize=6)
    rel.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    rel.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability (10 bins)",
            ylabel="observed conversion rate", title="Reliability, test set")  # fmt: skip
    lift.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    lift.set_xticks(range(len(BUCKETS)), list(BUCKETS))
    lift.set(ylabel="lift (bucket rate / overall rate)", title="Lift by bucket, test set")
    for ax in (rel, lift):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# -- the command ------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "backtest",
        help="replay a CRM export forward in time and judge the score on its outcomes",
        description="Replay EVENTS.jsonl (contract v1, e.g. a CRM export with its outcomes) "
        "forward in event time through the same dataflow as `run`, on a fresh embedded "
        "server unless --redis-url is given, and judge the points prior, the served score "
        "and a batch logistic regression on a forward hold-out: AUC, precision in the top "
        "15 %, calibration (ECE, reliability plot), conversion rate and lift by bucket.",
    )
    p.add_argument("events", help="input JSONL file (contract v1), e.g. a CRM export")
    p.add_argument("--out", default="backtest", help="output directory (default ./backtest)")
    p.add_argument(
        "--split",
        type=float,
        default=0.7,
        metavar="FRACTION",
        help="test on examples scored after this quantile of event time (default 0.7)",
    )
    p.add_argument("--config", help="TOML file overriding config/default.toml")
    p.add_argument(
        "--redis-url", default="", help="use this server (fresh key prefix, deleted after)"
    )
    p.add_argument(
        "--refit-prior",
        action="store_true",
        help="also write prior.toml: the points prior refitted on this file's labels",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def _refit(examples: list[dict[str, Any]], config: str | None, path: Path) -> str:
    """Write the points prior refitted on every labelled example; say what happened."""
    from engine.prior_fit import refit_prior, to_toml
    from engine.settings import load_settings

    fit = refit_prior(examples, load_settings(config))
    if fit is None:
        return "prior not refitted: fewer than 50 labelled examples or a single class"
    path.write_text(to_toml(fit))
    return f"refitted prior ({fit.examples} examples): {path} (review it, then add it to --config)"


def run(args: argparse.Namespace) -> int:
    if not 0.0 < args.split < 1.0:
        raise BacktestError(f"backtest: --split must be between 0 and 1, got {args.split}")
    if not args.verbose:  # drift warnings are for a live run; a backtest reports quality
        logging.getLogger("engine.learning").setLevel(logging.ERROR)
    got = replay_examples(args.events, args.config, args.redis_url)
    if not got.examples:
        raise BacktestError(why_no_examples(got))
    result = evaluate(got.examples, args.split, got.horizon_d, got.floors, got.last_ts)
    result.update(
        file=Path(args.events).name,
        events=got.events,
        rejected=sum(got.rejected.values()),
        replay_seconds=round(got.seconds, 1),
    )
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if result["scores"]:
            why = plot(result, out / "backtest_reliability.png")
            result["notes"].append(why or "plot: backtest_reliability.png")
        (out / "backtest.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "backtest.md").write_text(markdown(result))
        if getattr(args, "refit_prior", False):
            print(_refit(got.examples, args.config, out / "prior.toml"), file=sys.stderr)
    except OSError as exc:
        raise BacktestError(f"backtest: cannot write to {out}: {exc.strerror or exc}") from None
    print(markdown(result))
    print(f"written: {out / 'backtest.md'}, {out / 'backtest.json'}", file=sys.stderr)
    return 0
