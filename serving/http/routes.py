"""The OpenAI-compatible routes on a `Gateway`: the HTTP request becomes a `GenerateCall`, the
gateway answers it exactly as it answers gRPC (routing, mirroring, validation, limits), and the
reply is shaped as OpenAI's.

`model` picks the variant: a variant's name pins it (any role, like gRPC's `variant`); the
gateway's own name "driftgate" (or no `model`) lets the gateway route. The `x-request-id` header,
else `user`, is the request id (sticky A/B assignment); without either one is made up here. The
request id and the answering variant come back in the `x-request-id` and `x-driftgate-variant`
headers (on a stream the variant header is only sent when the request pinned one). A client that
disconnects cancels its request, which aborts the engine's generation.

Authentication and limits are gRPC's: the same API keys (`authorization: Bearer <key>`, checked
before the body is read; every route needs scope `user`, `/health` is open when
`auth.open_health`), the key's name as the call's `caller` (per-key concurrency counts both doors
together), and a body limit of `limits.max_request_bytes`, gRPC's message limit.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable
from dataclasses import replace
from typing import TypeVar
from urllib.parse import quote

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from serving.auth import Authenticator, Scope
from serving.errors import GatewayError
from serving.gateway import ChatMessage, Gateway, GenerateCall
from serving.http import errors
from serving.http.answers import Shape, SSEResponse, sse_stream
from serving.http.body import parse_request
from serving.http.disconnect import DisconnectWatch
from serving.http.errors import HttpError
from serving.http.openai_models import (
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    ModelList,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "driftgate"
"""The model name that means "let the gateway route" (listed first by `GET /v1/models`)."""
MAX_REQUEST_ID_CHARS = 512
REQUEST_ID_HEADER = "x-request-id"
VARIANT_HEADER = "x-driftgate-variant"
_ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system turn

T = TypeVar("T")


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Awaits `work` in this task, cancelling it (which aborts its engine request) if the client
    goes away (`ClientGone`, a 499)."""
    async with DisconnectWatch(request.receive):
        return await work


def _header_safe(value: str) -> str:
    return value if value.isascii() and value.isprintable() else quote(value, safe="")


class OpenAIDoor:
    """The route handlers, bound to one gateway and its API keys."""

    def __init__(self, gateway: Gateway, auth: Authenticator) -> None:
        self.gateway = gateway
        self.auth = auth

    def _caller(self, request: Request) -> str:
        """The calling key's name ("anonymous" when authentication is off, as over gRPC)."""
        try:
            key = self.auth.authenticate(request.headers.get("authorization"))
            self.auth.authorize(key, Scope.USER)
        except GatewayError as exc:
            log.info("refused %s %s: %s", request.method, request.url.path, exc.message)
            raise
        return key.name if key else "anonymous"

    # ------------------------------------------------------------------ models
    def _cards(self) -> list[ModelCard]:
        created = int(self.gateway.since)
        cards = [ModelCard(id=DEFAULT_MODEL, created=created, role="router", ready=self.gateway.is_ready())]
        for v in self.gateway.variants():
            if v.name != DEFAULT_MODEL:
                cards.append(ModelCard(id=v.name, created=created, role=v.role.value, ready=v.ready))
        return cards

    async def list_models(self, request: Request) -> Response:
        self._caller(request)
        return JSONResponse(ModelList(data=self._cards()).model_dump())

    async def get_model(self, request: Request, model: str) -> Response:
        self._caller(request)
        card = next((c for c in self._cards() if c.id == model), None)
        if card is None:
            raise self._unknown(model)
        return JSONResponse(card.model_dump())

    async def health(self, request: Request) -> Response:
        if not self.gateway.config.auth.open_health:
            self._caller(request)
        if not self.gateway.is_ready():
            raise HttpError(
                503, "the gateway is not ready", code="unavailable", type_="service_unavailable_error"
            )
        return JSONResponse({"status": "ok"})

    def _unknown(self, model: str) -> HttpError:
        known = ", ".join(c.id for c in self._cards())
        return HttpError(
            404,
            f"The model {model!r} does not exist; available models: {known}",
            param="model",
            code="model_not_found",
            type_="not_found_error",
        )

    # ------------------------------------------------------------------ request -> call
    def _variant(self, model: str | None) -> str:
        """The variant `model` pins, or "" to let the gateway route."""
        if not model or model == DEFAULT_MODEL:
            return ""
        if self.gateway.config.variant(model) is None:
            raise self._unknown(model)
        return model

    @staticmethod
    def _request_id(request: Request, user: str | None) -> str:
        request_id = request.headers.get(REQUEST_ID_HEADER) or user or uuid.uuid4().hex
        if len(request_id) > MAX_REQUEST_ID_CHARS:
            raise HttpError(400, f"request id / user over {MAX_REQUEST_ID_CHARS} characters", param="user")
        return request_id

    def _call(
        self, request: Request, req: CompletionRequest | ChatCompletionRequest, caller: str, received: float
    ) -> tuple[GenerateCall, Shape]:
        problems = req.unsupported()
        if problems:
            param, reason = problems[0]
            raise HttpError(400, reason, param=param, code="unsupported_parameter")
        variant = self._variant(req.model)
        chat = isinstance(req, ChatCompletionRequest)
        shape = Shape(chat=chat, model=variant or DEFAULT_MODEL, include_usage=req.include_usage())
        call = GenerateCall(
            temperature=req.temperature,
            top_p=req.top_p,
            seed=req.seed,
            stop=req.stops(),
            ignore_eos=bool(req.ignore_eos),
            stream_interval=req.stream_interval,
            variant=variant,
            request_id=self._request_id(request, req.user),
            caller=caller,
            door="http",
            received_at=received,
        )
        if isinstance(req, CompletionRequest):
            return replace(call, prompt=req.prompt, max_tokens=req.max_tokens), shape
        messages = tuple(ChatMessage(_ROLE_ALIASES.get(m.role, m.role), m.text()) for m in req.messages)
        return replace(call, messages=messages, max_tokens=req.completion_limit()), shape

    # ------------------------------------------------------------------ answers
    async def completions(self, request: Request) -> Response:
        caller = self._caller(request)
        req = await parse_request(request, CompletionRequest, self.gateway.config.limits.max_request_bytes)
        received = time.perf_counter()  # as gRPC's: after authentication and the body's parsing
        call, shape = self._call(request, req, caller, received)
        return await self._answer(request, call, shape, stream=bool(req.stream))

    async def chat_completions(self, request: Request) -> Response:
        caller = self._caller(request)
        req = await parse_request(
            request, ChatCompletionRequest, self.gateway.config.limits.max_request_bytes
        )
        received = time.perf_counter()
        call, shape = self._call(request, req, caller, received)
        return await self._answer(request, call, shape, stream=bool(req.stream))

    async def _answer(self, request: Request, call: GenerateCall, shape: Shape, stream: bool) -> Response:
        headers = {REQUEST_ID_HEADER: _header_safe(call.request_id)}
        if not stream:
            reply = await until_disconnect(request, self.gateway.generate(call))
            headers[VARIANT_HEADER] = reply.variant
            return JSONResponse(shape.whole(reply), headers=headers)
        if call.variant:
            headers[VARIANT_HEADER] = call.variant
        shape.prepare_stream()
        return SSEResponse(sse_stream(shape, self.gateway.stream(call)), headers)


def create_app(gateway: Gateway, auth: Authenticator | None = None) -> FastAPI:
    """The FastAPI application of the HTTP door on `gateway` (`auth`: its API keys; none = open)."""
    app = FastAPI(title="driftgate", docs_url=None, redoc_url=None, openapi_url=None)
    errors.install(app)
    door = OpenAIDoor(gateway, auth or Authenticator())
    app.add_api_route("/v1/models", door.list_models, methods=["GET"])
    app.add_api_route("/v1/models/{model:path}", door.get_model, methods=["GET"])
    app.add_api_route("/v1/completions", door.completions, methods=["POST"])
    app.add_api_route("/v1/chat/completions", door.chat_completions, methods=["POST"])
    app.add_api_route("/health", door.health, methods=["GET"])
    return app
