"""The one place where errors become OpenAI-shaped HTTP answers.

`openai_error` turns any exception into (HTTP status, `ErrorBody`): a `GatewayError` by its status
(the same statuses gRPC maps to codes in `serving/grpc/errors.py`), an `HttpError` raised by the
HTTP door itself (bad JSON, oversized body, unknown model), pydantic/FastAPI validation errors
(400, not FastAPI's 422), Starlette's own HTTP errors (unknown path, wrong method) and anything
unexpected (500 with a generic message, logged here, never a traceback). JSON answers and
mid-stream SSE error events both use it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import GatewayError, PayloadTooLarge, Status
from serving.http.openai_models import ErrorBody, ErrorResponse

log = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
STATUSES: dict[Status, tuple[int, str, str | None]] = {
    Status.INVALID_ARGUMENT: (400, INVALID_REQUEST, None),
    Status.NOT_FOUND: (404, "not_found_error", "not_found"),
    Status.RESOURCE_EXHAUSTED: (429, "rate_limit_error", "rate_limit_exceeded"),
    Status.UNAVAILABLE: (503, "service_unavailable_error", "unavailable"),
    Status.DEADLINE_EXCEEDED: (504, "timeout_error", "deadline_exceeded"),
    Status.CANCELLED: (499, "cancelled_error", "cancelled"),
    Status.UNAUTHENTICATED: (401, "authentication_error", "invalid_api_key"),
    Status.PERMISSION_DENIED: (403, "permission_error", "insufficient_scope"),
    Status.INTERNAL: (500, "server_error", None),
}
"""GatewayError status -> (HTTP status, OpenAI error type, error code); a `PayloadTooLarge` (input
over a size limit: RESOURCE_EXHAUSTED over gRPC) is 413 here."""
TOO_LARGE = (413, INVALID_REQUEST, "request_too_large")
INTERNAL_MESSAGE = "internal error (see the gateway's log)"


class HttpError(Exception):
    """An error found by the HTTP door itself, already in OpenAI's terms."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type_: str = INVALID_REQUEST,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(message=message, type=type_, param=param, code=code)


def _where(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def validation_error(errors: Sequence[Any]) -> HttpError:
    """A 400 naming the first offending field (request bodies are validated in code, so FastAPI's
    `loc` prefix "body" is dropped when present)."""
    first = dict(errors[0]) if errors else {"loc": (), "msg": "invalid request"}
    loc = [p for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "extra_forbidden":
        message = f"unrecognized request argument: {_where(loc)}"
    else:
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        message = f"{_where(loc)}: {message}" if loc else message
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    param = str(loc[0]) if loc else None
    return HttpError(400, message, param=param, code="invalid_value")


def openai_error(exc: BaseException) -> tuple[int, ErrorBody]:
    """The HTTP status and OpenAI error body for `exc`."""
    if isinstance(exc, HttpError):
        return exc.status, exc.body
    if isinstance(exc, GatewayError):
        internal = STATUSES[Status.INTERNAL]
        status, type_, code = (
            TOO_LARGE if isinstance(exc, PayloadTooLarge) else STATUSES.get(exc.status, internal)
        )
        if status != 500:
            return status, ErrorBody(message=exc.message, type=type_, code=code)
        log.error("internal error answering an HTTP request: %s", exc.message)
    elif isinstance(exc, ValidationError | RequestValidationError):
        return openai_error(validation_error(exc.errors()))
    elif isinstance(exc, StarletteHTTPException):
        type_ = "not_found_error" if exc.status_code == 404 else INVALID_REQUEST
        return exc.status_code, ErrorBody(message=str(exc.detail), type=type_)
    else:
        log.error("unexpected error in an HTTP handler", exc_info=exc)
    return 500, ErrorBody(message=INTERNAL_MESSAGE, type="server_error")


def render(payload: Any) -> bytes:
    """Compact UTF-8 JSON; falls back to ASCII escapes for text that is not valid Unicode."""
    try:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(payload, separators=(",", ":")).encode("ascii")


def error_payload(body: ErrorBody) -> dict[str, Any]:
    return ErrorResponse(error=body).model_dump()


def error_response(exc: BaseException) -> Response:
    status, body = openai_error(exc)
    headers = {"www-authenticate": "Bearer"} if status == 401 else None
    return Response(render(error_payload(body)), status, headers, media_type="application/json")


async def _handle(request: Request, exc: Exception) -> Response:
    return error_response(exc)


class CatchAll:
    """Outermost middleware: an exception no handler claimed becomes an OpenAI-shaped 500 (once
    the answer has started, e.g. mid-stream, it is only logged: the connection is dropped)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                log.error("HTTP answer failed after it started", exc_info=exc)
                return
            await error_response(exc)(scope, receive, send)


def install(app: FastAPI) -> None:
    """Routes every error of `app` through `openai_error`."""
    for cls in (HttpError, GatewayError, RequestValidationError, ValidationError, StarletteHTTPException):
        app.add_exception_handler(cls, _handle)
    app.add_middleware(CatchAll)
