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
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import ConfigError, ForbiddenFeatureError
from features.definitions import FEATURE_NAMES, PROTECTED_TERMS

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AlertSettings",
    "FeatureSettings",
    "ScoringSettings",
    "Settings",
    "SlaRule",
    "ValidationSettings",
    "load_settings",
]

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "default.toml"
ENV_PREFIX = "LEADPULSE__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisSettings(_Section):
    url: str = ""
    key_prefix: str = Field("lp", pattern=r"^[a-z][a-z0-9_]{0,15}$")
    socket_timeout_s: float = Field(5.0, gt=0, le=120)
    retries: int = Field(6, ge=0, le=50)


class StreamSettings(_Section):
    partitions: int = Field(4, ge=1, le=1024)
    read_count: int = Field(500, ge=1, le=10_000)
    idle_poll_ms: int = Field(20, ge=1, le=5_000)
    maxlen: int = Field(1_000_000, ge=1_000)
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
    idle_expire_d: float = Field(120, gt=0)
    names: tuple[str, ...]

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
    min_labels: int = Field(200, ge=1)
    learning_rate: float = Field(0.05, gt=0, le=1)
    snapshot_every_h: float = Field(1, gt=0)
    max_snapshots: int = Field(24, ge=1, le=1_000)
    label_horizon_d: float = Field(30, gt=0)
    reasons: int = Field(3, ge=1, le=10)
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

    @field_validator("source_points")
    @classmethod
    def _sources_known(cls, v: dict[str, float]) -> dict[str, float]:
        from engine.events import SOURCES

        for name in v:
            if name not in SOURCES:
                raise ValueError(f"unknown source {name!r}; allowed: {', '.join(sorted(SOURCES))}")
        return v


class BucketSettings(_Section):
    p1: int = Field(90, ge=1, le=100)
    p2: int = Field(70, ge=1, le=100)
    p3: int = Field(50, ge=1, le=100)

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

        for t in v:
            if t not in TIMELINES:
                raise ValueError(f"unknown timeline {t!r}; allowed: {', '.join(sorted(TIMELINES))}")
        return v

    @field_validator("hot_sources", "warm_sources")
    @classmethod
    def _sources(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from engine.events import SOURCES

        for t in v:
            if t not in SOURCES:
                raise ValueError(f"unknown source {t!r}; allowed: {', '.join(sorted(SOURCES))}")
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

        for t in v:
            if t not in HAND_RAISE_TYPES:
                raise ValueError(f"{t!r} is not a hand-raise type ({', '.join(HAND_RAISE_TYPES)})")
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


class FairHousingSettings(_Section):
    forbidden: tuple[str, ...] = ()


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

    def redis_url(self) -> str:
        """The configured URL, else ``REDIS_URL``; empty means: use the embedded server."""
        return self.redis.url or os.environ.get("REDIS_URL", "")


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


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown setting")
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
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        forbidden = [e for e in exc.errors() if "protected characteristic" in str(e.get("msg"))]
        if forbidden:
            raise ForbiddenFeatureError(_format_error(exc)) from None
        raise ConfigError(_format_error(exc)) from None
