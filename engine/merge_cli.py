"""``leadpulse merge``: one person, two leads (same email or phone from two sources).

``leadpulse merge TENANT --keep A --other B`` folds lead B into A; ``leadpulse merge
TENANT --contact-hash H`` folds every lead the gateway saw with the keyed contact hash
H into the first known (non-anonymous) one.

Nothing is folded from here: the command appends a ``merge`` control entry to A's
partition stream and prints what it queued. The engine folds when it processes that
entry, as it does for ``identify`` (``engine/identity.py``): B's state, score record and
learning moments move to A exactly once, and a pointer B -> A makes B's later events
follow. Running it twice folds once.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from engine import identity
from engine.errors import LeadpulseError
from engine.events import partition_of
from engine.redis_client import connect, redis_for
from engine.settings import load_settings
from engine.shards import read_aliases
from engine.streams import StreamNames, queue_control, stream_names
from engine.up import add_data_dir

__all__ = ["Queued", "add_parser", "merge_by_contact", "queue_merge", "run"]

Queued = tuple[str, int, str]  # (the lead folded, partition, stream id of the merge entry)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "merge",
        help="fold duplicate leads of one person into one (by id or contact hash)",
        description="Queue a fold of lead --other into --keep, or of every lead seen with "
        "--contact-hash into the first known one. The running engine folds when it "
        "processes the queued entry; a pointer makes later events follow.",
    )
    p.add_argument("tenant", help="the tenant both leads belong to")
    p.add_argument("--keep", help="the lead to keep")
    p.add_argument("--other", help="the duplicate lead to fold into --keep")
    p.add_argument("--contact-hash", help="keyed email/phone hash from the gateway's index")
    p.add_argument("--config", help="TOML file overriding config/default.toml")
    p.add_argument("--redis-url", default="", help="overrides REDIS_URL")
    add_data_dir(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def queue_merge(client: Any, names: StreamNames, tenant: str, keep: str, other: str) -> Queued:
    """Append a ``merge`` of ``other`` into ``keep`` to ``keep``'s partition stream."""
    if not keep or not other or keep == other:
        raise LeadpulseError("--keep and --other must name two different leads")
    control = identity.merge_control(tenant, keep, other, time.time())
    partition = partition_of(tenant, keep, names.partitions)
    sid = queue_control(client, names, partition, identity.pack(control))
    return other, partition, sid.decode() if isinstance(sid, bytes) else str(sid)


def merge_by_contact(
    client: Any, names: StreamNames, tenant: str, contact_hash: str
) -> tuple[str | None, list[Queued]]:
    """(kept lead, merges queued) for every lead seen with ``contact_hash``; leads folded
    already (a pointer exists) are not queued again."""
    from engine.gateway.store import find_leads_by_contact_hash

    leads = find_leads_by_contact_hash(client, names.prefix, tenant, contact_hash)
    if not leads:
        return None, []
    known = [lead for lead in leads if not lead.startswith("~")]
    keep = known[0] if known else leads[0]
    others = [lead for lead in leads if lead != keep]
    folded = read_aliases(client, names, tenant, others)  # every shard's aliases
    todo = [lead for lead in others if lead not in folded]
    return keep, [queue_merge(client, names, tenant, keep, lead) for lead in todo]


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    url, local = redis_for(args.redis_url or settings.redis_url(), args.data_dir, create=False)
    try:
        return _merge(args, settings, connect(url, settings.redis.retries))
    finally:
        if local is not None:
            local.release()


def _merge(args: argparse.Namespace, settings: Any, client: Any) -> int:
    names = stream_names(settings)
    if args.contact_hash:
        keep, queued = merge_by_contact(client, names, args.tenant, args.contact_hash)
        if keep is None:
            raise LeadpulseError(f"no lead of {args.tenant} was seen with that contact hash")
        if not queued:
            print(f"kept {keep}; nothing to queue (every other lead is merged already)")
        for other, partition, sid in queued:
            print(f"queued merge of {other} into {keep}: entry {sid} on partition {partition}")
    else:
        if not (args.keep and args.other):
            raise LeadpulseError("give --keep and --other, or --contact-hash")
        other, partition, sid = queue_merge(client, names, args.tenant, args.keep, args.other)
        print(f"queued merge of {other} into {args.keep}: entry {sid} on partition {partition}")
    print("the engine folds each merge when it processes that entry (leadpulse run)")
    return 0
