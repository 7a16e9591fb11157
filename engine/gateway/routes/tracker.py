"""``GET /tracker.js``: the IDX tracker script (``engine/gateway/tracker.js``), no key."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

__all__ = ["tracker_router"]


def tracker_router() -> APIRouter:
    router = APIRouter()
    script = resources.files("engine.gateway").joinpath("tracker.js").read_bytes()

    @router.get(
        "/tracker.js",
        summary="The IDX tracker script",
        response_class=Response,
        responses={200: {"content": {"application/javascript": {"schema": {"type": "string"}}}}},
    )
    async def tracker() -> Response:
        return Response(
            script,
            media_type="application/javascript",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    return router
