"""Live knowledge probing while the gateway serves (`probes.enabled` in the config).

* Synthetic probes: `run_probe_traffic` draws `rate_per_s` facts per second from a seeded
  `ProbeSchedule` and sends each one to every ready variant (a "round"), straight to the engines
  with `run_generation` (greedy, `probes.max_tokens`): the usual per-variant request metrics count
  the probe requests, and the gateway's mirroring is bypassed so shadows see each probe once.
  Every answer is scored with `is_correct` and reported as `ProbeStats`, the flip being relative to
  the primary's answer in the same round. At most `MAX_ROUNDS_IN_FLIGHT` rounds run at once; ticks
  beyond that (slow engines) are skipped, as are ticks while the gateway is not ready or draining.
  `rate_per_s <= 0` sends none (live scoring only).
* Live requests: while the task runs it sets `gateway.on_answer` to a `LiveProbeScorer`, so every
  answered request whose prompt is a probe's (`match_probe`) is scored the same way, and so is each
  shadow's mirrored answer to it (flip relative to the primary's answer to that request).

A failing variant is logged and skipped; cancelling the task stops it and its rounds cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from serving.config import ProbeConfig
from serving.engines.base import SamplingSpec
from serving.gateway import Gateway
from serving.generation import Generated, run_generation
from serving.probes.facts import Fact, ProbeFileError, load_probe_set
from serving.probes.schedule import ProbeSchedule, build_index, match_probe
from serving.probes.scoring import is_correct
from serving.stats import ProbeStats, Sink

log = logging.getLogger(__name__)

MAX_ROUNDS_IN_FLIGHT = 4


def flip_of(primary_correct: bool | None, correct: bool) -> str | None:
    """ "lost" (primary right, variant wrong), "gained" (the reverse) or None (equal or unknown)."""
    if primary_correct is None or primary_correct == correct:
        return None
    return "lost" if primary_correct else "gained"


class LiveProbeScorer:
    """The gateway's answer hook: scores answers to prompts that are probes."""

    def __init__(self, facts: list[Fact], sink: Sink) -> None:
        self._index = build_index(facts)
        self._sink = sink

    def __call__(self, variant: str, prompt: str, text: str, primary_text: str | None = None) -> None:
        fact = match_probe(prompt, self._index)
        if fact is None:
            return
        correct = is_correct(text, fact)
        primary_correct = None if primary_text is None else is_correct(primary_text, fact)
        flip = flip_of(primary_correct, correct)
        self._sink.probe(ProbeStats(variant, fact.relation, correct, flip, primary_correct))


async def probe_round(gateway: Gateway, fact: Fact, max_tokens: int, sink: Sink) -> None:
    """Sends `fact` to every ready variant at once; reports each answer scored."""
    engines = gateway.engines
    variants = [v for v in gateway.config.variants if v.name in engines]
    spec = SamplingSpec(max_tokens=max_tokens, temperature=0.0)
    results = await asyncio.gather(
        *(run_generation(engines[v.name], v, fact.prompt, spec, sink, uuid.uuid4().hex) for v in variants),
        return_exceptions=True,
    )
    answers: dict[str, bool] = {}
    for variant, result in zip(variants, results, strict=True):
        if isinstance(result, Generated):
            answers[variant.name] = is_correct(result.answer.text, fact)
        elif isinstance(result, Exception):
            log.warning("probe on %s failed: %s: %s", variant.name, type(result).__name__, result)
        else:
            raise result
    primary = gateway.config.primary.name
    for name, correct in answers.items():
        paired = None if name == primary else answers.get(primary)
        sink.probe(ProbeStats(name, fact.relation, correct, flip_of(paired, correct), paired))


async def _safe_round(gateway: Gateway, fact: Fact, max_tokens: int, sink: Sink) -> None:
    try:
        await probe_round(gateway, fact, max_tokens, sink)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("probe round on %r failed", fact.prompt)


async def run_probe_traffic(gateway: Gateway, cfg: ProbeConfig, sink: Sink) -> None:
    """Runs until cancelled: synthetic probe rounds at `cfg.rate_per_s`, and live-answer scoring."""
    try:
        facts = load_probe_set(cfg.file)
    except ProbeFileError as exc:
        log.error("online probing disabled: %s", exc)
        return
    scorer = LiveProbeScorer(facts, sink)
    gateway.on_answer = scorer
    rounds: set[asyncio.Task[None]] = set()
    try:
        if cfg.rate_per_s <= 0:
            await asyncio.Event().wait()
        schedule = ProbeSchedule(facts, seed=0)
        interval = 1.0 / cfg.rate_per_s
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        log.info("probing every variant at %.3g facts/s from %s", cfg.rate_per_s, cfg.file)
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at + interval, loop.time() - interval)  # no burst after a stall
            if len(rounds) >= MAX_ROUNDS_IN_FLIGHT or not gateway.is_ready():
                continue
            task = asyncio.create_task(_safe_round(gateway, next(schedule), cfg.max_tokens, sink))
            rounds.add(task)
            task.add_done_callback(rounds.discard)
    finally:
        if gateway.on_answer is scorer:
            gateway.on_answer = None
        for task in list(rounds):
            task.cancel()
        await asyncio.gather(*rounds, return_exceptions=True)
