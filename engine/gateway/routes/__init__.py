"""The gateway's HTTP routes, one module per resource; ``engine.gateway.app.create_app``
builds the shared state and includes them.

- ``deps``      what every route shares: :class:`~engine.gateway.routes.deps.GatewayState`
                (``app.state.gateway``), the API-key dependencies (``reader``, ``writer``,
                ``manager``, ``current_tenant``, ``current_agent``: authenticate, origin,
                rate limit, role) and :class:`~engine.gateway.routes.deps.ApiError`
- ``errors``    one error shape everywhere: ``{"error": code, "detail": text}``
- ``events``    ``POST /v1/events`` (ingest)
- ``leads``     ``GET /v1/leads/{lead_id}``, ``GET /v1/hotlist``
- ``health``    ``GET /healthz``, ``GET /metrics``
- ``tracker``   ``GET /tracker.js``
- ``delivery``  alert delivery's routers (the hot-list page, board, SSE feed, claim / ack
                / contact, delivery reads) and the weekly report, keyed by the API key
"""
