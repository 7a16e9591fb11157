"""Every Redis key leadpulse uses, built here and nowhere else.

One prefix (``redis.key_prefix``, ``lp`` by default) heads every key, written as a Redis
hash tag: ``{lp}:…``. Redis hashes only the part between the first ``{`` and ``}``, so
every key of one deployment lives in one hash slot. On a single server that changes
nothing; on a Redis Cluster it is what lets a batch stay one MULTI/EXEC (its positions,
lead records, hot lists and streams together) and lets the Lua scripts touch the keys
they do. The price: one deployment's keys live on one master (a cluster spreads several
deployments, one prefix each; README "Running on a Redis Cluster"). ``{p}`` below is
that tagged prefix; a lead's own keys keep ``{tenant:lead}`` as their second brace
pair (not a hash tag: only the first pair counts):

- ``{p}:{tenant:lead}:f``  the lead's record (msgpack, ``features/record.py``, schema 2):
  features, score record, learning moments and report marks in one value, one TTL
- ``{p}:{tenant:lead}:c``  its follow-up plan state (msgpack, the older JSON form still
  read: ``engine/cadence/decide.py``; cadences on)
- before schema 2 (read, then deleted when the lead is next written): ``:r`` score record,
  ``:n`` learning moments, ``:rp`` report marks; schema 0's ``:s`` and ``:h :e :v :a :x :p``
- ``{p}:hot:{tenant}``, ``{p}:hotidx``, ``{p}:due:{partition}``, ``{p}:alias:{tenant}``,
  ``{p}:wm``, ``{p}:lostseen``: hot lists, their index, learning horizons,
  folded ids, expiry watermarks, pacing
- ``{p}:cad:{partition}``, ``{p}:cadwm``: leads by their next follow-up step's due time,
  and each partition's cadence clock (``engine/cadence``)
- streams: ``{p}:events:{partition}``, ``{p}:alerts``, ``{p}:buckets``, ``{p}:cadence``,
  ``{p}:deadletter``, ``{p}:labels``, positions ``{p}:pos`` and ``{p}:processed``
- the model: ``{p}:model:work|meta|versions|v:{n}``
- the gateway: ``{p}:gw:idem|bound|contact|rl:…``; CRM events in ``{p}:crm:seen:…``
- reports: ``{p}:rpt:{tenant}:{day}``, ``{p}:rpt:tenants``
- delivery: everything under ``{p}:dlv:`` (:class:`DeliveryKeys` lists them)

**Slot per partition** (``redis.key_layout = "partition"``, for spreading one deployment
over the masters of a Redis Cluster): everything a batch writes moves from ``{p}`` to its
partition's own tag (:meth:`StreamNames.shard`, e.g. ``{lp.3.41}``): the lead records of
the partition's leads (``events.partition_of``), its hot-list and report shards, its
streams (events, alerts, buckets, cadence, dead letters, labels), its positions and its
due, watermark and cadence-clock keys. The key names after the tag stay the same, so a
partition's keys are the deployment layout's keys with another tag, and a reader merges
the shards (:meth:`StreamNames.shards`). The tags are chosen so partition ``n`` of ``P``
hashes into slot band ``n`` of ``P`` (:func:`shard_tag`): a cluster whose masters hold
even slot ranges gets even shares of the partitions. The model, the gateway's and
delivery's keys stay under ``{p}``.

Before this layout every key began with the bare prefix (``lp:…``); ``leadpulse
migrate`` renames such keys (:data:`legacy_pattern`, :func:`migrated_name`).

Nothing here imports the rest of the engine, so any module may import it.
"""

from __future__ import annotations

from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from engine.events import partition_of

__all__ = [
    "LAYOUTS", "CrmKeys", "DeliveryKeys", "ModelKeys", "StreamNames", "alias_key", "bound_key",
    "cadence_clock_key", "cadence_due_key", "every_pattern", "forwarded_key",
    "contact_index_key", "day_key", "due_key", "home_of", "hot_index_key", "hot_key",
    "idempotency_key", "lead_key", "lost_seen_key", "mark_key", "member", "processed_key",
    "legacy_pattern", "migrated_name", "outbox_key", "pattern", "rate_limit_key", "root",
    "shard_tag", "split_member", "tenants_key", "watermark_key",
]  # fmt: skip


def root(prefix: str) -> str:
    """The head of every key: the prefix as a hash tag (``lp`` -> ``{lp}``)."""
    return f"{{{prefix}}}"


def pattern(prefix: str, rest: str = "*") -> str:
    """SCAN pattern of a deployment's keys (``{lp}:*``; braces are literal in a pattern)."""
    return f"{root(prefix)}:{rest}"


def every_pattern(prefix: str, rest: str = "*") -> str:
    """SCAN pattern of a deployment's keys in either layout: under ``{lp}`` and under its
    partitions' tags ``{lp.N.k}`` (``{lp[}.]*``; a prefix never holds a dot, so no other
    deployment's keys match)."""
    return f"{{{prefix}[}}.]*:{rest}"


#: ``deployment``: every key under ``{prefix}`` (one slot); ``partition``: a slot per
#: partition for everything a batch writes (:meth:`StreamNames.shard`).
LAYOUTS = ("deployment", "partition")


@cache
def shard_tag(prefix: str, partition: int, partitions: int) -> str:
    """The hash tag of a partition's keys in the slot-per-partition layout: ``lp.N.k``, with
    the smallest ``k`` whose slot falls in band ``N`` of ``partitions`` equal bands of the
    16,384 slots (deterministic: every process finds the same tag)."""
    if not 0 <= partition < partitions:
        raise ValueError(f"partition {partition} is outside 0..{partitions - 1}")
    low = partition * REDIS_CLUSTER_HASH_SLOTS // partitions
    high = (partition + 1) * REDIS_CLUSTER_HASH_SLOTS // partitions
    k = 0
    while not low <= key_slot(f"{prefix}.{partition}.{k}".encode()) < high:
        k += 1
    return f"{prefix}.{partition}.{k}"


def legacy_pattern(prefix: str) -> str:
    """SCAN pattern of the keys of the layout before hash tags (``lp:*``)."""
    return f"{prefix}:*"


def migrated_name(prefix: str, key: str) -> str:
    """A pre-hash-tag key's name in this layout: ``lp:hot:t`` -> ``{lp}:hot:t``."""
    head = f"{prefix}:"
    if not key.startswith(head):
        raise ValueError(f"{key!r} does not start with {head!r}")
    return f"{root(prefix)}:{key[len(head) :]}"


# -- lead state (engine: features/, sinks) -------------------------------------------------


def hot_key(prefix: str, tenant: str) -> str:
    """Per-tenant hot list: a sorted set of lead ids by score."""
    return f"{root(prefix)}:hot:{tenant}"


def due_key(prefix: str, partition: int) -> str:
    """Per partition: leads with learning snapshots, by their oldest snapshot's event time."""
    return f"{root(prefix)}:due:{partition}"


def alias_key(prefix: str, tenant: str) -> str:
    """Per tenant: lead id -> the lead it was folded into (identify, merge)."""
    return f"{root(prefix)}:alias:{tenant}"


def lead_key(prefix: str, tenant: str, lead_id: str, part: str) -> str:
    """Key of one piece of a lead's state; the ``{tenant:lead}`` tag keeps a lead in one slot.

    ``f`` the lead's record (schema 2: everything but ``c``, the follow-up plan); the
    older layouts' ``r`` score record, ``n`` learning moments, ``rp`` report marks, ``s``
    schema 0's score hash are only read (and deleted) by the migration.
    """
    return f"{root(prefix)}:{{{tenant}:{lead_id}}}:{part}"


def cadence_due_key(prefix: str, partition: int) -> str:
    """Per partition: leads in a follow-up plan, by their next step's due time (event time)."""
    return f"{root(prefix)}:cad:{partition}"


def cadence_clock_key(prefix: str) -> str:
    """Hash partition -> "watermark:wall": the partition's cadence clock (engine/cadence)."""
    return f"{root(prefix)}:cadwm"


def hot_index_key(prefix: str) -> str:
    """Zset "tenant<0x1f>lead" -> wall ms of the lead's last score record, for every lead
    on a hot list: how :meth:`Committer.prune_hot` finds leads gone idle."""
    return f"{root(prefix)}:hotidx"


def watermark_key(prefix: str) -> str:
    """Hash partition -> event-time day up to which label-horizon expiry has been swept."""
    return f"{root(prefix)}:wm"


def lost_seen_key(prefix: str) -> str:
    """Set of partitions that have committed an explicit ``lost`` (pacing, engine/learning.py)."""
    return f"{root(prefix)}:lostseen"


# -- streams -------------------------------------------------------------------------------


class StreamNames:
    """Key names of every stream and stream-side hash of a deployment: its prefix, its
    partition count and its layout (:data:`LAYOUTS`).

    ``positions``, ``alerts``, ... name the deployment layout's keys; in the
    slot-per-partition layout each partition has its own (:meth:`of`), and
    :meth:`shards` lists the prefixes a reader merges.
    """

    def __init__(self, prefix: str, partitions: int, layout: str = "deployment") -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown key layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
        self.prefix = prefix
        self.partitions = partitions
        self.layout = layout
        self.sharded = layout == "partition"
        self.positions = f"{root(prefix)}:pos"
        self.dead_letter = f"{root(prefix)}:deadletter"
        self.alerts = f"{root(prefix)}:alerts"
        self.bucket_changes = f"{root(prefix)}:buckets"
        self.cadence = f"{root(prefix)}:cadence"  # due follow-up steps (engine/cadence)

    def shard(self, partition: int) -> str:
        """The prefix a partition's keys are built from: the deployment's own prefix, or
        the partition's :func:`shard_tag` in the slot-per-partition layout."""
        if not self.sharded:
            return self.prefix
        return shard_tag(self.prefix, partition, self.partitions)

    def home(self, tenant: str, lead_id: str) -> str:
        """The prefix of a lead's keys: its partition's (:meth:`shard`)."""
        if not self.sharded:
            return self.prefix
        return self.shard(partition_of(tenant, lead_id, self.partitions))

    def shards(self) -> list[str]:
        """Every distinct prefix a partition's keys are built from, in partition order."""
        if not self.sharded:
            return [self.prefix]
        return [self.shard(p) for p in range(self.partitions)]

    def of(self, partition: int) -> StreamNames:
        """The names a batch of ``partition`` writes: this deployment's, or in the
        slot-per-partition layout the same names under the partition's tag."""
        if not self.sharded:
            return self
        names = _SHARDS.get((self.prefix, partition, self.partitions))
        if names is None:
            names = StreamNames(self.shard(partition), self.partitions)
            names.events = self.events  # type: ignore[method-assign]  # the deployment's
            _SHARDS[(self.prefix, partition, self.partitions)] = names
        return names

    def events(self, partition: int) -> str:
        return f"{root(self.shard(partition))}:events:{partition}"


_SHARDS: dict[tuple[str, int, int], StreamNames] = {}


def home_of(where: str | StreamNames, tenant: str, lead_id: str) -> str:
    """The prefix of a lead's keys: ``where`` itself when it is a prefix (a batch's own
    partition, or the deployment layout), its partition's when it is a deployment's names."""
    return where if isinstance(where, str) else where.home(tenant, lead_id)


def processed_key(names: StreamNames) -> str:
    """Hash partition -> entries processed ever (committed with the positions)."""
    return f"{root(names.prefix)}:processed"


def forwarded_key(prefix: str) -> str:
    """Hash source partition -> id of the last outbox entry appended under this tag (its
    labels stream, or a partition's events stream): ``streams.forward_outbox``."""
    return f"{root(prefix)}:fwd"


def outbox_key(names: StreamNames) -> str:
    """Slot-per-partition layout: control entries a partition's batch sends to other
    partitions, committed with the batch, then moved on (``streams.forward_outbox``)."""
    return f"{root(names.prefix)}:outbox"


# -- the model (engine/model_store.py) -----------------------------------------------------


class ModelKeys:
    def __init__(self, prefix: str) -> None:
        self.work = f"{root(prefix)}:model:work"
        self.meta = f"{root(prefix)}:model:meta"
        self.versions = f"{root(prefix)}:model:versions"
        self.labels = f"{root(prefix)}:labels"
        self._prefix = prefix

    def version(self, n: int) -> str:
        return f"{root(self._prefix)}:model:v:{n}"


# -- gateway -------------------------------------------------------------------------------


def idempotency_key(prefix: str, tenant: str, event_id: str) -> str:
    return f"{root(prefix)}:gw:idem:{tenant}:{event_id}"


def bound_key(prefix: str, tenant: str, lead_id: str) -> str:
    """Marker: a server key sent an event for this lead (tracker events may address it)."""
    return f"{root(prefix)}:gw:bound:{tenant}:{lead_id}"


def contact_index_key(prefix: str, tenant: str, contact_hash: str) -> str:
    """Set of the tenant's lead ids seen with one contact hash (``privacy.ContactHasher``)."""
    return f"{root(prefix)}:gw:contact:{tenant}:{contact_hash}"


def rate_limit_key(prefix: str, bucket: str) -> str:
    """The gateway's rate-limit state of one key or client (GCRA, ``ratelimit.py``)."""
    return f"{root(prefix)}:gw:rl:{bucket}"


class CrmKeys:
    """Every Redis key of CRM events in, built here: ``{prefix}:crm:seen:{tenant}:{target}:{id}``
    (the CRM's event id, claimed once)."""

    def __init__(self, prefix: str) -> None:
        self.base = f"{root(prefix)}:crm"

    def seen(self, tenant: str, target: str, event_id: str) -> str:
        return f"{self.base}:seen:{tenant}:{target}:{event_id}"


# -- brokerage reports (engine/reporting) --------------------------------------------------


def day_key(prefix: str, tenant: str, day: str) -> str:
    return f"{root(prefix)}:rpt:{tenant}:{day}"


def tenants_key(prefix: str) -> str:
    return f"{root(prefix)}:rpt:tenants"


def mark_key(prefix: str, tenant: str, lead: str) -> str:
    """Schema 1's report-marks hash of a lead (schema 2 keeps the marks in its record)."""
    return lead_key(prefix, tenant, lead, "rp")


# -- delivery ------------------------------------------------------------------------------


def member(tenant: str, lead: str) -> str:
    return f"{tenant}:{lead}"


def split_member(value: str | bytes) -> tuple[str, str]:
    text = value.decode() if isinstance(value, bytes) else value
    tenant, _, lead = text.partition(":")
    return tenant, lead


class DeliveryKeys:
    """Keys of everything delivery keeps, from the engine's key prefix.

    All under ``{prefix}:dlv:`` so they never collide with the engine's keys:

    - ``dlv:pos``                   hash partition -> last events-stream id read (SLA, consent)
    - ``dlv:feed:{tenant}``         stream: what the SSE feed and the page show, per tenant
    - ``dlv:dead``                  stream: webhook deliveries that gave up, with the last error
    - ``dlv:rcpt:{alert_id}``       hash "{delivery_id}|{target}" -> receipt JSON
    - ``dlv:route:{alert_id}``      the routing decision made for an alert (replays reuse it)
    - ``dlv:asg:{tenant}:{lead}``   hash: the lead's current assignment and its reason
    - ``dlv:hist:{tenant}:{lead}``  list: assignment history (reasons), newest first
    - ``dlv:rr:{tenant}:{group}``   round-robin counter of a group
    - ``dlv:load:{tenant}``         hash agent -> leads assigned (fairness, for people)
    - ``dlv:claims``                zset "{tenant}:{lead}" -> claim deadline (first-to-claim)
    - ``dlv:clock:{tenant}:{lead}`` hash: the lead's SLA clock
    - ``dlv:due``                   zset "{tenant}:{lead}" -> deadline of open clocks
    - ``dlv:resp:{tenant}:{lead}``  hash: the lead's last agent response (ts, agent, kind)
    - ``dlv:rep:{tenant}``          hash: SLA report counters by source and agent
    - ``dlv:rt:{tenant}:{dim}:{v}`` list: recent response times (seconds) for medians
    - ``dlv:consent:{tenant}:{lead}`` hash channel -> why it is blocked (JSON)
    - ``dlv:card:{tenant}:{lead}``  the lead's last delivered alert (JSON); expires with the lead
    - ``dlv:leads:{tenant}``        zset lead -> last alert time (the page's leads; idle ones go)

    Tenant ids match ``[A-Za-z0-9_.-]``, so ``{tenant}:{lead}`` splits at the first colon.
    """

    def __init__(self, prefix: str) -> None:
        self.base = f"{root(prefix)}:dlv"
        self.positions = f"{self.base}:pos"
        self.dead = f"{self.base}:dead"
        self.claims = f"{self.base}:claims"
        self.due = f"{self.base}:due"

    def feed(self, tenant: str) -> str:
        return f"{self.base}:feed:{tenant}"

    def receipts(self, alert_id: str) -> str:
        return f"{self.base}:rcpt:{alert_id}"

    def route(self, alert_id: str) -> str:
        return f"{self.base}:route:{alert_id}"

    def assignment(self, tenant: str, lead: str) -> str:
        return f"{self.base}:asg:{tenant}:{lead}"

    def history(self, tenant: str, lead: str) -> str:
        return f"{self.base}:hist:{tenant}:{lead}"

    def round_robin(self, tenant: str, group: str) -> str:
        return f"{self.base}:rr:{tenant}:{group}"

    def load(self, tenant: str) -> str:
        return f"{self.base}:load:{tenant}"

    def clock(self, tenant: str, lead: str) -> str:
        return f"{self.base}:clock:{tenant}:{lead}"

    def response(self, tenant: str, lead: str) -> str:
        return f"{self.base}:resp:{tenant}:{lead}"

    def report(self, tenant: str) -> str:
        return f"{self.base}:rep:{tenant}"

    def response_times(self, tenant: str, dim: str, value: str) -> str:
        return f"{self.base}:rt:{tenant}:{dim}:{value}"

    def consent(self, tenant: str, lead: str) -> str:
        return f"{self.base}:consent:{tenant}:{lead}"

    def card(self, tenant: str, lead: str) -> str:
        return f"{self.base}:card:{tenant}:{lead}"

    def leads(self, tenant: str) -> str:
        return f"{self.base}:leads:{tenant}"

    def tasks(self, tenant: str, agent: str) -> str:
        """Zset task JSON -> due time: an agent's follow-up tasks (``*``: nobody's yet)."""
        return f"{self.base}:tasks:{tenant}:{agent or '*'}"
