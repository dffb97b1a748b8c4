"""Mirroring: copies of primary requests sent to shadow variants, then compared with the primary.

A mirrored copy runs as a tracked task, off the primary's path: it is sampled (per-shadow rate),
bounded (in-flight copies per shadow beyond which new copies are dropped and counted) and timed
out. It waits for the primary's answer, scores the primary's completion under the shadow
(teacher-forced prompt logprobs; the primary's own logprobs come with its generation), compares
the two with `serving.drift` and reports the outcome. Scoring re-reads the shadow's weights over
the whole answer and asks the primary for its top-k logprobs, so a shadow's `score_rate` scores
only a sample of the copies (each drawn on its own); the rest are compared on their text. A slow,
failing or not-yet-ready shadow never touches the primary's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from serving import drift
from serving.config import DriftConfig, Role, VariantConfig
from serving.engines.base import Engine, SamplingSpec, TokenLogprobs
from serving.generation import Generated, run_generation
from serving.stats import MirrorStats, Sink

log = logging.getLogger(__name__)

AnswerHook = Callable[[str, str, str, str | None], None]
"""Called with (variant, prompt, answer text, primary's answer text or None) for every answered
request and every compared mirrored copy (online probe scoring sets one; see `Gateway.on_answer`)."""


class PrimaryGone(Exception):
    """The primary produced no answer (failed or cancelled): there is nothing to compare with."""


@dataclass(frozen=True)
class PrimaryResult:
    answer: drift.Answer
    prompt_token_ids: tuple[int, ...]
    logprobs: tuple[TokenLogprobs, ...]


class MirrorJob:
    """The primary's side of one mirrored request: resolve it once the primary finishes. When the
    primary fails or is cancelled, the copies still generating are cancelled too (their engine
    requests aborted): with no primary answer they have nothing to be compared with."""

    def __init__(self) -> None:
        self._future: asyncio.Future[PrimaryResult] = asyncio.get_running_loop().create_future()
        self.copies: list[asyncio.Task[None]] = []
        self.logprobs: int | None = None
        """Top-k logprobs the primary should return with its tokens: set when a copy is scored."""

    def primary_done(self, generated: Generated) -> None:
        if not self._future.done():
            self._future.set_result(
                PrimaryResult(generated.answer, generated.prompt_token_ids, generated.logprobs)
            )

    def primary_failed(self) -> None:
        if not self._future.done():
            self._future.set_exception(PrimaryGone())
            self._future.exception()  # mark retrieved: shadows may all have been dropped
            for copy in self.copies:
                copy.cancel()

    @property
    def primary_gone(self) -> bool:
        return self._future.done() and self._future.exception() is not None

    async def wait(self) -> PrimaryResult:
        return await asyncio.shield(self._future)


class Mirror:
    """Starts, bounds, times out and tracks mirrored copies; feeds the drift book and the sink."""

    def __init__(
        self,
        variants: list[VariantConfig],
        engines: Mapping[str, Engine],
        drift_cfg: DriftConfig,
        book: drift.DriftBook,
        sink: Sink,
        rng: random.Random,
    ) -> None:
        self._shadows = [v for v in variants if v.role is Role.SHADOW]
        self._engines = engines
        self._cfg = drift_cfg
        self._book = book
        self._sink = sink
        self._rng = rng
        self._in_flight = {v.name: 0 for v in self._shadows}
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_answer: AnswerHook | None = None

    def set_variants(self, variants: list[VariantConfig]) -> None:
        """New shadows, sample and score rates for the copies started from now on (running ones go on)."""
        self._shadows = [v for v in variants if v.role is Role.SHADOW]
        for v in self._shadows:
            self._in_flight.setdefault(v.name, 0)

    @property
    def active(self) -> bool:
        return bool(self._shadows)

    def in_flight(self, name: str) -> int:
        return self._in_flight.get(name, 0)

    def start(self, prompt: str, sampling: SamplingSpec) -> MirrorJob | None:
        """Starts a copy of the request on every sampled shadow; returns None when none is."""
        job: MirrorJob | None = None
        for shadow in self._shadows:
            if self._rng.random() >= shadow.sample_rate:
                continue
            scored = self._scored(shadow)  # drawn before a drop, so the draws do not depend on load
            engine = self._engines.get(shadow.name)
            if engine is None or self._in_flight[shadow.name] >= shadow.max_in_flight:
                self._outcome(shadow.name, "dropped")
                continue
            job = job or MirrorJob()
            if scored:
                job.logprobs = self._cfg.top_k
            self._in_flight[shadow.name] += 1
            task = asyncio.create_task(self._run(shadow, engine, prompt, sampling, job, scored))
            job.copies.append(task)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return job

    def _scored(self, shadow: VariantConfig) -> bool:
        """Whether this copy is scored teacher-forced (a draw only for rates strictly inside 0-1)."""
        if not self._cfg.teacher_forced or shadow.score_rate <= 0.0:
            return False
        return shadow.score_rate >= 1.0 or self._rng.random() < shadow.score_rate

    def answered(
        self, variant: str, prompt: str, sampling: SamplingSpec, text: str, primary_text: str | None
    ) -> None:
        """Passes an answer to `on_answer`, if set; a failing hook is logged, never raised. An
        `ignore_eos` answer is not passed: run past its end, it is not the answer a probe scores."""
        if self.on_answer is None or sampling.ignore_eos:
            return
        try:
            self.on_answer(variant, prompt, text, primary_text)
        except Exception:
            log.exception("answer hook failed")

    def _outcome(self, name: str, outcome: str, result: drift.DriftResult | None = None) -> None:
        if result is None:
            self._book.count_outcome(name, outcome)
            self._sink.mirror(MirrorStats(name, outcome))
            return
        self._book.add(name, result)
        self._sink.mirror(
            MirrorStats(
                name,
                "compared",
                exact_match=result.exact_match,
                token_agreement=result.token_agreement,
                first_divergence=result.first_divergence,
                teacher_forced_agreement=result.teacher_forced_agreement,
                kl=result.kl,
            )
        )

    async def _run(
        self,
        shadow: VariantConfig,
        engine: Engine,
        prompt: str,
        sampling: SamplingSpec,
        job: MirrorJob,
        scored: bool,
    ) -> None:
        name = shadow.name
        try:
            async with asyncio.timeout(shadow.timeout_s):
                mine = await run_generation(engine, shadow, prompt, sampling, self._sink, uuid.uuid4().hex)
                primary = await job.wait()
                result = await self._compare(engine, primary, mine.answer, scored)
        except TimeoutError:
            self._outcome(name, "timeout")
        except PrimaryGone:
            self._outcome(name, "dropped")
        except asyncio.CancelledError:
            if not job.primary_gone:
                raise  # the mirror is closing
            self._outcome(name, "dropped")  # cancelled with its primary
        except Exception as exc:
            log.warning("mirror to %s failed: %s: %s", name, type(exc).__name__, exc)
            self._outcome(name, "error")
        else:
            self._outcome(name, "compared", result)
            self.answered(name, prompt, sampling, mine.answer.text, primary.answer.text)
        finally:
            self._in_flight[name] -= 1

    async def _compare(
        self, engine: Engine, primary: PrimaryResult, shadow: drift.Answer, scored: bool
    ) -> drift.DriftResult:
        if not (scored and primary.answer.token_ids and primary.logprobs):
            return drift.compare(primary.answer, shadow)
        ids = primary.prompt_token_ids + primary.answer.token_ids
        scores = await engine.score(ids, len(primary.prompt_token_ids), self._cfg.top_k, uuid.uuid4().hex)
        return drift.compare(primary.answer, shadow, primary.logprobs, scores)

    async def close(self) -> None:
        """Cancels every mirrored copy still running (their engine requests are aborted)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)

    async def drain(self) -> None:
        """Waits for the mirrored copies in flight (tests and benchmarks use it)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
