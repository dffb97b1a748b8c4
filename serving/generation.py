"""One generation on one engine, timed and reported: shared by live, mirrored and probe traffic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace

from serving import drift
from serving.config import VariantConfig
from serving.engines.base import Chunk, Engine, SamplingSpec, TokenLogprobs
from serving.errors import EngineFailure, GatewayError
from serving.stats import RequestStats, Sink


@dataclass(frozen=True)
class Generated:
    """A finished generation."""

    answer: drift.Answer
    prompt_token_ids: tuple[int, ...]
    logprobs: tuple[TokenLogprobs, ...]
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Accumulator:
    """Folds a stream of chunks into a `Generated`."""

    text: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    last: Chunk | None = None

    def add(self, chunk: Chunk) -> None:
        self.text.append(chunk.text)
        self.token_ids.extend(chunk.token_ids)
        self.logprobs.extend(chunk.logprobs)
        self.last = chunk

    def result(self) -> Generated:
        last = self.last
        if last is None or not last.finished:
            raise EngineFailure("the engine ended the stream before finishing")
        answer = drift.Answer("".join(self.text), tuple(self.token_ids), last.finish_reason)
        return Generated(
            answer, last.prompt_token_ids, tuple(self.logprobs), last.prompt_tokens, last.completion_tokens
        )


async def stream_generation(
    engine: Engine,
    variant: VariantConfig,
    prompt: str,
    sampling: SamplingSpec,
    sink: Sink,
    request_id: str,
    logprobs: int | None = None,
    prompt_token_ids: Sequence[int] = (),
) -> AsyncGenerator[Chunk, None]:
    """Yields the engine's chunks; records latency, TTFT, inter-token latency, tokens and the
    outcome code once, however the stream ends (closing it aborts the engine request)."""
    start = last = time.perf_counter()
    ttft: float | None = None
    gaps: list[float] = []
    prompt_tokens = completion_tokens = 0
    code = "OK"
    sink.in_flight(variant.name, 1)
    try:
        async with aclosing(
            engine.generate(prompt, sampling, request_id, logprobs, prompt_token_ids)
        ) as chunks:
            async for chunk in chunks:
                now = time.perf_counter()
                n = len(chunk.token_ids)
                if n:
                    if ttft is None:  # tokens that came with the first: no gap of their own is known
                        ttft = now - start
                    else:  # a chunk's gap spread over its tokens
                        gaps.extend([(now - last) / n] * n)
                    last = now
                prompt_tokens, completion_tokens = chunk.prompt_tokens, chunk.completion_tokens
                yield chunk
    except (asyncio.CancelledError, GeneratorExit):
        code = "CANCELLED"
        raise
    except GatewayError as exc:
        code = exc.status.value
        raise
    except Exception:
        code = "INTERNAL"
        raise
    finally:
        sink.in_flight(variant.name, -1)
        sink.request(
            RequestStats(
                variant=variant.name,
                role=variant.role.value,
                code=code,
                latency_s=time.perf_counter() - start,
                ttft_s=ttft,
                inter_token_s=tuple(gaps),
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
            )
        )


def whole_answer(sampling: SamplingSpec) -> SamplingSpec:
    """`sampling` for a caller that reads only the whole answer (a unary reply, a shadow's copy, a
    probe), as vLLM's server asks for a request that does not stream: the engine sends the first
    token as soon as it is made (so TTFT is still measured), then the rest in one chunk at the end,
    instead of waking the gateway for every token. Inter-token latency is then the mean gap of
    that rest."""
    if sampling.stream_interval >= sampling.max_tokens:
        return sampling
    return replace(sampling, stream_interval=sampling.max_tokens)


async def run_generation(
    engine: Engine,
    variant: VariantConfig,
    prompt: str,
    sampling: SamplingSpec,
    sink: Sink,
    request_id: str,
    logprobs: int | None = None,
) -> Generated:
    """Runs a generation to its end and returns it (the engine sends the answer in two chunks,
    `whole_answer`)."""
    acc = Accumulator()
    stream = stream_generation(engine, variant, prompt, whole_answer(sampling), sink, request_id, logprobs)
    async with aclosing(stream) as chunks:
        async for chunk in chunks:
            acc.add(chunk)
    return acc.result()
