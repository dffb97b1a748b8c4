"""Locust load generator for a local driftgate gateway, over gRPC or its OpenAI-compatible HTTP door.

    locust -f loadtest/locustfile.py --headless -u 16 -r 4 -t 60s --host 127.0.0.1:50051
    DRIFTGATE_PROTOCOL=http locust -f loadtest/locustfile.py --headless -u 16 -r 4 -t 60s --host 127.0.0.1:8000

Each simulated user holds one connection (a gRPC channel, or an HTTP keep-alive session) and sends
one request at a time (closed loop, no wait), so `-u` is the number of requests in flight.
gRPC tasks, equally weighted: unary `Generate` and `GenerateStream`, reported as request type
"grpc" under the method name. HTTP tasks: `/v1/completions` and `/v1/chat/completions`, each
whole and streamed (SSE), reported as request type "http" under "completions", "chat",
"completions/stream" and "chat/stream". A stream is reported twice: the whole stream, and
".../ttft" (time to its first chunk of text). Requests are greedy (temperature 0). Environment:

    DRIFTGATE_PROTOCOL     grpc (default) or http: which user class runs
    DRIFTGATE_MAX_TOKENS   completion length per request (default 16)
    DRIFTGATE_VARIANT      pin every request to this variant (gRPC `variant`, HTTP `model`)
    DRIFTGATE_TIMEOUT_S    per-request deadline in seconds (default 60)

Bounded by design: the host must be a loopback address, a headless run must set `--run-time`,
at most MAX_USERS users are allowed, and the web UI (if used) must listen on loopback.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import random
import time
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
import requests
from locust import User, constant, events, tag, task
from locust.env import Environment
from locust.exception import StopTest

from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc

# grpc's sync client must cooperate with locust's gevent loop, or one call blocks every user.
grpc_gevent.init_gevent()

log = logging.getLogger(__name__)

REQUEST_TYPE = "grpc"
HTTP_REQUEST_TYPE = "http"
PROTOCOLS = ("grpc", "http")
PROTOCOL = os.environ.get("DRIFTGATE_PROTOCOL", "").strip().lower() or "grpc"
HTTP_MODE = PROTOCOL == "http"
DEFAULT_MODEL = "driftgate"  # the HTTP door's name for "let the gateway route"
MAX_USERS = 64
DEFAULT_MAX_TOKENS = 16
DEFAULT_TIMEOUT_S = 60.0

# LAMA-style cloze prompts (greedy answers are checkable) and a few short open prompts.
PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "The capital of Japan is",
    "The capital of Italy is",
    "The capital of Canada is",
    "The capital of Egypt is",
    "The capital of Kenya is",
    "The capital of Peru is",
    "The capital of Norway is",
    "Paris is the capital of",
    "Berlin is the capital of",
    "Explain in one sentence what a compiler does.",
    "List three primary colors:",
)


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    value = int(raw)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    value = float(raw) if raw else default
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def grpc_target(host: str | None) -> str:
    """`--host` as a gRPC target HOST:PORT: any scheme and trailing slash stripped, loopback only."""
    if not host:
        raise ValueError("no host: pass --host HOST:PORT, e.g. --host 127.0.0.1:50051")
    target = host.strip().split("://", 1)[-1].rstrip("/")
    name, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"host {host!r}: expected HOST:PORT")
    name = name.strip("[]")
    if name != "localhost":
        try:
            loopback = ipaddress.ip_address(name).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"host {host!r}: only loopback targets (127.0.0.0/8, ::1, localhost) allowed")
    return target


class GrpcCallError(Exception):
    """A failed call, reduced to its status code and details (locust groups failures by message)."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code


def _from_rpc_error(exc: grpc.RpcError) -> GrpcCallError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else None
    return GrpcCallError(getattr(code, "name", "UNKNOWN"), details or "")


class _Reporter:
    """Reports calls to locust as `request_type`."""

    request_type = REQUEST_TYPE

    def __init__(self, environment: Environment, timeout_s: float) -> None:
        self._events = environment.events
        self._timeout_s = timeout_s

    def _report(
        self, name: str, start: float, length: int, exception: Exception | None, context: dict[str, Any]
    ) -> None:
        self._events.request.fire(
            request_type=self.request_type,
            name=name,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=length,
            exception=exception,
            context=context,
        )


class GatewayClient(_Reporter):
    """A driftgate.v1.Gateway stub on one channel that reports every call to locust."""

    def __init__(self, environment: Environment, target: str, timeout_s: float) -> None:
        super().__init__(environment, timeout_s)
        self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.GatewayStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def generate(self, request: Any) -> Any | None:
        """Unary Generate; reported as "Generate". Returns the response, or None on failure."""
        start = time.perf_counter()
        try:
            reply = self._stub.Generate(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            self._report("Generate", start, 0, _from_rpc_error(exc), {})
            return None
        context = {"variant": reply.variant, "completion_tokens": reply.completion_tokens}
        self._report("Generate", start, len(reply.text.encode()), None, context)
        return reply

    def generate_stream(self, request: Any) -> str | None:
        """GenerateStream; reported as "GenerateStream/ttft" at the first chunk and "GenerateStream"
        at the end. Returns the streamed text, or None on failure."""
        start = time.perf_counter()
        parts: list[str] = []
        last: Any = None
        error: Exception | None = None
        try:
            chunks: Iterator[Any] = self._stub.GenerateStream(request, timeout=self._timeout_s)
            for chunk in chunks:
                if last is None:
                    self._report("GenerateStream/ttft", start, len(chunk.text.encode()), None, {})
                parts.append(chunk.text)
                last = chunk
        except grpc.RpcError as exc:
            error = _from_rpc_error(exc)
        if error is None and (last is None or not last.finished):
            error = GrpcCallError("INCOMPLETE", "the stream ended without a finished chunk")
        text = "".join(parts)
        context: dict[str, Any] = {}
        if error is None:
            context = {"variant": last.variant, "completion_tokens": last.completion_tokens}
        self._report("GenerateStream", start, len(text.encode()), error, context)
        return None if error else text


class GatewayUser(User):
    """One gRPC client of the gateway: one channel, one request at a time."""

    abstract = HTTP_MODE
    wait_time = constant(0)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.max_tokens = env_int("DRIFTGATE_MAX_TOKENS", DEFAULT_MAX_TOKENS)
        self.variant = os.environ.get("DRIFTGATE_VARIANT", "").strip()
        try:
            target = grpc_target(self.host)
        except ValueError as exc:
            raise StopTest(str(exc)) from exc
        self.client = GatewayClient(environment, target, env_float("DRIFTGATE_TIMEOUT_S", DEFAULT_TIMEOUT_S))

    def on_stop(self) -> None:
        self.client.close()

    def request(self) -> Any:
        return pb.GenerateRequest(
            prompt=random.choice(PROMPTS),
            max_tokens=self.max_tokens,
            temperature=0.0,
            variant=self.variant,
        )

    @tag("unary")
    @task
    def generate(self) -> None:
        self.client.generate(self.request())

    @tag("stream")
    @task
    def generate_stream(self) -> None:
        self.client.generate_stream(self.request())


# ---------------------------------------------------------------------------------- HTTP (OpenAI)
def _error_of(response: requests.Response) -> GrpcCallError:
    """A non-200 answer as "HTTP <status>: <OpenAI error message>"."""
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    return GrpcCallError(f"HTTP {response.status_code}", message)


def _text_of(event: dict[str, Any]) -> str:
    """The text of a completion/chat answer or stream chunk ("" for role and usage chunks)."""
    if not event.get("choices"):
        return ""
    choice = event["choices"][0]
    if "text" in choice:
        return str(choice["text"] or "")
    part = choice.get("message") or choice.get("delta") or {}
    return str(part.get("content") or "")


class OpenAIClient(_Reporter):
    """The HTTP door's /v1 endpoints on one keep-alive session, every call reported to locust."""

    request_type = HTTP_REQUEST_TYPE

    def __init__(self, environment: Environment, base_url: str, timeout_s: float) -> None:
        super().__init__(environment, timeout_s)
        self._base_url = base_url
        self._session = requests.Session()

    def close(self) -> None:
        self._session.close()

    def _post(self, path: str, body: dict[str, Any], stream: bool = False) -> requests.Response:
        return self._session.post(self._base_url + path, json=body, stream=stream, timeout=self._timeout_s)

    def whole(self, path: str, name: str, body: dict[str, Any]) -> str | None:
        """A non-streamed answer, reported as `name`. Returns its text, or None on failure."""
        start = time.perf_counter()
        try:
            response = self._post(path, body)
        except requests.RequestException as exc:
            self._report(name, start, 0, GrpcCallError("CONNECTION", type(exc).__name__), {})
            return None
        if response.status_code != 200:
            self._report(name, start, 0, _error_of(response), {})
            return None
        answer = response.json()
        text = _text_of(answer)
        context = {"variant": answer.get("model"), "completion_tokens": answer["usage"]["completion_tokens"]}
        self._report(name, start, len(text.encode()), None, context)
        return text

    def stream(self, path: str, name: str, body: dict[str, Any]) -> str | None:
        """A streamed answer, reported as `name`/ttft at its first text and `name` at [DONE]."""
        start = time.perf_counter()
        parts: list[str] = []
        error: Exception | None = GrpcCallError("INCOMPLETE", "the stream ended without data: [DONE]")
        try:
            with self._post(path, {**body, "stream": True}, stream=True) as response:
                ok = response.status_code == 200
                error = error if ok else _error_of(response)
                for line in response.iter_lines() if ok else []:
                    data = line.decode("utf-8").removeprefix(
                        "data: "
                    )  # SSE is UTF-8, whatever requests guesses
                    if data == "[DONE]":
                        error = None
                        break
                    event = json.loads(data) if data else {}
                    if "error" in event:
                        error = GrpcCallError("SSE error", str(event["error"].get("message", "")))
                        break
                    text = _text_of(event)
                    if text and not any(parts):
                        self._report(f"{name}/ttft", start, len(text.encode()), None, {})
                    parts.append(text)
        except requests.RequestException as exc:
            error = GrpcCallError("CONNECTION", type(exc).__name__)
        text = "".join(parts)
        self._report(name, start, len(text.encode()), error, {})
        return None if error else text


class OpenAIUser(User):
    """One client of the gateway's OpenAI-compatible HTTP door (`DRIFTGATE_PROTOCOL=http`)."""

    abstract = not HTTP_MODE
    wait_time = constant(0)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.max_tokens = env_int("DRIFTGATE_MAX_TOKENS", DEFAULT_MAX_TOKENS)
        self.model = os.environ.get("DRIFTGATE_VARIANT", "").strip() or DEFAULT_MODEL
        try:
            base_url = "http://" + grpc_target(self.host)  # loopback only, as for gRPC
        except ValueError as exc:
            raise StopTest(str(exc)) from exc
        self.client = OpenAIClient(environment, base_url, env_float("DRIFTGATE_TIMEOUT_S", DEFAULT_TIMEOUT_S))

    def on_stop(self) -> None:
        self.client.close()

    def body(self, chat: bool) -> dict[str, Any]:
        prompt = random.choice(PROMPTS)
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "temperature": 0.0}
        if chat:
            return {**body, "messages": [{"role": "user", "content": prompt}]}
        return {**body, "prompt": prompt}

    @tag("unary")
    @task
    def completions(self) -> None:
        self.client.whole("/v1/completions", "completions", self.body(chat=False))

    @tag("unary")
    @task
    def chat(self) -> None:
        self.client.whole("/v1/chat/completions", "chat", self.body(chat=True))

    @tag("stream")
    @task
    def completions_stream(self) -> None:
        self.client.stream("/v1/completions", "completions/stream", self.body(chat=False))

    @tag("stream")
    @task
    def chat_stream(self) -> None:
        self.client.stream("/v1/chat/completions", "chat/stream", self.body(chat=True))


@events.init.add_listener
def _check_bounds(environment: Environment, **_kwargs: Any) -> None:
    """Refuses unbounded or non-local runs from the command line before any user starts."""
    options = environment.parsed_options
    if options is None:  # used as a library (tests): the user checks its own host
        return
    problems: list[str] = []
    if PROTOCOL not in PROTOCOLS:
        problems.append(f"DRIFTGATE_PROTOCOL must be one of {list(PROTOCOLS)}, got {PROTOCOL!r}")
    try:
        grpc_target(environment.host)
    except ValueError as exc:
        problems.append(str(exc))
    headless = bool(getattr(options, "headless", False))
    if headless and not getattr(options, "run_time", None):
        problems.append("a headless run needs --run-time (-t), e.g. -t 60s")
    web_host = getattr(options, "web_host", "") or ""
    if not headless and web_host not in ("127.0.0.1", "localhost", "::1"):
        problems.append("the web UI listens on all interfaces by default: add --web-host 127.0.0.1")
    if (getattr(options, "num_users", None) or 0) > MAX_USERS:
        problems.append(f"at most {MAX_USERS} users (-u)")
    try:
        env_int("DRIFTGATE_MAX_TOKENS", DEFAULT_MAX_TOKENS)
        env_float("DRIFTGATE_TIMEOUT_S", DEFAULT_TIMEOUT_S)
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        for problem in problems:
            log.error("driftgate loadtest: %s", problem)
        raise SystemExit(2)
