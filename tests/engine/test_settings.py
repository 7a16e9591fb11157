"""Settings: defaults, override precedence, refusals that name the key, Fair Housing, frozen."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from engine.errors import ConfigError, ForbiddenFeatureError, LeadpulseError
from engine.settings import DEFAULT_CONFIG_PATH, Settings, load_settings

DEFAULT_TOML: dict[str, Any] = tomllib.loads(DEFAULT_CONFIG_PATH.read_text())


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "override.toml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- defaults


def test_defaults_load_and_match_default_toml() -> None:
    s = load_settings(environ={})
    assert isinstance(s, Settings)
    assert s.streams.partitions == DEFAULT_TOML["streams"]["partitions"] == 4
    assert s.alerts.jump_points == DEFAULT_TOML["alerts"]["jump_points"] == 15
    assert (s.buckets.p1, s.buckets.p2, s.buckets.p3) == (90, 70, 50)
    assert s.features.names == tuple(DEFAULT_TOML["features"]["names"])
    assert s.scoring.points["inquiries"] == (22.0, 44.0)
    assert s.scoring.evidence_window == DEFAULT_TOML["scoring"]["evidence_window"]
    assert s.alerts.timezone == "America/New_York"
    assert set(s.alerts.sla) == set(DEFAULT_TOML["alerts"]["sla"])
    assert s.alerts.sla["portal"].minutes == 5
    assert s.alerts.sla["portal"].after_hours_minutes == 15
    assert s.alerts.sla["valuation_request"].next_morning_h == 9
    assert s.alerts.sla["referral"].first_touch == ("call", "email")


def test_environ_empty_ignores_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADPULSE__ALERTS__JUMP_POINTS", "99")
    monkeypatch.setenv("LEADPULSE_CONFIG", "/nonexistent/leadpulse.toml")
    assert load_settings(environ={}).alerts.jump_points == 15


def test_default_fair_housing_list_covers_the_design_list() -> None:
    forbidden = set(load_settings(environ={}).fair_housing.forbidden)
    design = {
        "race", "color", "religion", "national_origin", "sex", "familial_status",
        "disability", "name", "language", "neighborhood_demographics",
    }  # fmt: skip
    assert design <= forbidden


# --------------------------------------------------------------------------- overrides


def test_override_file_changes_a_value(tmp_path: Path) -> None:
    path = write(tmp_path, "[alerts]\njump_points = 25\n[streams]\npartitions = 8\n")
    s = load_settings(path, environ={})
    assert s.alerts.jump_points == 25
    assert s.streams.partitions == 8
    assert s.alerts.cooldown_min == 60  # untouched keys keep their defaults


def test_override_file_from_leadpulse_config_env(tmp_path: Path) -> None:
    path = write(tmp_path, "[alerts]\njump_points = 30\n")
    assert load_settings(environ={"LEADPULSE_CONFIG": str(path)}).alerts.jump_points == 30


def test_unknown_key_in_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, "[alerts]\njump_pointz = 3\n")
    with pytest.raises(ConfigError, match=r"alerts\.jump_pointz"):
        load_settings(path, environ={})


def test_unknown_section_in_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "[alertz]\njump_points = 3\n")
    with pytest.raises(ConfigError, match=r"alertz"):
        load_settings(path, environ={})


def test_bad_value_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[streams]\npartitions = 0\n")
    with pytest.raises(ConfigError, match=r"streams\.partitions") as info:
        load_settings(path, environ={})
    assert not isinstance(info.value, ForbiddenFeatureError)


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[alerts]\njump_points = "lots"\n')
    with pytest.raises(ConfigError, match=r"alerts\.jump_points"):
        load_settings(path, environ={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[alerts\njump_points = \n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(path, environ={})


def test_env_override_works() -> None:
    s = load_settings(environ={"LEADPULSE__ALERTS__JUMP_POINTS": "20"})
    assert s.alerts.jump_points == 20


def test_env_override_parses_toml_values_and_falls_back_to_strings() -> None:
    s = load_settings(
        environ={
            "LEADPULSE__ALERTS__TIMEZONE": "Europe/London",  # not TOML: taken as a string
            "LEADPULSE__ALERTS__ENTER_BUCKETS": '["P1"]',
            "LEADPULSE__SCORING__LEARNING_RATE": "0.1",
            "UNRELATED__ALERTS__JUMP_POINTS": "1",
        }
    )
    assert s.alerts.timezone == "Europe/London"
    assert s.alerts.enter_buckets == ("P1",)
    assert s.scoring.learning_rate == pytest.approx(0.1)
    assert s.alerts.jump_points == 15


def test_unknown_env_key_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"alerts\.jump_pointz"):
        load_settings(environ={"LEADPULSE__ALERTS__JUMP_POINTZ": "20"})


def test_bad_env_value_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"streams\.partitions"):
        load_settings(environ={"LEADPULSE__STREAMS__PARTITIONS": "0"})


def test_empty_env_path_is_refused() -> None:
    with pytest.raises(ConfigError):
        load_settings(environ={"LEADPULSE__": "1"})


def test_precedence_defaults_file_env_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "[alerts]\njump_points = 20\njump_min_score = 40\ncooldown_min = 5\n")
    env = {"LEADPULSE__ALERTS__JUMP_POINTS": "25", "LEADPULSE__ALERTS__JUMP_MIN_SCORE": "45"}
    s = load_settings(path, overrides={"alerts": {"jump_points": 30}}, environ=env)
    assert s.alerts.jump_points == 30  # overrides beat env
    assert s.alerts.jump_min_score == 45  # env beats file
    assert s.alerts.cooldown_min == 5  # file beats defaults
    assert s.alerts.jump_window_h == 24  # defaults


# --------------------------------------------------------------------------- Fair Housing


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        ({"features": {"names": ["views_7d", "race"]}}, "race"),
        ({"features": {"names": ["views_7d", "first_name"]}}, "first_name"),
        ({"features": {"names": ["language"]}}, "language"),
        ({"scoring": {"points": {"religion": [1, 2]}}}, r"scoring\.points\.religion"),
        ({"scoring": {"points": {"Race": [1, 2]}}}, r"scoring\.points\.Race"),
        ({"scoring": {"points": {"familial_status": [1, 2]}}}, "familial_status"),
        ({"alerts": {"neighborhood_demographics": 1}}, r"alerts\.neighborhood_demographics"),
        ({"redis": {"first_name": "x"}}, r"redis\.first_name"),
        ({"language": {"x": 1}}, "language"),
        ({"alerts": {"sla": {"religion": {"minutes": 5}}}}, r"alerts\.sla\.religion"),
    ],
)
def test_protected_characteristic_in_config_is_forbidden(
    overrides: dict[str, Any], where: str
) -> None:
    with pytest.raises(ForbiddenFeatureError, match=where) as info:
        load_settings(overrides=overrides, environ={})
    assert isinstance(info.value, ConfigError)
    assert "Fair Housing" in str(info.value)


def test_protected_feature_name_from_env_is_forbidden() -> None:
    with pytest.raises(ForbiddenFeatureError, match="language"):
        load_settings(environ={"LEADPULSE__FEATURES__NAMES": '["views_7d", "language"]'})


def test_protected_key_from_env_is_forbidden() -> None:
    with pytest.raises(ForbiddenFeatureError, match=r"alerts\.religion"):
        load_settings(environ={"LEADPULSE__ALERTS__RELIGION": "1"})


def test_protected_key_in_file_is_forbidden(tmp_path: Path) -> None:
    path = write(tmp_path, "[scoring.points]\nneighborhood_demographics = [1, 2]\n")
    with pytest.raises(ForbiddenFeatureError, match="neighborhood_demographics"):
        load_settings(path, environ={})


def test_fair_housing_forbidden_list_extends_the_refusal() -> None:
    overrides = {"fair_housing": {"forbidden": ["zipcode"]}, "alerts": {"zipcode": 1}}
    with pytest.raises(ForbiddenFeatureError, match=r"alerts\.zipcode"):
        load_settings(overrides=overrides, environ={})


def test_non_protected_unknown_feature_is_a_plain_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown feature") as info:
        load_settings(overrides={"features": {"names": ["views_7d", "vibes"]}}, environ={})
    assert not isinstance(info.value, ForbiddenFeatureError)


# --------------------------------------------------------------------------- frozen


def test_settings_are_frozen() -> None:
    s = load_settings(environ={})
    with pytest.raises(ValidationError):
        s.alerts.jump_points = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        s.alerts = s.alerts  # type: ignore[misc]
    with pytest.raises(ValidationError):
        s.alerts.sla["portal"].minutes = 1  # type: ignore[misc]
    assert s.alerts.jump_points == 15


def test_settings_model_refuses_unknown_keys_directly() -> None:
    data = {**DEFAULT_TOML, "extra_section": {}}
    with pytest.raises(ValidationError):
        Settings.model_validate(data)


# --------------------------------------------------------------------------- value rules


def test_bad_timezone_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"alerts\.timezone.*Mars/Olympus"):
        load_settings(overrides={"alerts": {"timezone": "Mars/Olympus"}}, environ={})


def test_good_timezone_is_accepted() -> None:
    s = load_settings(overrides={"alerts": {"timezone": "Europe/Berlin"}}, environ={})
    assert s.alerts.timezone == "Europe/Berlin"


@pytest.mark.parametrize(
    "row",
    [
        {"minutes": 5, "first_touch": ["call"]},  # neither after-hours rule
        {"minutes": 5, "after_hours_minutes": 15, "next_morning_h": 9, "first_touch": ["call"]},
    ],
)
def test_sla_rule_needs_exactly_one_after_hours_rule(row: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"alerts\.sla\.website.*exactly one"):
        load_settings(overrides={"alerts": {"sla": {"website": row}}}, environ={})


def test_sla_rule_with_one_after_hours_rule_is_accepted() -> None:
    row = {"minutes": 10, "next_morning_h": 8, "first_touch": ["email"]}
    s = load_settings(overrides={"alerts": {"sla": {"website": row}}}, environ={})
    assert s.alerts.sla["website"].next_morning_h == 8
    assert s.alerts.sla["website"].after_hours_minutes is None


def test_sla_override_file_adding_second_after_hours_rule_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "[alerts.sla.portal]\nnext_morning_h = 9\n")
    with pytest.raises(ConfigError, match=r"alerts\.sla\.portal"):
        load_settings(path, environ={})


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"alerts": {"sla": {"website": {"minutes": 5, "next_morning_h": 9}}}}, "first_touch"),
        (
            {
                "alerts": {
                    "sla": {"website": {"minutes": 5, "next_morning_h": 9, "first_touch": []}}
                }
            },
            "first_touch",
        ),
        (
            {"alerts": {"sla": {"x": {"minutes": 5, "next_morning_h": 9, "first_touch": ["fax"]}}}},
            "first_touch",
        ),
        ({"features": {"view_windows_h": [168, 24, 720]}}, r"features\.view_windows_h"),
        ({"features": {"dedup_horizon_h": 24}}, "dedup_horizon_h"),
        ({"features": {"names": ["views_7d", "views_7d"]}}, "unique"),
        ({"scoring": {"points": {"saves": [8, 4]}}}, r"scoring\.points"),
        ({"scoring": {"points": {"saves": [8, -16]}}}, r"scoring\.points"),
        ({"scoring": {"points": {"vibes": [1, 2]}}}, "unknown signal"),
        ({"scoring": {"source_points": {"zillow": 3}}}, "unknown source"),
        ({"scoring": {"timeline_points": {"soon": 3}}}, r"scoring\.timeline_points"),
        ({"buckets": {"p1": 60}}, "p1 > p2 > p3"),
        ({"alerts": {"hand_raise_types": ["property_view"]}}, "hand-raise"),
        ({"alerts": {"enter_buckets": ["P5"]}}, r"alerts\.enter_buckets"),
        ({"alerts": {"business_open_h": 20, "business_close_h": 8}}, "business_open_h"),
        ({"redis": {"key_prefix": "Bad-Prefix"}}, r"redis\.key_prefix"),
        ({"validation": {"max_id_len": 4}}, r"validation\.max_id_len"),
    ],
)
def test_bad_values_are_refused_naming_what(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_settings(overrides=overrides, environ={})


def test_config_error_is_a_leadpulse_value_error() -> None:
    with pytest.raises(LeadpulseError):
        load_settings(overrides={"streams": {"partitions": -1}}, environ={})
    with pytest.raises(ValueError):
        load_settings(overrides={"streams": {"partitions": -1}}, environ={})


# --------------------------------------------------------------------------- known bugs


@pytest.mark.parametrize(
    "overrides",
    [
        {"tiers": {"warm_sources": ["portl"]}},
        {"tiers": {"hot_timelines": ["0-3 months"]}},
    ],
)
def test_tier_typos_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"tiers\."):
        load_settings(overrides=overrides, environ={})


def test_sla_row_with_unknown_key_is_refused() -> None:
    row = {"minutes": 5, "after_hours_minutes": 15, "first_touch": ["call"]}
    with pytest.raises(ConfigError, match=r"alerts\.sla"):
        load_settings(overrides={"alerts": {"sla": {"portl": row}}}, environ={})


@pytest.mark.parametrize(
    "overrides, secret",
    [
        ({"gateway": {"contact_hash_key": "short-but-secret-AAAA"}}, "short-but-secret-AAAA"),
        (  # an API key pasted where its sha256 digest belongs
            {"gateway": {"api_keys": {"lpk_live_pasted_key_0123": {"tenant": "a"}}}},
            "lpk_live_pasted_key_0123",
        ),
        (  # credentials in a URL
            {
                "delivery": {
                    "tenants": {"acme": {"webhook_url": "ftp://u:pw-XYZ@h", "secret": "s" * 16}}
                }
            },
            "pw-XYZ",
        ),
        (
            {"delivery": {"tenants": {"acme": {"webhook_url": "https://h", "secret": "short-s3"}}}},
            "short-s3",
        ),
    ],
)
def test_errors_name_a_secret_setting_but_never_echo_it(
    overrides: dict[str, Any], secret: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(overrides=overrides, environ={})
    assert secret not in str(exc.value)
    assert "value not shown" in str(exc.value)
    section = next(iter(overrides))
    assert str(exc.value).startswith(f"invalid configuration: {section}.")


@pytest.mark.parametrize("field", ["props.zip", "props.city", "props.gender", "props.first_name"])
def test_a_declared_profile_field_that_is_a_proxy_is_refused(field: str) -> None:
    with pytest.raises(ForbiddenFeatureError):
        load_settings(overrides={"features": {"profile": [field]}}, environ={})


def test_declared_profile_fields_reach_the_model_inputs() -> None:
    s = load_settings(overrides={"features": {"profile": ["props.origin"]}}, environ={})
    assert s.features.model_names[-1] == "props.origin"
    with pytest.raises(ConfigError):  # a builtin or a name that is not props.<key>
        load_settings(overrides={"features": {"profile": ["source"]}}, environ={})
