"""Operations: ``GET /healthz`` (Redis reachable, stream lag per partition; 503 when
Redis is down) and ``GET /metrics`` (Prometheus text). No key: for probes and scrapers.

No ``from __future__ import annotations``: FastAPI reads the routes' ``Annotated``
metadata at run time.
"""

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from engine.errors import StoreError
from engine.gateway.models import HealthOut, PartitionOut
from engine.gateway.routes.deps import GatewayState, state

__all__ = ["health_router"]


def health_router() -> APIRouter:
    router = APIRouter()

    @router.get(
        "/healthz",
        response_model=HealthOut,
        summary="Redis reachable, and stream lag per partition",
        responses={503: {"model": HealthOut, "description": "Redis unreachable"}},
    )
    async def healthz(g: Annotated[GatewayState, Depends(state)]) -> Response:
        try:
            lags = await g.store.stream_lag()
        except StoreError as exc:
            body = HealthOut(status="unavailable", redis=str(exc))
            return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "1"})
        parts = [
            PartitionOut(
                partition=p.partition, committed=p.committed, lag=p.lag, lag_capped=p.capped,
                oldest_age_s=p.oldest_age_s,
            )
            for p in lags
        ]  # fmt: skip
        body = HealthOut(status="ok", redis="ok", lag=sum(p.lag for p in lags), partitions=parts)
        return JSONResponse(body.model_dump())

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics_text(g: Annotated[GatewayState, Depends(state)]) -> Response:
        data, content_type = g.metrics.render()
        return Response(data, media_type=content_type)

    return router
