"""The batch probe runner behind `driftgate probe` and the demo: P@1 / P@k of every variant, a report.

Two ways to reach the variants:

* in-process (default): each variant's `VllmEngine` is started, probed and shut down before the
  next one starts (primary first), so memory holds one engine at a time; on a CPU box engines share
  the same cores anyway, so probing them side by side would not be faster.
* `--target HOST:PORT`: through a running gateway, each request pinned to a variant with the
  `variant` field (`ListVariants` names them and says which is the primary). The gateway has no
  scoring RPC, so P@k is not measured (`p_at_k` is null). Requests pinned to the primary are
  mirrored to the shadows as usual.

Per fact, P@1 is the greedy continuation (`max_tokens=8`, temperature 0) scored with
`serving.probes.scoring.is_correct`. P@k (in-process only) ranks the fact's candidates
(`candidates_for`, at most 10, drawn from the whole probe file even with `--limit`) by the
teacher-forced log-likelihood of `" " + candidate` after the prompt: the engine's tokens of the
prompt followed by those of `" " + candidate` (no special tokens), scored with `Engine.score`.
Requests are submitted concurrently (bounded) so vLLM batches them.

Outputs in `--out` (default `$DRIFTGATE_HOME/reports/<UTC timestamp>/`): `report.json` (schema of
`serving.probes.report`), `answers.jsonl` (every continuation and its score) and PNG plots.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from serving.config import Config
from serving.engines.base import Engine, SamplingSpec
from serving.engines.factory import EngineFactory, vllm_factory
from serving.errors import EngineFailure, GatewayError
from serving.generation import whole_answer
from serving.home import reports_dir
from serving.probes.facts import Fact
from serving.probes.report import validate_report
from serving.probes.scoring import VariantResult, build_report, candidates_for, hit_at_k, is_correct

P_AT_1_MAX_TOKENS = 8
MAX_CANDIDATES = 10
ENGINE_CONCURRENCY = 32
GATEWAY_CONCURRENCY = 16

T = TypeVar("T")


class ProbeRunError(Exception):
    """A problem the user can fix (unreachable gateway, engine that won't start): no traceback."""


class TokenizingEngine(Engine, Protocol):
    """An engine that exposes its tokenizer (`VllmEngine` does); needed for P@k."""

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]: ...


@dataclass
class VariantRun:
    """One variant's answers to the probes, aligned with the facts."""

    texts: list[str]
    correct: list[bool]
    hits_at_k: list[bool] | None
    completion_tokens: int
    generate_s: float

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second over the P@1 phase (requests in flight together)."""
        return self.completion_tokens / self.generate_s if self.generate_s > 0 else 0.0


@dataclass
class ProbeRun:
    """Every variant's run; the primary first."""

    primary: str
    runs: dict[str, VariantRun]
    model_paths: dict[str, str]
    k: int | None

    def report(self, facts: Sequence[Fact], created: str | None = None) -> dict[str, Any]:
        measured_k = self.k if any(r.hits_at_k is not None for r in self.runs.values()) else None
        per_variant = {n: VariantResult(r.correct, r.hits_at_k) for n, r in self.runs.items()}
        report = build_report(self.primary, per_variant, facts, k=measured_k, created=created)
        validate_report(report)
        return report

    def costs(self) -> dict[str, dict[str, float]]:
        """Per variant: bytes of its *.safetensors (when its model dir is readable here), tokens/s."""
        out: dict[str, dict[str, float]] = {}
        for name, run in self.runs.items():
            cost = {"tokens_per_s": run.tokens_per_s}
            files = list(Path(self.model_paths.get(name, "")).glob("*.safetensors"))
            if files:
                cost["bytes"] = float(sum(f.stat().st_size for f in files))
            out[name] = cost
        return out


async def _bounded(jobs: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Runs the jobs with at most `limit` in flight; the first failure cancels the rest."""
    sem = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with sem:
            return await job()

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(j)) for j in jobs]
    except ExceptionGroup as eg:
        raise eg.exceptions[0] from None
    return [t.result() for t in tasks]


async def _answer_all(
    jobs: Sequence[Callable[[], Awaitable[tuple[str, int]]]], facts: Sequence[Fact], concurrency: int
) -> VariantRun:
    """Runs one greedy answer job per fact (bounded) and scores the answers: P@1 of one variant."""
    start = time.perf_counter()
    outs = await _bounded(jobs, concurrency)
    texts = [text for text, _ in outs]
    return VariantRun(
        texts=texts,
        correct=[is_correct(t, f) for t, f in zip(texts, facts, strict=True)],
        hits_at_k=None,
        completion_tokens=sum(n for _, n in outs),
        generate_s=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- in-process engines


async def _greedy(engine: Engine, prompt: str, max_tokens: int) -> tuple[str, int]:
    spec = whole_answer(SamplingSpec(max_tokens=max_tokens, temperature=0.0))
    parts: list[str] = []
    tokens = 0
    async with aclosing(engine.generate(prompt, spec, uuid.uuid4().hex)) as chunks:
        async for chunk in chunks:
            parts.append(chunk.text)
            tokens = chunk.completion_tokens
    return "".join(parts), tokens


async def _loglik(engine: Engine, prompt_ids: list[int], answer_ids: list[int]) -> float:
    """Sum of the logprobs of `answer_ids` after `prompt_ids`, teacher-forced."""
    scores = await engine.score([*prompt_ids, *answer_ids], len(prompt_ids), 1, uuid.uuid4().hex)
    if len(scores) != len(answer_ids) or any(
        t not in pos for pos, t in zip(scores, answer_ids, strict=False)
    ):
        raise EngineFailure("score() did not return the logprob of every scored token")
    return math.fsum(pos[t] for pos, t in zip(scores, answer_ids, strict=True))


async def _hits_at_k(
    engine: TokenizingEngine, facts: Sequence[Fact], pool: Sequence[Fact], k: int, concurrency: int
) -> list[bool]:
    keys: list[tuple[int, str]] = []
    jobs: list[Callable[[], Awaitable[float]]] = []
    for i, fact in enumerate(facts):
        prompt_ids = engine.tokenize(fact.prompt)
        for cand in candidates_for(fact, pool, max_candidates=MAX_CANDIDATES):
            keys.append((i, cand))
            answer_ids = engine.tokenize(" " + cand, add_special_tokens=False)
            jobs.append(functools.partial(_loglik, engine, prompt_ids, answer_ids))
    logliks: list[dict[str, float]] = [{} for _ in facts]
    for (i, cand), value in zip(keys, await _bounded(jobs, concurrency), strict=True):
        logliks[i][cand] = value
    return [hit_at_k(fact, ll, k) for fact, ll in zip(facts, logliks, strict=True)]


async def probe_engine(
    engine: Engine,
    facts: Sequence[Fact],
    *,
    k: int | None = 5,
    pool: Sequence[Fact] | None = None,
    concurrency: int = ENGINE_CONCURRENCY,
) -> VariantRun:
    """P@1 (and, when `k` is set and the engine can tokenize, P@k) of one engine."""
    jobs = [functools.partial(_greedy, engine, f.prompt, P_AT_1_MAX_TOKENS) for f in facts]
    run = await _answer_all(jobs, facts, concurrency)
    if k is not None and hasattr(engine, "tokenize"):
        run.hits_at_k = await _hits_at_k(engine, facts, pool or facts, k, concurrency)  # type: ignore[arg-type]
    return run


async def probe_engines(
    engines: Mapping[str, Engine],
    primary: str,
    facts: Sequence[Fact],
    k: int | None = 5,
    *,
    pool: Sequence[Fact] | None = None,
    concurrency: int = ENGINE_CONCURRENCY,
) -> dict[str, Any]:
    """The probe report of running engines (probed one after the other, the primary first)."""
    if primary not in engines:
        raise ValueError(f"primary {primary!r} is not among the engines {sorted(engines)}")
    order = [primary, *(n for n in engines if n != primary)]
    runs = {n: await probe_engine(engines[n], facts, k=k, pool=pool, concurrency=concurrency) for n in order}
    return ProbeRun(primary, runs, {}, k).report(facts, created=_now())


async def run_config(
    config: Config,
    facts: Sequence[Fact],
    *,
    k: int | None = 5,
    pool: Sequence[Fact] | None = None,
    factory: EngineFactory = vllm_factory,
    shutdown: bool = True,
    log: Callable[[str], None] = lambda _: None,
) -> ProbeRun:
    """Starts each variant's engine in turn (primary first), probes it, shuts it down."""
    runs: dict[str, VariantRun] = {}
    for variant in config.primary_first():
        log(f"starting variant {variant.name} ({variant.model_path})")
        try:
            engine = await factory(variant)
        except Exception as exc:
            raise ProbeRunError(f"variant {variant.name}: its engine did not start: {exc}") from exc
        try:
            log(f"probing variant {variant.name} on {len(facts)} facts")
            runs[variant.name] = await probe_engine(engine, facts, k=k, pool=pool)
        except GatewayError as exc:
            raise ProbeRunError(f"variant {variant.name}: {exc.message}") from exc
        finally:
            if shutdown:
                await engine.shutdown()
    return ProbeRun(config.primary.name, runs, {v.name: v.model_path for v in config.variants}, k)


# --------------------------------------------------------------------------- through a gateway


async def run_gateway(
    target: Any,
    facts: Sequence[Fact],
    *,
    concurrency: int = GATEWAY_CONCURRENCY,
    timeout_s: float = 120.0,
    progress: Callable[[str], None] | None = None,
) -> ProbeRun:
    """P@1 of every ready variant of a running gateway; `target` is "HOST:PORT" or a GatewayStub;
    `progress` is called with each variant's name once it is probed."""
    import grpc

    from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc

    if isinstance(target, str):
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.GatewayStub(channel)
            return await _run_stub(stub, facts, concurrency, timeout_s, f"the gateway at {target}", progress)
    return await _run_stub(target, facts, concurrency, timeout_s, "the gateway", progress)


async def _run_stub(
    stub: Any,
    facts: Sequence[Fact],
    concurrency: int,
    timeout_s: float,
    where: str,
    progress: Callable[[str], None] | None,
) -> ProbeRun:
    import grpc

    from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb

    try:
        listed = await stub.ListVariants(pb.ListVariantsRequest(), timeout=15.0)
    except grpc.aio.AioRpcError as exc:
        raise ProbeRunError(f"cannot reach {where}: {exc.code().name}: {exc.details()}") from None
    primary = next((v.name for v in listed.variants if v.role == pb.ROLE_PRIMARY), None)
    ready = sorted((v for v in listed.variants if v.ready), key=lambda v: v.role != pb.ROLE_PRIMARY)
    if primary is None or primary not in {v.name for v in ready}:
        raise ProbeRunError(f"{where} has no ready primary variant")

    async def ask(name: str, fact: Fact) -> tuple[str, int]:
        req = pb.GenerateRequest(
            prompt=fact.prompt, max_tokens=P_AT_1_MAX_TOKENS, temperature=0.0, variant=name
        )
        try:
            reply = await stub.Generate(req, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise ProbeRunError(f"variant {name}: {exc.code().name}: {exc.details()}") from None
        return reply.text, reply.completion_tokens

    runs: dict[str, VariantRun] = {}
    for v in ready:
        runs[v.name] = await _answer_all(
            [functools.partial(ask, v.name, f) for f in facts], facts, concurrency
        )
        if progress is not None:
            progress(v.name)
    return ProbeRun(primary, runs, {v.name: v.model_path for v in ready}, None)


async def probe_gateway(
    target: Any, facts: Sequence[Fact], *, concurrency: int = GATEWAY_CONCURRENCY
) -> dict[str, Any]:
    """The probe report (P@1 only; p_at_k null) of every ready variant of a running gateway.
    `target` is "HOST:PORT" or a `GatewayStub`; raises ProbeRunError when it can't be reached."""
    return (await run_gateway(target, facts, concurrency=concurrency)).report(facts, created=_now())


# --------------------------------------------------------------------------- outputs and CLI


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_report_dir() -> Path:
    return reports_dir() / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def write_outputs(
    run: ProbeRun, facts: Sequence[Fact], out_dir: Path, created: str | None = None
) -> list[Path]:
    """Writes report.json, answers.jsonl and the PNG plots; returns their paths."""
    from serving.probes.plots import write_plots

    report = run.report(facts, created=created or _now())
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = out_dir / "report.json"
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    answers = out_dir / "answers.jsonl"
    with answers.open("w", encoding="utf-8") as fh:
        for name, r in run.runs.items():
            for i, fact in enumerate(facts):
                record: dict[str, Any] = {"variant": name, "relation": fact.relation, "prompt": fact.prompt}
                record |= {"object": fact.object, "text": r.texts[i], "correct": r.correct[i]}
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return [report_path, answers, *write_plots(report, out_dir, costs=run.costs())]
