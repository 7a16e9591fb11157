"""``leadpulse merge``: one person, two leads (same email or phone from two sources).

``leadpulse merge TENANT --keep A --other B`` folds lead B into A; ``leadpulse merge
TENANT --contact-hash H`` folds every lead the gateway saw with the keyed contact hash
H into the first known (non-anonymous) one. The fold (``features/fold.lua``) moves
features and learning snapshots, drops B's score record and leaves a pointer B -> A
that the gateway and the engine follow for B's later events. Idempotent.
"""

from __future__ import annotations

import argparse
from typing import Any

from engine.errors import LeadpulseError
from engine.redis_client import connect, redis_for
from engine.settings import load_settings
from engine.up import add_data_dir
from features.store import FeatureStore

__all__ = ["add_parser", "merge_by_contact", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "merge",
        help="fold duplicate leads of one person into one (by id or contact hash)",
        description="Fold lead --other into --keep, or every lead seen with --contact-hash "
        "into the first known one; leaves a pointer so later events follow.",
    )
    p.add_argument("tenant", help="the tenant both leads belong to")
    p.add_argument("--keep", help="the lead to keep")
    p.add_argument("--other", help="the duplicate lead to fold into --keep")
    p.add_argument("--contact-hash", help="keyed email/phone hash from the gateway's index")
    p.add_argument("--config", help="TOML file overriding config/default.toml")
    p.add_argument("--redis-url", default="", help="overrides REDIS_URL")
    add_data_dir(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def merge_by_contact(
    store: FeatureStore, client: Any, prefix: str, tenant: str, contact_hash: str
) -> tuple[str | None, list[str]]:
    """(kept lead, leads folded into it) for every lead seen with ``contact_hash``."""
    from engine.gateway.store import find_leads_by_contact_hash

    leads = find_leads_by_contact_hash(client, prefix, tenant, contact_hash)
    known = [lead for lead in leads if not lead.startswith("~")]
    if not leads:
        return None, []
    keep = known[0] if known else leads[0]
    folded = [lead for lead in leads if lead != keep and store.merge(tenant, keep, lead)]
    return keep, folded


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    url, local = redis_for(args.redis_url or settings.redis_url(), args.data_dir, create=False)
    try:
        return _merge(args, settings, connect(url, settings.redis.retries))
    finally:
        if local is not None:
            local.release()


def _merge(args: argparse.Namespace, settings: Any, client: Any) -> int:
    prefix = settings.redis.key_prefix
    store = FeatureStore(client, settings.features, prefix, settings.streams.partitions)
    if args.contact_hash:
        keep, folded = merge_by_contact(store, client, prefix, args.tenant, args.contact_hash)
        if keep is None:
            raise LeadpulseError(f"no lead of {args.tenant} was seen with that contact hash")
        print(f"kept {keep}; folded {', '.join(folded) or 'nothing (already merged)'}")
        return 0
    if not (args.keep and args.other):
        raise LeadpulseError("give --keep and --other, or --contact-hash")
    folded_any = store.merge(args.tenant, args.keep, args.other)
    print(f"{'folded' if folded_any else 'nothing to fold from'} {args.other} into {args.keep}")
    return 0
