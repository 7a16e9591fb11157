"""``leadpulse model``: see the model that scores, and roll it back.

- ``leadpulse model status [--json]``: the serving version, every published version with
  its labels and quality at publish time, and the trainer's live quality.
- ``leadpulse model rollback [VERSION]``: pin a published version (default: the one
  before the newest); every scorer switches to it within ``scoring.model_check_s``.
- ``leadpulse model unpin``: back to the newest version.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from engine.errors import LeadpulseError
from engine.redis_client import connect, redis_for
from engine.settings import load_settings
from engine.up import add_data_dir

if TYPE_CHECKING:  # river costs ~2 s to import: only `model` itself pays it, not every --help
    from engine.model_store import ModelStore

__all__ = ["add_parser", "run", "status"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "model",
        help="show the model's version and live quality; roll back",
        description="Inspect and pin the online model published in Redis (REDIS_URL, else "
        "the data dir's embedded server).",
    )
    p.add_argument("--config", help="TOML file overriding config/default.toml")
    p.add_argument("--redis-url", default="", help="overrides REDIS_URL")
    add_data_dir(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    st = actions.add_parser("status", help="serving version, versions, live quality")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    rb = actions.add_parser("rollback", help="pin a published version")
    rb.add_argument("version", nargs="?", type=int, help="version (default: newest - 1)")
    actions.add_parser("unpin", help="serve the newest version again")


def status(store: ModelStore) -> dict[str, Any]:
    """Everything `model status` shows, as data."""
    from engine.model import ModelSet

    info = store.info()
    work = store.working_copy()
    live = ModelSet.loads(work).status() if work else None
    return {
        "current": info.current,
        "pinned": info.pinned,
        "serving": info.serving,
        "versions": store.versions(),
        "trainer_live": live,
    }


def _fmt(q: dict[str, Any] | None) -> str:
    if not q or not q.get("labels"):
        return "no labels yet"
    parts = [f"labels {q['labels']}"]
    for name in ("auc", "log_loss", "precision_top15", "ece"):
        if q.get(name) is not None:
            parts.append(f"{name} {q[name]:.3f}")
    parts.append(f"drift alarms {q['drifts']}")
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    url, local = redis_for(args.redis_url or settings.redis_url(), args.data_dir, create=False)
    from engine.model_store import ModelStore

    try:
        store = ModelStore(connect(url, settings.redis.retries), settings.redis.key_prefix)
        return _act(args, settings, store)
    finally:
        if local is not None:
            local.release()


def _print_live(live: dict[str, Any]) -> None:
    print(f"trainer live: labels {live['labels_seen']}")
    print(f"  served score: {_fmt(live['served_score'])}")
    print(f"  model alone:  {_fmt(live['model_alone'])}")
    for q in live["served_score"]["calibration"]:
        if q["n"]:
            print(f"  {q['band']}: n={q['n']} predicted {q['mean_p']:.3f} "
                  f"observed {q['rate']:.3f}")  # fmt: skip
    cal = live.get("score_calibration")  # absent in a status from before it
    if cal and cal["labels"]:
        pairs = ", ".join(f"{p} -> {q:.3f}" for p, q in cal["map"].items())
        print(f"  score calibration ({cal['labels']} labels): blend {pairs}")


def _act(args: argparse.Namespace, settings: Any, store: ModelStore) -> int:
    if args.action == "status":
        data = status(store)
        if args.json:
            print(json.dumps(data, indent=2, default=str))
            return 0
        pinned = f" (pinned; newest is {data['current']})" if data["pinned"] is not None else ""
        print(f"serving version {data['serving']}{pinned}")
        for n, meta in data["versions"].items():
            print(f"  v{n}: labels {meta['labels_seen']}, river {meta['river_version']}, "
                  f"served score: {_fmt(meta.get('quality'))}")  # fmt: skip
        if data["trainer_live"]:
            _print_live(data["trainer_live"])
        return 0
    if args.action == "rollback":
        info = store.info()
        version = args.version if args.version is not None else info.current - 1
        try:
            store.pin(version)
        except KeyError:
            raise LeadpulseError(f"no published version {version}") from None
        print(f"pinned version {version}; scorers switch within {settings.scoring.model_check_s} s")
        return 0
    store.unpin()
    print("unpinned: serving the newest version")
    return 0
