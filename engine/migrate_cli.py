"""``leadpulse migrate``: rename keys of the layout before hash tags (``lp:…`` -> ``{lp}:…``),
and with ``redis.key_layout = "partition"`` move the keys of the one-slot layout under
their partitions' tags (``engine/relayout.py``).

Every key now begins with the prefix as a Redis hash tag (``engine/keys.py``), so that a
deployment's keys share one cluster slot. Data written by an older leadpulse on a single
server keeps its old names until this command renames them: ``RENAMENX`` key by key
(value, TTL, stream consumer groups and pending entries move with the key; a key whose
new name exists already is left alone and counted). Idempotent: a second run finds
nothing to rename. Stop every leadpulse process of the deployment first (engine,
gateway, delivery): a process still writing old names would write past the rename.

The old layout never ran on a Redis Cluster (it was refused), so the command refuses a
cluster: there is nothing to migrate there.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from engine.errors import LeadpulseError
from engine.keys import StreamNames, legacy_pattern, migrated_name, root
from engine.redis_client import connect, is_cluster, redis_for
from engine.relayout import relayout
from engine.settings import Settings, load_settings
from engine.streams import stream_names
from engine.up import add_data_dir

log = logging.getLogger(__name__)

__all__ = ["Migrated", "add_parser", "check_layout", "migrate", "run"]


@dataclass(frozen=True, slots=True)
class Migrated:
    """What one run did: keys renamed, and keys left because their new name was taken."""

    renamed: int
    kept: list[str]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "migrate",
        help="rename keys written by leadpulse before hash-tagged keys (lp:… -> {lp}:…)",
        description="Rename every key of the old layout (PREFIX:…) to the current one "
        "({PREFIX}:…), keeping values, TTLs and stream consumer groups. Stop every "
        "leadpulse process of the deployment first. Safe to run twice.",
    )
    p.add_argument("--config", help="TOML file overriding config/default.toml")
    p.add_argument("--redis-url", default="", help="overrides REDIS_URL")
    p.add_argument("--dry-run", action="store_true", help="count the keys, rename nothing")
    add_data_dir(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


#: Said at start on a Redis Cluster in the one-slot layout: it works, on one master.
CLUSTER_ONE_SLOT = (
    "Redis Cluster with redis.key_layout = 'deployment': every key of %s is in one hash "
    "slot, on one master; set redis.key_layout = 'partition' to spread the deployment over "
    "the masters (README 'Running on several machines')"
)

#: Keys every deployment of the old layout had once it processed anything.
_OLD_MARKERS = ("pos", "alerts", "events:0", "model:meta", "deadletter")


def check_layout(client: Any, settings: Settings) -> None:
    """Refuse to start on data of another key layout than ``redis.key_layout`` (or of the
    layout before hash tags) that was not migrated: the services would start empty
    beside it (one line, what to do)."""
    prefix = settings.redis.key_prefix
    names = stream_names(settings)
    _check_key_layout(client, names)
    if is_cluster(client):
        if not names.sharded:
            log.warning(CLUSTER_ONE_SLOT, root(prefix))
        return  # the old layout never ran on a cluster
    old = [f"{prefix}:{name}" for name in _OLD_MARKERS]
    if not client.exists(*old):
        return
    raise LeadpulseError(
        f"this Redis holds leadpulse data under the old key names ({prefix}:…); stop every "
        "leadpulse process of the deployment and run `leadpulse migrate` (README Changelog)"
    )


def _check_key_layout(client: Any, names: StreamNames) -> None:
    """The deployment layout's positions beside ``key_layout = "partition"`` (or the other
    way round): refuse, naming the fix. One EXISTS a key (a cluster routes each alone)."""
    other = StreamNames(names.prefix, names.partitions, "deployment" if names.sharded else
                        "partition")  # fmt: skip
    if not any(client.exists(other.of(p).positions) for p in range(min(names.partitions, 4))):
        return
    if names.sharded:
        raise LeadpulseError(
            f"redis.key_layout is 'partition' but {root(names.prefix)} holds data of the "
            "one-slot layout; stop every leadpulse process and run `leadpulse migrate`"
        )
    raise LeadpulseError(
        f"redis.key_layout is 'deployment' but {root(names.prefix)}'s data is in the "
        "partition layout (a tag per partition); set redis.key_layout = 'partition'"
    )


def migrate(client: Any, prefix: str, *, dry_run: bool = False) -> Migrated:
    """Rename every ``prefix:…`` key to ``{prefix}:…`` (``RENAMENX``, one key at a time)."""
    if is_cluster(client):
        raise LeadpulseError(
            "leadpulse migrate renames keys of a single server; the old key layout never "
            "ran on a Redis Cluster, so there is nothing to migrate there"
        )
    renamed, kept = 0, []
    for raw in client.scan_iter(match=legacy_pattern(prefix), count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        target = migrated_name(prefix, key)
        if dry_run:
            renamed += 1
            continue
        try:
            moved = client.renamenx(key, target)
        except ResponseError:  # gone since SCAN listed it (expired): nothing to move
            continue
        if moved:
            renamed += 1
        else:
            kept.append(key)
    return Migrated(renamed, kept)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    url, local = redis_for(args.redis_url or settings.redis_url(), args.data_dir, create=False)
    try:
        client = connect(url, settings.redis.retries)
        prefix = settings.redis.key_prefix
        done = migrate(client, prefix, dry_run=args.dry_run)
        names = stream_names(settings)
        moved = relayout(client, names, dry_run=args.dry_run) if names.sharded else None
    finally:
        if local is not None:
            local.release()
    verb = "would rename" if args.dry_run else "renamed"
    print(f"{verb} {done.renamed} keys from {prefix}:… to {{{prefix}}}:…")
    kept = done.kept
    if moved is not None:
        print(f"{verb} {moved.renamed} keys and split {moved.split} from {{{prefix}}}:… "
              f"to the tags of {names.partitions} partitions (key_layout 'partition')")  # fmt: skip
        kept = kept + moved.kept
    if kept:
        shown = ", ".join(kept[:5]) + (", ..." if len(kept) > 5 else "")
        print(f"left {len(kept)} keys whose new name exists already: {shown}")
        return 1
    return 0
