"""What an installed wheel needs and how the Redis URL is chosen (issue 16, item 9).

The wheel itself is built, installed into a fresh venv and run by ``.ci/run``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import engine
from engine.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_carries_the_default_config() -> None:
    packaged = Path(engine.__file__).parent / "default.toml"
    assert packaged.read_bytes() == (ROOT / "config" / "default.toml").read_bytes()
    assert 'engine = ["default.toml"]' in (ROOT / "pyproject.toml").read_text()


def test_redis_url_from_the_environment_beats_the_config_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "leadpulse.toml"
    config.write_text('[redis]\nurl = "redis://from-file:6379/0"\n')
    settings = load_settings(config, environ={})
    monkeypatch.setenv("REDIS_URL", "redis://from-env:6379/1")
    assert settings.redis_url() == "redis://from-env:6379/1"
    monkeypatch.delenv("REDIS_URL")
    assert settings.redis_url() == "redis://from-file:6379/0"
    monkeypatch.setenv("REDIS_URL", "")  # set but empty: as if unset
    assert settings.redis_url() == "redis://from-file:6379/0"
    assert load_settings(environ={}).redis_url() == ""  # neither: the embedded server
