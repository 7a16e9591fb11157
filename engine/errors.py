"""The one error root of leadpulse, and its small tree.

::

    LeadpulseError
     +-- ConfigError (ValueError)         bad or unknown setting, named by key
     |    +-- ForbiddenFeatureError       a protected characteristic or proxy in config
     +-- InvalidEventError (ValueError)   an event that breaks contract v1 (has .reason)
     +-- StoreError                       Redis unreachable or refusing, after retries
     +-- EmbeddedServerError (StoreError) the embedded Valkey would not start

Bad input never raises out of the dataflow: the validator returns a rejection,
and only code that *wants* an exception (the gateway, tests) uses
``InvalidEventError``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "EmbeddedServerError",
    "ForbiddenFeatureError",
    "InvalidEventError",
    "LeadpulseError",
    "StoreError",
]


class LeadpulseError(Exception):
    """Root of every error leadpulse raises on purpose."""


class ConfigError(LeadpulseError, ValueError):
    """A setting is unknown or has a value outside what is allowed."""


class ForbiddenFeatureError(ConfigError):
    """Config names a protected characteristic or a proxy for one (Fair Housing)."""


class InvalidEventError(LeadpulseError, ValueError):
    """An event breaks contract v1; ``reason`` says how, in one stable phrase."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StoreError(LeadpulseError):
    """Redis could not be reached or refused a command after retries."""


class EmbeddedServerError(StoreError):
    """The embedded Valkey server could not be started."""
