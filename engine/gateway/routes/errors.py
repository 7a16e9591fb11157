"""One error shape everywhere: ``{"error": code, "detail": text}``.

Redis trouble is a 503 with ``Retry-After``, never a 500; an unexpected exception is a
500 ``internal`` that names only the exception's class in the log (nothing the caller
sent is logged).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.errors import StoreError
from engine.gateway.ingest import BodyError
from engine.gateway.routes.deps import ApiError

__all__ = ["error", "install_error_handlers"]

log = logging.getLogger(__name__)

_HTTP_CODES = {403: "forbidden", 404: "not_found", 405: "method_not_allowed"}


def error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


async def _api_error(request: Request, exc: ApiError) -> Response:
    return error(exc.status, exc.code, exc.detail, exc.headers)


async def _body_error(request: Request, exc: BodyError) -> Response:
    return error(exc.status, exc.code, exc.detail)


async def _store_error(request: Request, exc: Exception) -> Response:
    log.warning("503: %s", exc)
    return error(503, "unavailable", str(exc), {"Retry-After": "1"})


async def _redis_down(request: Request, exc: Exception) -> Response:
    log.warning("503: Redis: %s", exc.__class__.__name__)  # delivery's sync reads
    return error(503, "unavailable", "Redis unavailable; retry", {"Retry-After": "1"})


async def _bad_request(request: Request, exc: RequestValidationError) -> Response:
    parts = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return error(422, "bad_request", "; ".join(parts) or "invalid request")


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))


async def _internal(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s: %s", request.url.path, exc.__class__.__name__)
    return error(500, "internal", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    handlers = (
        (ApiError, _api_error),
        (BodyError, _body_error),
        (StoreError, _store_error),
        (RedisConnectionError, _redis_down),
        (RedisTimeoutError, _redis_down),
        (RequestValidationError, _bad_request),
        (StarletteHTTPException, _http_error),
        (Exception, _internal),
    )
    for exc_class, handler in handlers:
        app.exception_handler(exc_class)(handler)
