"""The HTTP ingest gateway and the IDX tracker (``leadpulse serve``).

IDX site ──HTTP (JSON / msgpack, API key)──► gateway ──XADD──► lp:events:{p}

Modules: ``app`` (the FastAPI app factory), ``routes`` (one module per resource,
shared key checks in ``routes.deps``), ``ingest`` (body -> checked,
scrubbed, packed events; validation is the engine's), ``auth`` (hashed API keys,
roles), ``ratelimit`` (GCRA per key), ``privacy`` (keyed hashes of emails and
phones), ``store`` (the only module that talks to Redis), ``metrics``
(Prometheus), ``models`` (HTTP shapes), ``cli`` (``serve``), ``tracker.js``.
"""

from __future__ import annotations

__all__ = ["create_app"]


def __getattr__(name: str) -> object:
    if name == "create_app":  # lazy: `leadpulse --help` need not import FastAPI
        from engine.gateway.app import create_app

        return create_app
    raise AttributeError(name)
