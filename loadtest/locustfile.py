"""Locust load generator for a driftgate gateway (local or a staging cluster), over gRPC or its
OpenAI-compatible HTTP door. See loadtest/README.md.

    locust -f loadtest/locustfile.py --headless -u 16 -r 4 -t 60s --host 127.0.0.1:50051
    locust -f loadtest/locustfile.py --headless -u 64 -r 8 -t 10m --host grpcs://gw.staging:443 \
        --dg-tls-ca ca.pem          # API key: DRIFTGATE_API_KEY=... (or --dg-api-key)
    DRIFTGATE_PROTOCOL=http locust -f loadtest/locustfile.py --headless -u 16 -t 60s --host 127.0.0.1:8000

Each simulated user holds one connection (a gRPC channel, or an HTTP keep-alive session) and sends
one request at a time (closed loop, no wait), so `-u` is the number of requests in flight.
gRPC tasks, equally weighted: unary `Generate` and `GenerateStream`; HTTP tasks: `/v1/completions`
and `/v1/chat/completions`, each whole and streamed (SSE). Every call is reported under its name
and the variant that answered (`Generate[dense]`, `chat/stream[int8-w8a8]`); a stream also as
`.../ttft` (time to its first text) and `.../itl` (mean time per token after the first).
Requests are greedy (temperature 0). `DRIFTGATE_PROTOCOL` (grpc, the default, or http) picks the
user class; every other option is a `--dg-*` argument or its environment variable (dgload.options).
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import grpc.experimental.gevent as grpc_gevent
from dgload.grpc_client import GatewayClient
from dgload.http_client import OpenAIClient
from dgload.options import Options, Target, add_arguments, options_of, target_of
from locust import User, constant, events, tag, task
from locust.env import Environment
from locust.exception import StopTest

from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb

# grpc's sync client must cooperate with locust's gevent loop, or one call blocks every user.
grpc_gevent.init_gevent()

log = logging.getLogger(__name__)

PROTOCOLS = ("grpc", "http")
PROTOCOL = os.environ.get("DRIFTGATE_PROTOCOL", "").strip().lower() or "grpc"
HTTP_MODE = PROTOCOL == "http"
DEFAULT_MODEL = "driftgate"  # the HTTP door's name for "let the gateway route"

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


def _setup(user: User) -> tuple[Options, Target]:
    """The run's options and target, or StopTest (the init check below already refused bad ones)."""
    try:
        opts = options_of(user.environment.parsed_options)
        return opts, target_of(user.host, opts)
    except ValueError as exc:
        raise StopTest(str(exc)) from exc


class GatewayUser(User):
    """One gRPC client of the gateway: one channel, one request at a time."""

    abstract = HTTP_MODE
    wait_time = constant(0)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.opts, target = _setup(self)
        self.client = GatewayClient(environment, target, self.opts)

    def on_stop(self) -> None:
        self.client.close()

    def request(self) -> Any:
        return pb.GenerateRequest(
            prompt=random.choice(PROMPTS),
            max_tokens=self.opts.max_tokens,
            temperature=0.0,
            variant=self.opts.variant,
            ignore_eos=self.opts.ignore_eos,
        )

    @tag("unary")
    @task
    def generate(self) -> None:
        self.client.generate(self.request())

    @tag("stream")
    @task
    def generate_stream(self) -> None:
        self.client.generate_stream(self.request())


class OpenAIUser(User):
    """One client of the gateway's OpenAI-compatible HTTP door (`DRIFTGATE_PROTOCOL=http`)."""

    abstract = not HTTP_MODE
    wait_time = constant(0)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.opts, target = _setup(self)
        self.model = self.opts.variant or DEFAULT_MODEL
        self.client = OpenAIClient(environment, target, self.opts)

    def on_stop(self) -> None:
        self.client.close()

    def body(self, chat: bool) -> dict[str, Any]:
        prompt = random.choice(PROMPTS)
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.opts.max_tokens, "temperature": 0.0}
        if self.opts.ignore_eos:
            body["ignore_eos"] = True  # vLLM's extension, which the HTTP door accepts
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


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    add_arguments(parser)


@events.init.add_listener
def _check(environment: Environment, **_kwargs: Any) -> None:
    """Refuses a run with a bad protocol, host or option before any user starts (exit code 2).
    A worker gets its host and options from the master: it checks nothing here."""
    options = environment.parsed_options
    if options is None or getattr(options, "worker", False):  # a library user, or a worker
        return
    problems: list[str] = []
    if PROTOCOL not in PROTOCOLS:
        problems.append(f"DRIFTGATE_PROTOCOL must be one of {list(PROTOCOLS)}, got {PROTOCOL!r}")
    try:
        opts = options_of(options)
        if environment.host or getattr(options, "headless", False):
            target_of(environment.host, opts)
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        for problem in problems:
            log.error("driftgate loadtest: %s", problem)
        raise SystemExit(2)
