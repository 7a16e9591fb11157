"""One error root, a small tree, and every module's ``__all__`` naming only what exists."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType
from typing import Any

import pytest

import engine
import features
from engine import errors
from engine.errors import (
    ConfigError,
    EmbeddedServerError,
    ForbiddenFeatureError,
    InvalidEventError,
    LeadpulseError,
    StoreError,
)

MODULE_NAMES = sorted(
    f"{pkg.__name__}.{info.name}"
    for pkg in (engine, features)
    for info in pkgutil.iter_modules(pkg.__path__)
    if not info.ispkg
)


def module(name: str) -> ModuleType:
    return importlib.import_module(name)


def test_every_engine_and_features_module_is_found() -> None:
    for expected in ("engine.errors", "engine.validate", "engine.settings", "features.definitions"):
        assert expected in MODULE_NAMES


def test_the_error_tree() -> None:
    assert issubclass(ConfigError, LeadpulseError) and issubclass(ConfigError, ValueError)
    assert issubclass(ForbiddenFeatureError, ConfigError)
    assert issubclass(InvalidEventError, LeadpulseError) and issubclass(
        InvalidEventError, ValueError
    )
    assert issubclass(StoreError, LeadpulseError) and not issubclass(StoreError, ValueError)
    assert issubclass(EmbeddedServerError, StoreError)
    assert LeadpulseError.__bases__ == (Exception,)


def test_errors_does_not_shadow_builtins() -> None:
    import builtins

    for name in errors.__all__:
        assert not hasattr(builtins, name), name


def test_invalid_event_error_carries_its_reason() -> None:
    err = InvalidEventError("missing_field:ts")
    assert err.reason == "missing_field:ts"
    assert str(err) == "missing_field:ts"
    with pytest.raises(LeadpulseError):
        raise err


def test_errors_all_lists_every_error_class() -> None:
    defined = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == errors.__name__
    }
    assert defined == set(errors.__all__)


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_every_public_error_subclasses_the_root(name: str) -> None:
    mod = module(name)
    for attr, obj in vars(mod).items():
        if attr.startswith("_") or not inspect.isclass(obj) or obj.__module__ != mod.__name__:
            continue
        if issubclass(obj, BaseException):
            assert issubclass(obj, LeadpulseError), f"{name}.{attr} is not a LeadpulseError"


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_all_names_only_things_that_exist(name: str) -> None:
    mod = module(name)
    names = getattr(mod, "__all__", None)
    assert names is not None, f"{name} has no __all__"
    assert all(isinstance(n, str) for n in names)
    assert len(names) == len(set(names)), f"{name}.__all__ has duplicates"
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"
    assert not [n for n in names if n.startswith("_")], f"{name}.__all__ exports private names"


def test_a_leadpulse_error_inside_the_dataflow_surfaces_as_itself(
    client: Any, make_settings: Any, monkeypatch: Any
) -> None:
    """Bytewax wraps step errors in its own; the CLI must see ours (one line, exit 2)."""
    from engine.app import build_parts
    from engine.dataflow import build_flow, run_flow
    from engine.errors import StoreError
    from engine.streams import Producer

    settings = make_settings(streams={"partitions": 1})
    parts = build_parts(settings, client)
    Producer(client, parts.names, 0).send(
        [{"event_id": "e1", "lead_id": "L1", "type": "page_view", "ts": 1_767_225_600.0}]
    )

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("Redis unreachable at shutdown; the batch stays uncommitted")

    monkeypatch.setattr(parts.processor, "process_retrying", fail)
    with pytest.raises(StoreError, match="stays uncommitted"):
        run_flow(build_flow(parts, bounded=True))
