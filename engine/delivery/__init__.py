"""Alert delivery: the right agent sees each alert, knows why and what to say, in time.

::

    lp:alerts ──XREADGROUP──► consumer.py ── routing.py (who; "assigned" event) ──┐
                                 │           consent.py (blocked, and why)          │
                                 │           local.py   (tenant hours: deadline,    │
                                 │                       first touch)               │
                                 │           scripts.py (what to say)               │
                                 │           sla.py     (clock opens)               │
                                 ├──► feed.py (lp:dlv:feed:{t}) ──► sse.py ──► page.py (hot list)
                                 └──► webhooks.py (HMAC, retries, receipts, dead letter) ──► XACK
    lp:events:{p} ──own cursor──► agent_contact / alert_ack stop clocks; opt-outs, STOP, bounces
    tick: claim timeouts, SLA misses ──► escalation (next agent, pond) + re-alert

Start reading at ``consumer.py``. ``routers(settings, client)`` (``web.py``) gives the
FastAPI routers the gateway mounts (``api.py``, ``page.py``, ``sse.py``; who is asking:
``deps.py``); ``cli.py`` the ``leadpulse deliver`` command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["DeliveryService", "routers"]

if TYPE_CHECKING:
    from engine.delivery.consumer import DeliveryService


def __getattr__(name: str) -> Any:  # lazy: importing the package pulls in no web stack
    if name == "DeliveryService":
        from engine.delivery.consumer import DeliveryService

        return DeliveryService
    if name == "routers":
        from engine.delivery.web import routers

        return routers
    raise AttributeError(name)
