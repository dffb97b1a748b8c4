"""The thin `driftgate.v1.Gateway` servicer: protobuf in, domain call, protobuf out."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from serving.config import Role
from serving.drift_book import DriftSummary
from serving.errors import InvalidArgument
from serving.gate.verdict import VariantVerdict, Verdict
from serving.gateway import ChatMessage, Gateway, GenerateCall, Reply
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
from serving.grpc.auth import CALLER
from serving.traffic import TrafficChange, changed, promoted

_ROLES = {Role.PRIMARY: pb.ROLE_PRIMARY, Role.CANDIDATE: pb.ROLE_CANDIDATE, Role.SHADOW: pb.ROLE_SHADOW}
VERDICTS = {
    Verdict.PASS: pb.VERDICT_PASS,
    Verdict.FAIL: pb.VERDICT_FAIL,
    Verdict.UNDECIDED: pb.VERDICT_UNDECIDED,
}


def to_call(req: pb.GenerateRequest) -> GenerateCall:
    received = time.perf_counter()
    return GenerateCall(
        prompt=req.prompt,
        max_tokens=req.max_tokens if req.HasField("max_tokens") else None,
        temperature=req.temperature if req.HasField("temperature") else None,
        top_p=req.top_p if req.HasField("top_p") else None,
        seed=req.seed if req.HasField("seed") else None,
        stop=tuple(req.stop),
        variant=req.variant,
        request_id=req.request_id,
        messages=tuple(ChatMessage(m.role, m.content) for m in req.messages),
        ignore_eos=req.ignore_eos,
        stream_interval=req.stream_interval if req.HasField("stream_interval") else None,
        caller=CALLER.get(),
        door="grpc",
        received_at=received,
    )


def _summary_fields(reply: Reply) -> dict[str, Any]:
    return {
        "variant": reply.variant,
        "finish_reason": reply.finish_reason,
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "request_id": reply.request_id,
    }


def _role(value: int) -> Role:
    role = next((r for r, v in _ROLES.items() if v == value), None)
    if role is None:
        raise InvalidArgument(f"role must be ROLE_CANDIDATE or ROLE_SHADOW, got {value}")
    return role


def to_verdict(v: VariantVerdict) -> pb.VariantVerdict:
    checks = [
        pb.GateCheck(
            name=c.name,
            figure=c.figure,
            lower=c.interval.lo,
            upper=c.interval.hi,
            threshold=c.threshold,
            direction=c.direction,
            samples=c.n,
            verdict=VERDICTS[c.verdict],
            note=c.note,
        )
        for c in v.checks
    ]
    return pb.VariantVerdict(variant=v.variant, verdict=VERDICTS[v.verdict], checks=checks, note=v.note)


def to_drift(name: str, s: DriftSummary, verdict: Verdict | None = None) -> pb.VariantDrift:
    msg = pb.VariantDrift(
        variant=name,
        compared=s.compared,
        dropped=s.dropped,
        errors=s.error,
        timeouts=s.timeout,
        exact_matches=s.exact_matches,
        exact_match_rate=s.exact_match_rate or 0.0,
        mean_token_agreement=s.mean_token_agreement or 0.0,
        mean_first_divergence_tokens=s.mean_first_divergence or 0.0,
        kl_scored=s.kl_scored,
    )
    if s.mean_teacher_forced_agreement is not None:
        msg.mean_teacher_forced_agreement = s.mean_teacher_forced_agreement
    if s.mean_kl is not None:
        msg.mean_kl = s.mean_kl
    if verdict is not None:
        msg.verdict = VERDICTS[verdict]
    return msg


class GatewayServicer(pb_grpc.GatewayServicer):
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def Generate(self, request: pb.GenerateRequest, context: Any) -> pb.GenerateResponse:
        reply = await self._gateway.generate(to_call(request))
        return pb.GenerateResponse(text=reply.text, **_summary_fields(reply))

    async def GenerateStream(
        self, request: pb.GenerateRequest, context: Any
    ) -> AsyncGenerator[pb.GenerateChunk, None]:
        async with aclosing(self._gateway.stream(to_call(request))) as events:
            async for event in events:
                if event.final is None:
                    chunk = pb.GenerateChunk(text=event.text)
                else:
                    chunk = pb.GenerateChunk(text=event.text, finished=True, **_summary_fields(event.final))
                event.handed_off()  # grpc.aio resumes us only after the write's completion trip
                yield chunk

    async def SetTraffic(self, request: pb.SetTrafficRequest, context: Any) -> pb.ListVariantsResponse:
        change = TrafficChange(
            request.variant,
            weight=request.weight if request.HasField("weight") else None,
            sample_rate=request.sample_rate if request.HasField("sample_rate") else None,
            role=_role(request.role) if request.HasField("role") else None,
            score_rate=request.score_rate if request.HasField("score_rate") else None,
        )
        self._gateway.change_traffic(lambda config: changed(config, change), "admin", CALLER.get())
        return await self.ListVariants(pb.ListVariantsRequest(), context)

    async def Promote(self, request: pb.PromoteRequest, context: Any) -> pb.ListVariantsResponse:
        self._gateway.change_traffic(lambda config: promoted(config, request.variant), "admin", CALLER.get())
        return await self.ListVariants(pb.ListVariantsRequest(), context)

    async def ListVariants(self, request: pb.ListVariantsRequest, context: Any) -> pb.ListVariantsResponse:
        return pb.ListVariantsResponse(
            variants=[
                pb.Variant(
                    name=v.name,
                    role=_ROLES[v.role],
                    model_path=v.model_path,
                    ready=v.ready,
                    weight=v.weight,
                    sample_rate=v.sample_rate,
                    score_rate=v.score_rate,
                )
                for v in self._gateway.variants()
            ]
        )

    async def GetDriftSummary(
        self, request: pb.GetDriftSummaryRequest, context: Any
    ) -> pb.GetDriftSummaryResponse:
        verdicts = {v.variant: v.verdict for v in await self._gateway.verdicts()}
        summaries, since = self._gateway.drift_summary(reset=request.reset)
        return pb.GetDriftSummaryResponse(
            primary=self._gateway.config.primary.name,
            variants=[to_drift(name, s, verdicts.get(name)) for name, s in summaries.items()],
            since_unix_seconds=since,
        )

    async def GetVerdict(self, request: pb.GetVerdictRequest, context: Any) -> pb.GetVerdictResponse:
        _, since = self._gateway.drift_summary()
        verdicts = await self._gateway.verdicts(request.variant)
        return pb.GetVerdictResponse(
            primary=self._gateway.config.primary.name,
            verdicts=[to_verdict(v) for v in verdicts],
            since_unix_seconds=since,
        )
