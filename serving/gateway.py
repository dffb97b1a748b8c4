"""The gateway: validates a request, routes it to a variant, mirrors it to shadows, answers it.

Plain asyncio; knows nothing of gRPC or vLLM. Engines attach as they become ready.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import random
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from serving import drift
from serving.config import Config, Role, VariantConfig
from serving.engines.base import Engine
from serving.errors import GatewayError, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from serving.gate.book import GateBook
from serving.gate.judge import judge
from serving.gate.verdict import VariantVerdict
from serving.generation import Accumulator, stream_generation, whole_answer
from serving.mirror import AnswerHook, Mirror, MirrorJob
from serving.requests import ChatMessage, GenerateCall, check_input, sampling_spec
from serving.routing import route
from serving.span import Span
from serving.stats import LATENCY_BUCKETS, FanoutSink, OverheadStats, Sink

__all__ = ["ChatMessage", "Gateway", "GenerateCall", "Reply", "StreamEvent", "VariantInfo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    """The summary of an answered request."""

    text: str
    variant: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    request_id: str


@dataclass(frozen=True)
class StreamEvent:
    """A text delta; `final` is set on the last event."""

    text: str
    final: Reply | None = None
    span: Span | None = field(default=None, repr=False, compare=False)
    """The request's timing, for a door that marks its own hand-off (`serving.span`)."""

    def handed_off(self) -> None:
        """The door hands this event to its transport now."""
        if self.span is not None:
            self.span.handed_off(last=self.final is not None)


@dataclass(frozen=True)
class VariantInfo:
    name: str
    role: Role
    model_path: str
    ready: bool
    weight: float
    sample_rate: float
    score_rate: float


def _traffic(v: VariantConfig) -> tuple[str, float, float, float]:
    """What a traffic change moves on a variant, as `set_variants` logs it."""
    return (v.role.value, v.weight, v.sample_rate, v.score_rate)


class Gateway:
    def __init__(self, config: Config, sink: Sink, rng: random.Random | None = None) -> None:
        self.config = config
        self.gates = GateBook(LATENCY_BUCKETS)
        self._sink = FanoutSink(sink, self.gates)
        self._rng = rng or random.Random()
        self._engines: dict[str, Engine] = {}
        self._in_flight = 0
        self._per_key: dict[str, int] = {}
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.book = drift.DriftBook(kl_cap=config.gate.kl_cap)
        self.since = time.time()
        self.mirror = Mirror(config.variants, self._engines, config.drift, self.book, self._sink, self._rng)

    # ---------------------------------------------------------------- engines and readiness
    def attach(self, name: str, engine: Engine) -> None:
        """Marks a variant ready: its engine starts taking requests."""
        if self.config.variant(name) is None:
            raise KeyError(name)
        self._engines[name] = engine

    def detach(self, name: str) -> None:
        """Marks a variant not ready (its engine failed a health check); requests in flight on it
        go on and end as its engine lets them."""
        self._engines.pop(name, None)

    def is_attached(self, name: str) -> bool:
        return name in self._engines

    @property
    def on_answer(self) -> AnswerHook | None:
        """Hook called with (variant, prompt, text, primary_text) for every answered request
        (primary_text None) and compared mirrored copy; online probing sets it."""
        return self.mirror.on_answer

    @on_answer.setter
    def on_answer(self, hook: AnswerHook | None) -> None:
        self.mirror.on_answer = hook

    @property
    def engines(self) -> dict[str, Engine]:
        return dict(self._engines)

    def is_ready(self) -> bool:
        """Ready to serve: the primary's engine is attached and we are not draining."""
        return not self._closing and self.config.primary.name in self._engines

    def variants(self) -> list[VariantInfo]:
        return [
            VariantInfo(
                v.name,
                v.role,
                v.model_path,
                v.name in self._engines,
                v.weight if v.role is not Role.SHADOW else 0.0,
                v.sample_rate if v.role is Role.SHADOW else 0.0,
                v.score_rate if v.role is Role.SHADOW else 0.0,
            )
            for v in self.config.variants
        ]

    # ---------------------------------------------------------------- requests
    async def _prompt(self, call: GenerateCall, engine: Engine) -> str:
        """The prompt text: the call's own, or its messages rendered by the answering engine."""
        if not call.messages:
            return call.prompt
        return await engine.render_chat([{"role": m.role, "content": m.content} for m in call.messages])

    def _choose(self, call: GenerateCall) -> VariantConfig:
        if call.variant:
            variant = self.config.variant(call.variant)
            if variant is None:
                known = ", ".join(v.name for v in self.config.variants)
                raise NotFound(f"unknown variant {call.variant!r}; known: {known}")
        else:
            live = [
                (v.name, v.weight)
                for v in self.config.variants
                if v.role is not Role.SHADOW and v.name in self._engines
            ]
            if not any(w > 0 for _, w in live):
                raise Unavailable("no variant is ready to serve")
            variant = self.config.variant(route(live, call.request_id or None, self._rng))  # type: ignore[assignment]
        assert variant is not None
        if variant.name not in self._engines:
            raise Unavailable(f"variant {variant.name} is not ready")
        return variant

    def _admit(self, call: GenerateCall) -> None:
        """Refuses a call before any work (shutdown, bad or oversized input, too much in flight);
        else counts it in flight (overall and for its API key) until `_release`."""
        if self._closing:
            raise Unavailable("the gateway is shutting down")
        check_input(call, self.config.generation, self.config.limits)
        limit = self.config.server.max_concurrent_requests
        if self._in_flight >= limit:
            raise ResourceExhausted(f"too many requests in flight (limit {limit})")
        per_key = self.config.limits.max_concurrent_per_key
        if per_key and self._per_key.get(call.caller, 0) >= per_key:
            raise ResourceExhausted(f"too many requests in flight for key {call.caller!r} (limit {per_key})")
        self._in_flight += 1
        self._per_key[call.caller] = self._per_key.get(call.caller, 0) + 1
        self._idle.clear()

    def _release(self, call: GenerateCall) -> None:
        self._in_flight -= 1
        self._per_key[call.caller] -= 1
        if not self._per_key[call.caller]:
            del self._per_key[call.caller]
        if self._in_flight == 0:
            self._idle.set()

    def stream(self, call: GenerateCall) -> AsyncGenerator[StreamEvent, None]:
        """Answers `call` as text deltas; the last event carries the summary. The latency the
        gateway added (`serving.span`) is reported once the caller has taken the last event."""
        return self._events(call, unary=False)

    async def _events(self, call: GenerateCall, unary: bool) -> AsyncGenerator[StreamEvent, None]:
        span = Span(time.perf_counter() if call.received_at is None else call.received_at)
        self._admit(call)
        job: MirrorJob | None = None
        reply: Reply | None = None
        try:
            variant = self._choose(call)
            engine = self._engines[variant.name]
            prompt = await self._prompt(call, engine)
            ids = engine.encode_prompt(prompt)
            sampling = sampling_spec(
                call, len(ids), engine.max_model_len, self.config.generation, self.config.limits
            )
            if unary:  # nobody reads this answer token by token
                sampling = whole_answer(sampling)
            job = self.mirror.start(prompt, sampling) if variant.role is Role.PRIMARY else None
            acc = Accumulator()
            logprobs = job.logprobs if job else None
            span.called()
            gen = stream_generation(
                engine, variant, prompt, sampling, self._sink, uuid.uuid4().hex, logprobs, ids
            )
            async with aclosing(gen) as chunks:
                async for chunk in chunks:
                    span.output(chunk.finished)
                    acc.add(chunk)
                    if not chunk.finished:
                        yield StreamEvent(chunk.text, span=span)
                        span.delivered()
            done = acc.result()
            self.mirror.answered(variant.name, prompt, sampling, done.answer.text, None)
            if job:
                job.primary_done(done)
            answer = done.answer
            reply = Reply(
                answer.text,
                variant.name,
                answer.finish_reason or "",
                done.prompt_tokens,
                done.completion_tokens,
                call.request_id or uuid.uuid4().hex,
            )
            yield StreamEvent(acc.last.text if acc.last else "", reply, span)
        finally:
            if job:
                job.primary_failed()  # no-op when the primary answered
            self._release(call)
            if reply is not None:
                self._report_added(span, call, reply.variant, unary)

    def _report_added(self, span: Span, call: GenerateCall, variant: str, unary: bool) -> None:
        """A unary answer has no first event for a client to take: only its total is reported."""
        added = span.added(time.perf_counter())
        if added is not None:
            first, total = added
            self._sink.overhead(OverheadStats(variant, call.door, None if unary else first, total))

    async def generate(self, call: GenerateCall) -> Reply:
        async with aclosing(self._events(call, unary=True)) as events:
            async for event in events:
                if event.final is not None:
                    return event.final
        raise Unavailable("the stream ended without an answer")

    def change_traffic(
        self, build: Callable[[Config], list[VariantConfig]], source: str, caller: str = ""
    ) -> None:
        """Applies `build(config)` (a `serving.traffic` step); a refused step changes nothing and is
        counted, then raised to the caller."""
        try:
            variants = build(self.config)
        except GatewayError as exc:
            log.warning("traffic change (%s by %s) refused: %s", source, caller or "-", exc.message)
            self._sink.traffic(source, "refused")
            raise
        self.set_variants(variants, source, caller)

    def set_variants(self, variants: list[VariantConfig], source: str, caller: str = "") -> None:
        """Swaps in new roles, weights, sample and score rates at once (see `serving.traffic`): requests
        routed from now on see them; requests in flight finish with the settings they began with."""
        before = {v.name: _traffic(v) for v in self.config.variants}
        self.config = dataclasses.replace(self.config, variants=variants)
        self.mirror.set_variants(variants)
        for v in variants:
            now = _traffic(v)
            if before[v.name] != now:
                log.warning(
                    "traffic change (%s by %s): %s role/weight/sample_rate/score_rate %s -> %s",
                    source, caller or "-", v.name, before[v.name], now,
                )  # fmt: skip
        self._sink.traffic(source, "applied")

    @property
    def sink(self) -> Sink:
        """Where this gateway's stats go (also what other traffic, e.g. live probes, reports to)."""
        return self._sink

    def drift_summary(self, reset: bool = False) -> tuple[dict[str, drift.DriftSummary], float]:
        """Per-shadow comparison figures and the time they are counted from; `reset` clears them
        and the promotion-gate evidence (both count from the same moment)."""
        summaries = {v.name: self.book.summary(v.name) for v in self.config.variants if v.role is Role.SHADOW}
        since = self.since
        if reset:
            self.book.reset()
            self.gates.reset()
            self.since = time.time()
        return summaries, since

    async def verdicts(self, variant: str = "") -> list[VariantVerdict]:
        """The promotion verdict of `variant` (default: every variant but the primary), judged in a
        worker thread on a snapshot of the evidence."""
        if variant:
            found = self.config.variant(variant)
            if found is None:
                raise NotFound(f"unknown variant {variant!r}")
            if found.role is Role.PRIMARY:
                raise InvalidArgument(f"{variant} is the primary: there is nothing to compare it with")
        snapshot = copy.deepcopy((self.book, self.gates))
        names = [variant] if variant else None
        return await asyncio.to_thread(judge, self.config, *snapshot, names)

    # ---------------------------------------------------------------- lifecycle
    async def drain(self, timeout: float) -> bool:
        """Refuses new requests and waits up to `timeout` s for those in flight; True if all ended."""
        self._closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        """Cancels mirrored copies and detaches the engines (their owner shuts them down)."""
        self._closing = True
        await self.mirror.close()
        self._engines.clear()
