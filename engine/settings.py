"""One frozen, validated settings model for the whole engine.

Loaded from ``config/default.toml``, then an optional override file, then
``LEADPULSE__SECTION__KEY`` environment variables. Every section forbids unknown
keys, and every bad value fails at start-up with a :class:`ConfigError` that names
the key and what is allowed, so a typo never silently falls back to a default.
Config that names a protected characteristic or proxy anywhere is refused with
:class:`ForbiddenFeatureError` (Fair Housing: such data must never reach scoring).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engine.cadence.settings import CadenceSettings
from engine.delivery.target_settings import TargetSettings
from engine.errors import ConfigError, ForbiddenFeatureError
from features.definitions import FEATURE_NAMES, PROTECTED_TERMS

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AlertSettings",
    "ApiKeyEntry",
    "DeliverySettings",
    "FeatureSettings",
    "GatewaySettings",
    "RoutingRule",
    "ScoringSettings",
    "Settings",
    "SlaRule",
    "ValidationSettings",
    "load_settings",
]

_CHECKOUT_DEFAULTS = Path(__file__).resolve().parent.parent / "config" / "default.toml"
#: config/default.toml in a checkout; in an installed wheel the package's own copy
#: (engine/default.toml, a link to config/default.toml in the repository)
DEFAULT_CONFIG_PATH = (
    _CHECKOUT_DEFAULTS if _CHECKOUT_DEFAULTS.is_file() else Path(__file__).parent / "default.toml"
)
ENV_PREFIX = "LEADPULSE__"


def _members(values: Iterable[str], allowed: Collection[str], what: str) -> None:
    """Refuse any value outside ``allowed``, naming it and what is allowed."""
    for value in values:
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(sorted(allowed))}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisSettings(_Section):
    url: str = ""
    key_prefix: str = Field("lp", pattern=r"^[a-z][a-z0-9_]{0,15}$")
    #: "deployment": every key in one hash slot; "partition": a slot per stream partition,
    #: so one deployment spreads over a Redis Cluster's masters (engine/keys.py)
    key_layout: Literal["deployment", "partition"] = "deployment"
    socket_timeout_s: float = Field(5.0, gt=0, le=120)
    retries: int = Field(6, ge=0, le=50)
    outage_backoff_cap_s: float = Field(2.0, gt=0, le=300)


class StreamSettings(_Section):
    partitions: int = Field(4, ge=1, le=1024)
    read_count: int = Field(500, ge=1, le=10_000)
    idle_poll_ms: int = Field(20, ge=1, le=5_000)
    maxlen: int = Field(0, ge=0)  # 0: no cap at append; committed entries are trimmed instead
    retain_processed_s: float = Field(3_600, ge=0)

    @field_validator("maxlen")
    @classmethod
    def _cap(cls, v: int) -> int:
        if 0 < v < 1_000:
            raise ValueError("must be 0 (no cap) or at least 1000")
        return v

    dead_letter_maxlen: int = Field(100_000, ge=100)
    alerts_maxlen: int = Field(100_000, ge=100)


class ValidationSettings(_Section):
    max_id_len: int = Field(128, ge=8, le=1024)
    max_string_len: int = Field(256, ge=16, le=65_536)
    max_event_bytes: int = Field(65_536, ge=256, le=10_000_000)
    max_props: int = Field(32, ge=0, le=1024)
    max_future_skew_s: float = Field(86_400, ge=0)
    min_ts: float = Field(946_684_800, ge=0)


class FeatureSettings(_Section):
    view_windows_h: tuple[int, int, int] = (24, 168, 720)
    repeat_window_h: int = Field(48, ge=1, le=8_760)
    distinct_window_h: int = Field(720, ge=1, le=8_760)
    reactivation_silence_d: float = Field(30, gt=0)
    reactivation_flag_d: float = Field(7, gt=0)
    dedup_horizon_h: int = Field(720, ge=1)
    max_window_members: int = Field(300, ge=10, le=100_000)
    dedup_ids: int = Field(256, ge=16, le=100_000)
    idle_expire_d: float = Field(120, gt=0)
    names: tuple[str, ...]
    profile: tuple[str, ...] = ()

    @field_validator("profile")
    @classmethod
    def _declared_profile(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from features.definitions import LOCATION_PROXIES, PROFILE_BUILTIN, profile_prop

        for name in v:
            key = profile_prop(name)
            if name in PROFILE_BUILTIN:
                raise ValueError(f"{name!r} is always a profile field: list it in features.names")
            if key is None or not re.fullmatch(r"[A-Za-z0-9_]{1,40}", key):
                raise ValueError(f"{name!r}: declare a field of the event's props as props.<key>")
            _refuse_protected(f"features.profile: {name}", key, LOCATION_PROXIES)
        if len(set(v)) != len(v) or len(v) > 8:
            raise ValueError("at most 8 declared profile fields, each once")
        return v

    @property
    def model_names(self) -> tuple[str, ...]:
        """Every input the model sees: the configured features, then the declared profile."""
        return self.names + self.profile

    @field_validator("view_windows_h")
    @classmethod
    def _increasing(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if not (0 < v[0] < v[1] < v[2]):
            raise ValueError("must be three increasing positive hour counts, e.g. [24, 168, 720]")
        return v

    @field_validator("names")
    @classmethod
    def _known_features(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            _refuse_protected(f"features.names: {name}", name)
            if name not in FEATURE_NAMES:
                raise ValueError(f"unknown feature {name!r}; allowed: {', '.join(FEATURE_NAMES)}")
        if len(set(v)) != len(v):
            raise ValueError("feature names must be unique")
        return v

    @model_validator(mode="after")
    def _windows_fit(self) -> FeatureSettings:
        longest = max(self.view_windows_h[-1], self.repeat_window_h, self.distinct_window_h)
        if self.dedup_horizon_h < longest:
            raise ValueError(f"dedup_horizon_h must be >= the longest window ({longest} h)")
        return self


PointsRule = tuple[float, float]


class ScoringSettings(_Section):
    prior_intercept: float = Field(-3.0, ge=-10, le=10)
    prior_logit_per_point: float = Field(0.055, gt=0, le=1)
    learning_rate: float = Field(0.005, gt=0, le=1)
    max_snapshots: int = Field(64, ge=1, le=1_000)
    label_horizon_d: float = Field(30, gt=0)
    reasons: int = Field(3, ge=1, le=10)
    segments: tuple[Literal["all", "buyer", "seller"], ...] = Field(("all",), min_length=1)
    trainer_process: int = Field(0, ge=0)
    publish_every_labels: int = Field(50, ge=1)
    publish_every_s: float = Field(30, gt=0)
    model_check_s: float = Field(1.0, gt=0, le=3_600)
    checkpoint_every_s: float = Field(30, ge=0)
    model: Literal["logistic", "forest"] = "logistic"
    evidence_window: int = Field(500, ge=20, le=100_000)
    points: dict[str, PointsRule]
    timeline_points: dict[Literal["0-3m", "3-6m", "6-18m", "18m+", "unknown"], float]
    source_points: dict[str, float]

    @field_validator("points")
    @classmethod
    def _points_known(cls, v: dict[str, PointsRule]) -> dict[str, PointsRule]:
        from features.definitions import PRIOR_SIGNALS

        for name, (each, cap) in v.items():
            _refuse_protected(f"scoring.points.{name}", name)
            if name not in PRIOR_SIGNALS:
                raise ValueError(f"unknown signal {name!r}; allowed: {', '.join(PRIOR_SIGNALS)}")
            if each * cap < 0 or abs(cap) < abs(each):
                raise ValueError(f"{name}: cap {cap} must have the sign of {each} and be >= it")
        return v

    @field_validator("segments")
    @classmethod
    def _segments(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v) or ("all" in v and len(v) > 1):
            raise ValueError('use ["all"] or a set of ["buyer", "seller"]')
        return v

    @field_validator("source_points")
    @classmethod
    def _sources_known(cls, v: dict[str, float]) -> dict[str, float]:
        from engine.events import SOURCES

        _members(v, SOURCES, "source")
        return v


class BucketSettings(_Section):
    p1: int = Field(90, ge=1, le=100)
    p2: int = Field(70, ge=1, le=100)
    p3: int = Field(50, ge=1, le=100)
    hand_raise_p1_h: float = Field(24, ge=0, le=720)

    @model_validator(mode="after")
    def _ordered(self) -> BucketSettings:
        if not self.p1 > self.p2 > self.p3:
            raise ValueError("bucket floors must satisfy p1 > p2 > p3")
        return self


class TierSettings(_Section):
    hot_timelines: tuple[str, ...] = ("0-3m", "3-6m")
    warm_timelines: tuple[str, ...] = ("6-18m",)
    long_term_timelines: tuple[str, ...] = ("18m+",)
    hot_sources: tuple[str, ...] = ()
    warm_sources: tuple[str, ...] = ()

    @field_validator("hot_timelines", "warm_timelines", "long_term_timelines")
    @classmethod
    def _timelines(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from engine.events import TIMELINES

        _members(v, TIMELINES, "timeline")
        return v

    @field_validator("hot_sources", "warm_sources")
    @classmethod
    def _sources(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from engine.events import SOURCES

        _members(v, SOURCES, "source")
        return v


Channel = Literal["call", "sms", "email", "chat"]


class SlaRule(_Section):
    minutes: float = Field(gt=0, le=10_080)
    after_hours_minutes: float | None = Field(None, gt=0, le=10_080)
    next_morning_h: int | None = Field(None, ge=0, le=23)
    first_touch: tuple[Channel, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_after_hours_rule(self) -> SlaRule:
        if (self.after_hours_minutes is None) == (self.next_morning_h is None):
            raise ValueError("set exactly one of after_hours_minutes or next_morning_h")
        return self


class AlertSettings(_Section):
    enter_buckets: tuple[Literal["P1", "P2", "P3"], ...] = ("P1", "P2")
    jump_points: float = Field(15, gt=0, le=100)
    jump_window_h: float = Field(24, gt=0)
    jump_min_score: float = Field(50, ge=0, le=100)
    cooldown_min: float = Field(60, ge=0)
    hand_raise_types: tuple[str, ...] = ()
    timezone: str = "America/New_York"
    business_open_h: int = Field(8, ge=0, le=23)
    business_close_h: int = Field(20, ge=1, le=24)
    quiet_start_h: int = Field(21, ge=0, le=23)
    quiet_end_h: int = Field(8, ge=0, le=23)
    sla: dict[str, SlaRule]

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {v!r}") from exc
        return v

    @field_validator("hand_raise_types")
    @classmethod
    def _hand_raises(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from engine.events import HAND_RAISE_TYPES

        _members(v, HAND_RAISE_TYPES, "hand-raise type")
        return v

    @field_validator("sla")
    @classmethod
    def _sla_rows(cls, v: dict[str, SlaRule]) -> dict[str, SlaRule]:
        from engine.events import EVENT_TYPES, SOURCES

        if "default" not in v:
            raise ValueError("needs a 'default' rule")
        for key in v:
            if key != "default" and key not in EVENT_TYPES and key not in SOURCES:
                raise ValueError(f"row {key!r} is neither an event type nor a source")
        return v

    @model_validator(mode="after")
    def _hours(self) -> AlertSettings:
        if self.business_open_h >= self.business_close_h:
            raise ValueError("business_open_h must be before business_close_h")
        return self


class MetricsSettings(_Section):
    port: int = Field(9464, ge=0, le=65_535)
    host: str = Field("127.0.0.1", min_length=1, max_length=253)  # `run` and `deliver` bind here


class FairHousingSettings(_Section):
    forbidden: tuple[str, ...] = ()


class ReportingSettings(_Section):
    """Brokerage reports (``engine/reporting``): per-tenant, per-day counters."""

    retention_d: int = Field(400, ge=1, le=3_650)  # a day's counters live this long after
    # their last write (and a lead's report mark after its last change)


_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_ORIGIN = re.compile(r"^https?://[^\s/]+$")


class ApiKeyEntry(_Section):
    """What one API key may do. The key itself is never in config: only its sha256."""

    tenant: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    #: server: back office, reads and writes all of its tenant; tracker: public browser key,
    #: appends browsing events only; agent: one agent's hot-list key, sees and acts only as
    #: ``agent`` (see engine/gateway/auth.py)
    role: Literal["server", "tracker", "agent"] = "server"
    origins: tuple[str, ...] = ()  # tracker keys: page origins allowed to use it (empty: any)
    agent: str = Field("", pattern=r"^(|[A-Za-z0-9_.-]{1,64})$")  # agent keys: the agent id

    @field_validator("origins")
    @classmethod
    def _origins(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for origin in v:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(f"origin {origin!r} must look like https://example.com[:port]")
        return v

    @model_validator(mode="after")
    def _agent_bound(self) -> ApiKeyEntry:
        if self.role == "agent" and not self.agent:
            raise ValueError('an agent key must name its agent: agent = "<agent id>"')
        if self.role != "agent" and self.agent:
            raise ValueError(
                f"only agent keys name an agent; remove agent from this {self.role} key"
            )
        return self


class GatewaySettings(_Section):
    """The HTTP ingest gateway (``leadpulse serve``, ``engine/gateway``)."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65_535)
    max_events: int = Field(500, ge=1, le=10_000)
    max_body_bytes: int = Field(1_048_576, ge=1_024, le=67_108_864)
    idempotency_window_h: float = Field(6, gt=0, le=8_760)
    rate_per_s: float = Field(50, gt=0, le=100_000)
    rate_burst: int = Field(100, ge=1, le=1_000_000)
    tracker_rate_per_s: float = Field(2, gt=0, le=100_000)
    tracker_burst: int = Field(30, ge=1, le=1_000_000)
    hotlist_max: int = Field(100, ge=1, le=1_000)
    contact_hash_key: SecretStr = SecretStr("")
    default_country_code: str = Field("1", pattern=r"^[1-9][0-9]{0,2}$")
    cors_origins: tuple[str, ...] = ()  # POST /v1/events is open to every page regardless
    forwarded_allow_ips: str = "127.0.0.1"
    body_timeout_s: float = Field(10, gt=0, le=600)
    header_timeout_s: float = Field(10, gt=0, le=600)
    sse_max_per_key: int = Field(20, ge=1, le=100_000)
    sse_max_streams: int = Field(2_000, ge=1, le=1_000_000)
    api_keys: dict[str, ApiKeyEntry] = Field(default_factory=dict)

    @field_validator("contact_hash_key")
    @classmethod
    def _secret_long_enough(cls, v: SecretStr) -> SecretStr:
        if v.get_secret_value() and len(v.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (or empty: `serve` then refuses)")
        return v

    @field_validator("api_keys")
    @classmethod
    def _hashed_keys(cls, v: dict[str, ApiKeyEntry]) -> dict[str, ApiKeyEntry]:
        for digest in v:
            if not _SHA256_HEX.fullmatch(digest):
                raise ValueError(
                    "keys must be the sha256 hex digest of the API key (64 lowercase hex "
                    "characters), never the key itself; `leadpulse serve --new-key TENANT` "
                    "prints one"
                )
        return v

    @field_validator("cors_origins")
    @classmethod
    def _cors(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for origin in v:
            if origin == "*":
                raise ValueError(
                    "'*' is not allowed: the tracker's POST /v1/events answers every origin "
                    "anyway; list the origins of pages that call the other routes"
                )
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(f"origin {origin!r} must look like https://example.com")
        return v


_IDENT = r"^[A-Za-z0-9_.-]{1,64}$"
POND = "pond"


class AgentDelivery(_Section):
    """One agent's own delivery endpoint (optional; alerts always reach the tenant's)."""

    webhook_url: str = ""

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v)


class RoutingRule(_Section):
    """Who gets a lead: the first rule whose every condition matches names the group.

    Empty conditions match anything; ``price_max = 0`` means no upper bound.
    """

    group: str = Field(pattern=_IDENT)
    sides: tuple[Literal["buyer", "seller", "both", "unknown"], ...] = ()
    areas: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    buckets: tuple[Literal["P1", "P2", "P3", "P4", "P5"], ...] = ()
    price_min: float = Field(0, ge=0)
    price_max: float = Field(0, ge=0)
    first_to_claim: bool = False

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from engine.events import SOURCES

        _members(v, SOURCES, "source")
        return v

    @model_validator(mode="after")
    def _band(self) -> RoutingRule:
        if self.price_max and self.price_max < self.price_min:
            raise ValueError("price_max must be 0 (no bound) or >= price_min")
        return self


class TenantDelivery(_Section):
    """Delivery, routing and local hours of one tenant (brokerage / team).

    Checks that need two fields live on the later field, so an error message never
    quotes the secret (errors quote the offending input).
    """

    secret: SecretStr = SecretStr("")
    webhook_url: str = ""
    timezone: str | None = None
    business_open_h: int | None = Field(default=None, ge=0, le=23)
    business_close_h: int | None = Field(default=None, ge=1, le=24)
    quiet_start_h: int | None = Field(default=None, ge=0, le=23)
    quiet_end_h: int | None = Field(default=None, ge=0, le=23)
    groups: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    rules: tuple[RoutingRule, ...] = ()
    default_group: str = POND
    escalation: tuple[Literal["next_agent", "pond"], ...] = ("next_agent", "pond")
    agents: dict[str, AgentDelivery] = Field(default_factory=dict)
    targets: dict[str, TargetSettings] = Field(default_factory=dict)  # CRM write-back, chat

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, v: str, info: ValidationInfo) -> str:
        _needs_secret(bool(v), info)
        return _http_url(v)

    @field_validator("agents")
    @classmethod
    def _agent_hooks(cls, v: dict[str, AgentDelivery], info: ValidationInfo) -> dict[str, Any]:
        _needs_secret(any(a.webhook_url for a in v.values()), info)
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown IANA time zone {v!r}") from exc
        return v

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for group, agents in v.items():
            if group == POND or not re.fullmatch(_IDENT, group):
                raise ValueError(f"group {group!r}: use [A-Za-z0-9_.-], and not {POND!r}")
            if not agents or len(set(agents)) != len(agents):
                raise ValueError(f"group {group!r} needs distinct agent ids")
            for agent in agents:
                if not re.fullmatch(_IDENT, agent):
                    raise ValueError(f"group {group!r}: bad agent id {agent!r}")
        return v

    @field_validator("rules")
    @classmethod
    def _rule_groups(
        cls, v: tuple[RoutingRule, ...], info: ValidationInfo
    ) -> tuple[RoutingRule, ...]:
        known = set(info.data.get("groups", {})) | {POND}
        for i, rule in enumerate(v):
            if rule.group not in known:
                raise ValueError(f"rules[{i}].group {rule.group!r} is not in groups")
        return v

    @field_validator("default_group")
    @classmethod
    def _default_group(cls, v: str, info: ValidationInfo) -> str:
        if v not in set(info.data.get("groups", {})) | {POND}:
            raise ValueError(f"default_group {v!r} is not in groups")
        return v


def _needs_secret(hooked: bool, info: ValidationInfo) -> None:
    secret = info.data.get("secret")
    if hooked and (secret is None or len(secret.get_secret_value()) < 16):
        raise ValueError("a webhook needs the tenant's secret (HMAC key, >= 16 characters)")


class DeliverySettings(_Section):
    """Alert delivery (``engine/delivery``): consumer, webhooks, SSE, SLA clocks, tenants."""

    consumer_group: str = Field("delivery", pattern=_IDENT)
    read_count: int = Field(100, ge=1, le=10_000)
    block_ms: int = Field(100, ge=1, le=5_000)
    events_poll_ms: int = Field(50, ge=1, le=5_000)
    tick_ms: int = Field(250, ge=10, le=60_000)
    reclaim_idle_s: float = Field(60, gt=0)
    skip_older_than_s: float = Field(86_400, gt=0)
    max_attempts: int = Field(12, ge=1, le=100)  # 2.5-5 min of failures (backoff below)
    backoff_base_s: float = Field(0.5, gt=0, le=600)
    backoff_cap_s: float = Field(60, gt=0, le=86_400)
    timeout_s: float = Field(5, gt=0, le=120)
    max_in_flight: int = Field(64, ge=1, le=10_000)
    receipt_ttl_d: float = Field(7, gt=0)
    dead_letter_maxlen: int = Field(100_000, ge=100)
    feed_maxlen: int = Field(10_000, ge=100)
    sse_keepalive_s: float = Field(15, gt=0, le=300)
    claim_timeout_s: float = Field(120, gt=0)
    report_keep: int = Field(1_000, ge=10, le=1_000_000)
    page_limit: int = Field(200, ge=1, le=10_000)
    metrics_port: int = Field(9474, ge=0, le=65_535)
    tenants: dict[str, TenantDelivery] = Field(default_factory=dict)

    @field_validator("tenants")
    @classmethod
    def _tenant_ids(cls, v: dict[str, TenantDelivery]) -> dict[str, TenantDelivery]:
        for tenant in v:
            if not re.fullmatch(_IDENT, tenant):
                raise ValueError(f"tenant {tenant!r} must match [A-Za-z0-9_.-]{{1,64}}")
        return v

    @model_validator(mode="after")
    def _backoff(self) -> DeliverySettings:
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("backoff_cap_s must be >= backoff_base_s")
        return self

    def tenant(self, tenant: str) -> TenantDelivery:
        """A tenant's settings; a tenant not configured gets no webhook and the pond."""
        return self.tenants.get(tenant) or _NO_TENANT


def _http_url(v: str) -> str:
    if v and not re.match(r"^https?://[^\s/]+", v):
        raise ValueError("must be an http:// or https:// URL (or empty)")
    return v


_NO_TENANT = TenantDelivery.model_validate({})


def _default_delivery() -> DeliverySettings:
    return DeliverySettings.model_validate({})


class Settings(_Section):
    """Everything tunable. Frozen: pass it around, never mutate it."""

    redis: RedisSettings
    streams: StreamSettings
    validation: ValidationSettings
    features: FeatureSettings
    scoring: ScoringSettings
    buckets: BucketSettings
    tiers: TierSettings
    alerts: AlertSettings
    metrics: MetricsSettings
    fair_housing: FairHousingSettings
    delivery: DeliverySettings = Field(default_factory=_default_delivery)
    gateway: GatewaySettings = Field(default_factory=lambda: GatewaySettings.model_validate({}))
    reporting: ReportingSettings = Field(
        default_factory=lambda: ReportingSettings.model_validate({})
    )
    cadence: CadenceSettings = Field(default_factory=lambda: CadenceSettings.model_validate({}))

    def redis_url(self) -> str:
        """``REDIS_URL`` from the environment, else ``redis.url`` (config file or
        ``LEADPULSE__REDIS__URL``); empty means: use the embedded server. The environment
        wins so one config file can serve hosts with different servers."""
        return os.environ.get("REDIS_URL", "") or self.redis.url


def _refuse_protected(where: str, name: str, extra: tuple[str, ...] = ()) -> None:
    tokens = set(re.split(r"[^a-z]+", name.lower())) | {name.lower()}
    for term in PROTECTED_TERMS + extra:
        if term in tokens or term == name.lower():
            raise ForbiddenFeatureError(
                f"{where}: {term!r} is a protected characteristic or proxy and can never be "
                "a feature (Fair Housing Act)"
            )


def _walk_keys(data: Mapping[str, Any], path: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        out.append((where, key))
        if isinstance(value, Mapping):
            out.extend(_walk_keys(value, where))
    return out


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge; an SLA row (a table with ``minutes``) is replaced whole, not merged."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and "minutes" in value:
            merged[key] = dict(value)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            raise ConfigError(f"{name}: empty setting path")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_env_value(raw)
    return out


#: Settings whose values may be secrets (an HMAC key, an API key pasted in place of its
#: digest, credentials in a URL): errors name them but never echo what was given.
_SECRET_PARTS = frozenset(
    {"secret", "contact_hash_key", "api_keys", "url", "webhook_url", "system_key", "targets"}
)


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown setting")
        elif _SECRET_PARTS.intersection(str(p) for p in e["loc"]):
            lines.append(f"{key}: {e['msg']} (value not shown: it may be a secret)")
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return "invalid configuration: " + "; ".join(lines)


def load_settings(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults <- file (``path`` or ``LEADPULSE_CONFIG``) <- env <- ``overrides``."""
    environ = os.environ if environ is None else environ
    data = tomllib.loads(DEFAULT_CONFIG_PATH.read_text())
    path = path or environ.get("LEADPULSE_CONFIG") or None
    if path:
        try:
            data = _merge(data, tomllib.loads(Path(path).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    data = _merge(data, _env_overrides(environ))
    if overrides:
        data = _merge(data, overrides)
    extra = tuple(t.lower() for t in data.get("fair_housing", {}).get("forbidden", ()))
    for where, key in _walk_keys(data):
        if not where.startswith("fair_housing"):
            _refuse_protected(where, key, extra)
    for name in data.get("features", {}).get("profile", ()) or ():
        if isinstance(name, str):  # declared profile fields are values, not keys
            _refuse_protected(f"features.profile: {name}", name.split(".", 1)[-1], extra)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        forbidden = [e for e in exc.errors() if "protected characteristic" in str(e.get("msg"))]
        if forbidden:
            raise ForbiddenFeatureError(_format_error(exc)) from None
        raise ConfigError(_format_error(exc)) from None
