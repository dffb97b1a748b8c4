"""API-key authentication of gRPC calls: one server interceptor in front of every handler.

Each method needs a scope (`METHOD_SCOPES`; admin methods need `admin`); health checks and
server reflection are open when the config says so. A refused call gets UNAUTHENTICATED or
PERMISSION_DENIED and never reaches a handler (so no engine). The caller's key name is put in
`CALLER` for the handlers' logs.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from serving.auth import ApiKey, Authenticator, Scope
from serving.errors import GatewayError
from serving.grpc.errors import CODES, SERVICE_PREFIX

log = logging.getLogger(__name__)

CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("driftgate_caller", default="anonymous")
ADMIN_METHODS = frozenset({"SetTraffic", "Promote"})
HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIX = "/grpc.reflection."


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, auth: Authenticator, open_health: bool = True, open_reflection: bool = True) -> None:
        self._auth = auth
        self._open = tuple(
            p
            for p, is_open in ((HEALTH_PREFIX, open_health), (REFLECTION_PREFIX, open_reflection))
            if is_open
        )

    def _scope(self, method: str) -> Scope | None:
        """The scope `method` needs (None: open to anyone)."""
        if method.startswith(self._open):
            return None
        if method.startswith(SERVICE_PREFIX) and method[len(SERVICE_PREFIX) :] in ADMIN_METHODS:
            return Scope.ADMIN
        return Scope.USER

    async def _check(self, context: grpc.aio.ServicerContext, method: str, needs: Scope) -> ApiKey | None:
        try:
            key = self._auth.authenticate(_authorization(context))
            self._auth.authorize(key, needs)
        except GatewayError as exc:
            log.info("refused %s: %s", method, exc.message)
            await context.abort(CODES[exc.status], exc.message)
        CALLER.set(key.name if key else "anonymous")
        return key

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        needs = self._scope(method)
        if handler is None or needs is None or not self._auth.enabled:
            return handler
        return _guarded(handler, lambda ctx: self._check(ctx, method, needs))


def _guarded(handler: grpc.RpcMethodHandler, check: Callable[[Any], Awaitable[Any]]) -> grpc.RpcMethodHandler:
    """The same handler, with `check(context)` awaited before the behaviour runs."""
    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            await check(context)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **kw)
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            await check(context)
            async for item in inner_us(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(unary_stream, **kw)
    if handler.stream_stream is not None:
        inner_ss = handler.stream_stream

        async def stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
            await check(context)
            async for item in inner_ss(requests, context):
                yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream, **kw)
    inner_su = handler.stream_unary

    async def stream_unary(requests: Any, context: Any) -> Any:
        await check(context)
        return await inner_su(requests, context)

    return grpc.stream_unary_rpc_method_handler(stream_unary, **kw)
