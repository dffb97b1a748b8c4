"""Routing logic (pure) and A/B splitting through the gateway with scripted engines."""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import AsyncGenerator, Sequence

import pytest

from serving import drift
from serving.config import Config, DriftConfig, Role, VariantConfig
from serving.engines.base import Chunk, SamplingSpec
from serving.errors import InvalidArgument, NotFound, Unavailable
from serving.gateway import ChatMessage, Gateway, GenerateCall
from serving.generation import run_generation, whole_answer
from serving.mirror import Mirror
from serving.routing import pick_weighted, route, unit_interval
from serving.stats import ListSink
from tests.fakes import FakeEngine, HangingEngine


def test_unit_interval_is_stable_and_in_range() -> None:
    points = [unit_interval(f"req-{i}") for i in range(1000)]
    assert all(0.0 <= p < 1.0 for p in points)
    assert unit_interval("abc") == unit_interval("abc") != unit_interval("abd")
    assert 0.45 < sum(points) / len(points) < 0.55


def test_pick_weighted_slices() -> None:
    choices = [("a", 3.0), ("b", 1.0), ("z", 0.0)]
    assert pick_weighted(choices, 0.0) == "a"
    assert pick_weighted(choices, 0.7499) == "a"
    assert pick_weighted(choices, 0.75) == "b"
    assert pick_weighted(choices, 0.9999999) == "b"
    with pytest.raises(ValueError):
        pick_weighted([("a", 0.0)], 0.5)


def _within(count: int, n: int, p: float) -> bool:
    """Binomial count within 4.5 standard deviations of n * p."""
    return abs(count - n * p) <= 4.5 * math.sqrt(n * p * (1 - p))


def test_route_splits_random_and_sticky_traffic_by_weight() -> None:
    choices = [("dense", 0.8), ("cand", 0.2)]
    rng = random.Random(7)
    n = 4000
    random_split = Counter(route(choices, None, rng) for _ in range(n))
    sticky_split = Counter(route(choices, f"user-{i}", rng) for i in range(n))
    for split in (random_split, sticky_split):
        assert _within(split["cand"], n, 0.2), split
    assert all(route(choices, "user-42", rng) == route(choices, "user-42", rng) for _ in range(50))


NO_KL = {"max_kl": None}
"""Gate overrides of a shadow compared on its text only (score_rate 0 needs the KL gate off)."""


def _gateway(*variants: VariantConfig) -> tuple[Gateway, dict[str, FakeEngine], ListSink]:
    sink = ListSink()
    gateway = Gateway(Config(variants=list(variants)), sink, random.Random(1))
    engines = {v.name: FakeEngine(v.name, text=f"answer from {v.name}") for v in variants}
    for name, engine in engines.items():
        gateway.attach(name, engine)
    return gateway, engines, sink


async def test_candidate_share_and_stickiness_through_the_gateway() -> None:
    gateway, _, sink = _gateway(
        VariantConfig(name="dense", weight=3.0),
        VariantConfig(name="cand", role=Role.CANDIDATE, weight=1.0),
        VariantConfig(name="shadow", role=Role.SHADOW, sample_rate=0.0),
    )
    n = 800
    replies = [await gateway.generate(GenerateCall(prompt="hi", request_id=f"u{i}")) for i in range(n)]
    split = Counter(r.variant for r in replies)
    assert set(split) == {"dense", "cand"}  # a shadow never answers live traffic
    assert _within(split["cand"], n, 0.25), split
    again = [await gateway.generate(GenerateCall(prompt="hi", request_id=f"u{i}")) for i in range(100)]
    assert [r.variant for r in again] == [r.variant for r in replies[:100]]
    assert all(r.text == f"answer from {r.variant}" for r in replies)
    assert {s.role for s in sink.requests} == {"primary", "candidate"}


async def test_pins_and_readiness() -> None:
    gateway, engines, _ = _gateway(
        VariantConfig(name="dense"), VariantConfig(name="shadow", role=Role.SHADOW, sample_rate=0.0)
    )
    assert (await gateway.generate(GenerateCall(prompt="hi", variant="shadow"))).variant == "shadow"
    with pytest.raises(NotFound, match="unknown variant 'x'"):
        await gateway.generate(GenerateCall(prompt="hi", variant="x"))
    late = Gateway(Config(variants=[VariantConfig(name="dense")]), ListSink())
    assert not late.is_ready()
    with pytest.raises(Unavailable, match="no variant is ready"):
        await late.generate(GenerateCall(prompt="hi"))
    late.attach("dense", engines["dense"])
    assert late.is_ready() and (await late.generate(GenerateCall(prompt="hi"))).variant == "dense"


async def _mirrored(n: int, *shadows: VariantConfig) -> tuple[dict[str, FakeEngine], ListSink]:
    """`n` requests to a dense primary with `shadows`, once their mirrored copies are done."""
    gateway, engines, sink = _gateway(VariantConfig(name="dense"), *shadows)
    for _ in range(n):
        await gateway.generate(GenerateCall(prompt="hi"))
    await gateway.mirror.drain()
    return engines, sink


async def test_sample_rate_mirrors_a_share_of_requests() -> None:
    n = 400
    engines, sink = await _mirrored(
        n, VariantConfig(name="half", role=Role.SHADOW, sample_rate=0.5, max_in_flight=1000)
    )
    assert _within(len(engines["half"].prompts), n, 0.5)
    assert all(m.outcome == "compared" for m in sink.mirrors) and len(sink.mirrors) == len(
        engines["half"].prompts
    )


async def test_chat_messages_are_rendered_once_and_mirrored_as_rendered() -> None:
    gateway, engines, sink = _gateway(
        VariantConfig(name="dense"), VariantConfig(name="shadow", role=Role.SHADOW, sample_rate=1.0)
    )
    chat = (ChatMessage("system", "Be brief."), ChatMessage("user", "Capital of France?"))
    reply = await gateway.generate(GenerateCall(messages=chat))
    await gateway.mirror.drain()
    rendered = "<system>Be brief.\n<user>Capital of France?\n<assistant>"
    assert reply.variant == "dense" and engines["dense"].prompts == [rendered]
    assert engines["shadow"].prompts == [rendered]  # the shadow sees the same conversation
    assert [m.outcome for m in sink.mirrors] == ["compared"]


async def test_ignore_eos_reaches_the_shadow_but_not_the_probe_hook() -> None:
    """Shadows generate as the primary does (compared as generated); an answer run past its
    end-of-sequence is not scored as a probe answer, for the primary or the shadow."""
    gateway, engines, sink = _gateway(
        VariantConfig(name="dense"), VariantConfig(name="shadow", role=Role.SHADOW, sample_rate=1.0)
    )
    scored: list[tuple[str, str]] = []
    gateway.on_answer = lambda variant, prompt, text, primary: scored.append((variant, prompt))
    await gateway.generate(GenerateCall(prompt="fixed length", ignore_eos=True))
    await gateway.mirror.drain()
    assert engines["dense"].samplings[-1].ignore_eos and engines["shadow"].samplings[-1].ignore_eos
    assert [m.outcome for m in sink.mirrors] == ["compared"] and scored == []
    await gateway.generate(GenerateCall(prompt="as answered"))
    await gateway.mirror.drain()
    assert not engines["shadow"].samplings[-1].ignore_eos
    assert sorted(scored) == [("dense", "as answered"), ("shadow", "as answered")]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (GenerateCall(), "prompt must not be empty"),
        (GenerateCall(prompt="hi", messages=(ChatMessage("user", "hi"),)), "either prompt or messages"),
        (GenerateCall(messages=(ChatMessage("robot", "hi"),)), r"unknown message role\(s\) \['robot'\]"),
        (GenerateCall(messages=(ChatMessage("user", " "),)), "every message is empty"),
        (GenerateCall(messages=(ChatMessage("user", "hi"),) * 65), "at most 64 messages"),
    ],
)
async def test_bad_chat_requests_are_invalid_arguments(call: GenerateCall, message: str) -> None:
    gateway, engines, _ = _gateway(VariantConfig(name="dense"))
    with pytest.raises(InvalidArgument, match=message):
        await gateway.generate(call)
    assert engines["dense"].prompts == []


async def test_a_cancelled_primary_cancels_its_mirrored_copies() -> None:
    sink = ListSink()
    config = Config(variants=[VariantConfig(name="dense"), VariantConfig(name="slow", role=Role.SHADOW)])
    gateway = Gateway(config, sink)
    primary, shadow = HangingEngine(FakeEngine("dense")), HangingEngine(FakeEngine("slow"))
    gateway.attach("dense", primary)
    gateway.attach("slow", shadow)
    call = asyncio.create_task(gateway.generate(GenerateCall(prompt="hi")))
    while not (primary.holding and shadow.holding):
        await asyncio.sleep(0.01)
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    await asyncio.wait_for(gateway.mirror.drain(), 5)
    assert (primary.cancelled, shadow.cancelled, shadow.holding) == (1, 1, 0)
    assert [m.outcome for m in sink.mirrors] == ["dropped"]


class IdsEngine(FakeEngine):
    """Keeps the token ids each generation was handed, and counts tokenizations."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ids: list[tuple[int, ...]] = []
        self.encoded = self.encoded_before_generate = 0

    def encode_prompt(self, prompt: str) -> tuple[int, ...]:
        self.encoded += 1
        return tuple(100 + i for i in range(len(prompt.split())))

    def generate(
        self,
        prompt: str,
        sampling: SamplingSpec,
        request_id: str,
        logprobs: int | None = None,
        prompt_token_ids: Sequence[int] = (),
    ) -> AsyncGenerator[Chunk, None]:
        self.ids.append(tuple(prompt_token_ids))
        self.encoded_before_generate = self.encoded
        return super().generate(prompt, sampling, request_id, logprobs, prompt_token_ids)


async def test_the_primary_gets_the_ids_the_gateway_tokenized_once() -> None:
    gateway = Gateway(Config(variants=[VariantConfig(name="dense")]), ListSink())
    engine = IdsEngine("dense")
    gateway.attach("dense", engine)
    await gateway.generate(GenerateCall(prompt="the capital of France is"))
    assert engine.ids == [(100, 101, 102, 103, 104)]  # encode_prompt's ids, not re-derived
    assert engine.encoded_before_generate == 1  # the gateway tokenized once, for the length check


async def test_only_a_streamed_answer_is_asked_for_token_by_token() -> None:
    """A unary reply and a shadow's copy are read whole: the engine is asked for the first token and
    then the rest in one chunk (vLLM's stream_interval = max_tokens); a stream gets what it asked."""
    gateway, engines, _ = _gateway(
        VariantConfig(name="dense"), VariantConfig(name="shadow", role=Role.SHADOW, sample_rate=1.0)
    )
    await gateway.generate(GenerateCall(prompt="unary", max_tokens=40))
    await gateway.mirror.drain()
    assert engines["dense"].samplings[-1].stream_interval == 40
    assert engines["shadow"].samplings[-1].stream_interval == 40
    events = [e async for e in gateway.stream(GenerateCall(prompt="streamed", max_tokens=40))]
    assert events[-1].final is not None and engines["dense"].samplings[-1].stream_interval == 1
    await gateway.mirror.drain()
    assert engines["shadow"].samplings[-1].stream_interval == 40  # its copy is still read whole
    async for _ in gateway.stream(GenerateCall(prompt="every 4", max_tokens=40, stream_interval=4)):
        pass
    assert engines["dense"].samplings[-1].stream_interval == 4
    for bad in (0, 10**9):
        with pytest.raises(InvalidArgument, match="stream_interval must be in"):
            await gateway.generate(GenerateCall(prompt="hi", stream_interval=bad))


def test_whole_answer_asks_for_the_rest_in_one_chunk() -> None:
    spec = SamplingSpec(max_tokens=40, temperature=0.5)
    assert whole_answer(spec) == SamplingSpec(max_tokens=40, temperature=0.5, stream_interval=40)
    already = SamplingSpec(max_tokens=40, stream_interval=64)
    assert whole_answer(already) is already
    with pytest.raises(ValueError, match="at least 1"):
        SamplingSpec(max_tokens=4, stream_interval=0)


async def _three_chunks(*_: object, **__: object) -> AsyncGenerator[Chunk, None]:
    """Three tokens with the first chunk, then two chunks of one token, 10 ms apart."""
    for i, ids in enumerate(((1, 2, 3), (4,), (5,))):
        await asyncio.sleep(0.01)
        yield Chunk(
            "x", ids, finished=i == 2, finish_reason="length" if i == 2 else None, completion_tokens=5
        )


async def test_tokens_that_come_with_the_first_have_no_inter_token_gap() -> None:
    """Prefill is TTFT, not inter-token latency: only the chunks after the first give gaps."""
    sink, engine = ListSink(), FakeEngine("dense")
    engine.generate = _three_chunks  # type: ignore[method-assign]
    done = await run_generation(
        engine, VariantConfig(name="dense"), "p", SamplingSpec(max_tokens=5), sink, "r"
    )
    assert done.answer.token_ids == (1, 2, 3, 4, 5)
    (stats,) = sink.requests
    assert stats.ttft_s is not None and stats.ttft_s >= 0.01
    assert len(stats.inter_token_s) == 2 and all(g >= 0.005 for g in stats.inter_token_s)


async def test_score_rate_scores_a_share_of_the_copies_and_asks_the_primary_only_for_those() -> None:
    n = 400
    engines, sink = await _mirrored(
        n, VariantConfig(name="third", role=Role.SHADOW, score_rate=0.3, max_in_flight=1000)
    )
    scored = [m for m in sink.mirrors if m.teacher_forced_agreement is not None]
    assert len(sink.mirrors) == n and all(m.outcome == "compared" for m in sink.mirrors)
    assert _within(len(scored), n, 0.3) and engines["third"].scored == len(scored)
    asks = engines["dense"].logprob_asks
    assert sum(a is not None for a in asks) == len(scored)  # top-k logprobs only for scored copies
    assert all(m.kl is not None for m in scored)
    assert all(m.kl is None and m.token_agreement is not None for m in sink.mirrors if m not in scored)


async def test_score_rate_0_and_1_decide_per_shadow_without_a_draw() -> None:
    engines, sink = await _mirrored(
        5,
        VariantConfig(name="scored", role=Role.SHADOW),
        VariantConfig(name="text", role=Role.SHADOW, score_rate=0.0, gate=NO_KL),
    )
    assert engines["scored"].scored == 5 and engines["text"].scored == 0
    assert engines["dense"].logprob_asks == [5] * 5  # drift.top_k, for the scored shadow
    tf = {m.variant: m.teacher_forced_agreement for m in sink.mirrors}
    assert tf["scored"] == 1.0 and tf["text"] is None
    engines, _ = await _mirrored(1, VariantConfig(name="text", role=Role.SHADOW, score_rate=0.0, gate=NO_KL))
    assert engines["dense"].logprob_asks == [None] and engines["text"].scored == 0


@pytest.mark.parametrize(("score_rate", "draws"), [(0.0, 1), (1.0, 1), (0.5, 2)])
async def test_the_score_draw_is_made_only_inside_0_1_and_whether_or_not_the_copy_is_dropped(
    score_rate: float, draws: int
) -> None:
    """Draws per request from the shared RNG depend on the config only, not on load or readiness:
    a seeded gateway routes the same with the shadow's engine attached or missing (dropped)."""
    for attached in (True, False):
        variants = [
            VariantConfig(name="dense"),
            VariantConfig(name="s", role=Role.SHADOW, score_rate=score_rate, gate=NO_KL),
        ]
        engines = {"s": FakeEngine("s")} if attached else {}
        rng = random.Random(3)
        mirror = Mirror(variants, engines, DriftConfig(), drift.DriftBook(), ListSink(), rng)
        job = mirror.start("hi", SamplingSpec(max_tokens=4))
        assert (job is not None) is attached
        await mirror.close()
        reference = random.Random(3)
        for _ in range(draws):
            reference.random()
        assert rng.getstate() == reference.getstate()  # the same with the copy made or dropped
