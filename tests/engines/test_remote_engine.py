"""RemoteEngine against a real vLLM OpenAI-compatible server, compared with the in-process engine
on the same checkpoint: generation, logprobs, scoring, pass-through of sampling settings, error
mapping and cancellation (the server's own /metrics tells whether it aborted)."""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import aclosing
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
import yaml

from serving.engines.base import Chunk, Engine, SamplingSpec, TokenLogprobs
from serving.engines.remote import RemoteEngine
from serving.engines.vllm_engine import compile_cache_env
from serving.engines.vllm_plugin import ENV as AOT_LOAD_ENV
from serving.engines.vllm_server import (
    ServerProcess,
    free_port,
    group_alive,
    running_server,
    server_env,
    variant_command,
    variant_env,
)
from serving.errors import ConfigError, EngineFailure, InvalidArgument, Unavailable
from tests.conftest import FRANCE, model_dir
from tests.engines.conftest import MAX_MODEL_LEN, SERVER_CORES, FakeServer, server_variant, stub_command

engine = pytest.mark.engine

PROMPTS = (FRANCE, "Water boils at a temperature of", "def add(a, b):\n    ")
COUNTING = "Count: 1, 2, 3, 4, 5, 6, 7,"  # keeps going (the model stops at once on most instructions)
TOL = 1e-2
CHAT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
"""A chat turn in SmolLM2's template: the answer ends with <|im_end|>, its end-of-sequence token."""


async def collect(
    engine: Engine, prompt: str, sampling: SamplingSpec, rid: str, logprobs: int | None = None
) -> list[Chunk]:
    async with aclosing(engine.generate(prompt, sampling, rid, logprobs=logprobs)) as chunks:
        return [c async for c in chunks]


def text(chunks: Sequence[Chunk]) -> str:
    return "".join(c.text for c in chunks)


def ids(chunks: Sequence[Chunk]) -> tuple[int, ...]:
    return tuple(t for c in chunks for t in c.token_ids)


def positions(chunks: Sequence[Chunk]) -> list[TokenLogprobs]:
    return [p for c in chunks for p in c.logprobs]


def assert_close(remote: Mapping[int, float], local: Mapping[int, float], actual: int) -> None:
    """Same entries (top-k plus the actual token) and logprobs within TOL; a near tie at the
    edge of the top-k may swap one entry."""
    assert actual in remote and actual in local
    common = remote.keys() & local.keys()
    assert len(common) >= len(local) - 1, (remote, local)
    for t in common:
        assert math.isclose(remote[t], local[t], abs_tol=TOL), (t, remote[t], local[t])


async def requests_running(url: str) -> float:
    """vLLM's own gauge of the requests it is running."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
        body = await resp.text()
    lines = [ln for ln in body.splitlines() if ln.startswith("vllm:num_requests_running")]
    assert lines, "no vllm:num_requests_running in /metrics"
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)


async def wait_running(url: str, want: float, within_s: float) -> float:
    """Seconds until the server's running-request gauge reads `want` (fails after `within_s`)."""
    start = time.monotonic()
    while (got := await requests_running(url)) != want:
        assert time.monotonic() - start < within_s, f"num_requests_running still {got}"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


@engine
async def test_connect_reads_the_served_model(remote: RemoteEngine, local: Engine) -> None:
    assert remote.ready
    assert remote.max_model_len == MAX_MODEL_LEN == local.max_model_len
    assert isinstance(remote, Engine)
    for prompt in PROMPTS:
        want = local.tokenize(prompt)  # type: ignore[attr-defined]
        assert remote.tokenize(prompt) == want
        assert await remote.tokenize_async(prompt) == want
        assert remote.encode_prompt(prompt) == local.encode_prompt(prompt) == tuple(want)
    assert remote.tokenize(" Paris", add_special_tokens=False) == local.tokenize(  # type: ignore[attr-defined]
        " Paris", add_special_tokens=False
    )


@engine
async def test_without_a_local_tokenizer_the_server_counts(remote: RemoteEngine) -> None:
    bare = RemoteEngine("dense", remote.url, "dense")
    try:
        await bare.connect()
        assert bare.encode_prompt(FRANCE) == ()  # the server enforces the context length itself
        assert await bare.count_tokens_async(FRANCE) == len(remote.encode_prompt(FRANCE))
        with pytest.raises(Unavailable, match="no local tokenizer"):
            bare.tokenize(FRANCE)
    finally:
        await bare.shutdown()


@engine
async def test_wrong_served_name_is_a_config_error(remote: RemoteEngine) -> None:
    other = RemoteEngine("int4", remote.url, "int4")
    try:
        with pytest.raises(ConfigError, match=r"serves \['dense'\], not 'int4'"):
            await other.connect()
        with pytest.raises(Unavailable, match="not 'int4'"):
            await other.check_health()
        assert not other.ready
        with pytest.raises(Unavailable, match="not connected"):
            _ = other.max_model_len
    finally:
        await other.shutdown()


@engine
async def test_render_chat_matches_the_in_process_engine(remote: RemoteEngine, local: Engine) -> None:
    messages = [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    want = await local.render_chat(messages)
    assert "France" in want
    assert await remote.render_chat(messages) == want  # the local tokenizer's template
    bare = RemoteEngine("dense", remote.url, "dense")
    try:
        await bare.connect()
        assert await bare.render_chat(messages) == want  # rendered and detokenized by the server
    finally:
        await bare.shutdown()
    sampling = SamplingSpec(max_tokens=12)
    mine, ref = (
        await collect(remote, want, sampling, "chat-r"),
        await collect(local, want, sampling, "chat-l"),
    )
    assert text(mine) == text(ref) and ids(mine) == ids(ref)


@engine
@pytest.mark.parametrize("prompt", PROMPTS)
async def test_greedy_generation_matches_the_in_process_engine(
    remote: RemoteEngine, local: Engine, prompt: str
) -> None:
    sampling = SamplingSpec(max_tokens=24)
    mine = await collect(remote, prompt, sampling, f"g-{hash(prompt)}")
    want = await collect(local, prompt, sampling, f"l-{hash(prompt)}")
    assert text(mine) == text(want) and text(mine)
    assert ids(mine) == ids(want)
    last, ref = mine[-1], want[-1]
    assert last.finished and not any(c.finished for c in mine[:-1])
    assert (last.finish_reason, last.completion_tokens) == (ref.finish_reason, ref.completion_tokens)
    assert last.completion_tokens == len(ids(mine))
    assert last.prompt_token_ids == ref.prompt_token_ids == tuple(remote.tokenize(prompt))
    assert last.prompt_tokens == len(last.prompt_token_ids)
    assert all(c.prompt_token_ids == last.prompt_token_ids for c in mine)
    assert all(c.prompt_token_ids is ref.prompt_token_ids for c in want)  # copied once, not per token
    assert remote.num_unfinished() == 0


@engine
async def test_logprobs_match_the_in_process_engine(remote: RemoteEngine, local: Engine) -> None:
    sampling = SamplingSpec(max_tokens=16)
    mine = await collect(remote, FRANCE, sampling, "lp-r", logprobs=5)
    want = await collect(local, FRANCE, sampling, "lp-l", logprobs=5)
    got, ref = positions(mine), positions(want)
    assert ids(mine) == ids(want)
    assert len(got) == len(ids(mine)) == len(ref)
    for token, pos, ref_pos in zip(ids(mine), got, ref, strict=True):
        assert 5 <= len(pos) <= 6  # the top-5 plus the sampled token when outside it
        assert all(isinstance(t, int) and lp <= 0.0 for t, lp in pos.items())
        assert max(pos, key=lambda t: pos[t]) == token  # greedy: the sampled token is the top-1
        assert_close(pos, ref_pos, token)
    assert all(c.logprobs == () for c in await collect(remote, FRANCE, sampling, "lp-none"))


@engine
async def test_stream_interval_batches_tokens_on_both_engines(remote: RemoteEngine, local: Engine) -> None:
    """vLLM's per-request stream_interval: the first token at once, then every 5, the rest at the
    end; the same tokens, text and logprobs as token by token (the remote one from `vllm serve`)."""
    every = SamplingSpec(max_tokens=12, ignore_eos=True)
    want = await collect(local, COUNTING, every, "si-every", logprobs=2)
    assert [len(c.token_ids) for c in want] == [1] * 12
    for eng, rid in ((local, "si-l"), (remote, "si-r")):
        got = await collect(eng, COUNTING, replace(every, stream_interval=5), rid, logprobs=2)
        assert ids(got) == ids(want) and text(got) == text(want)
        assert [len(c.token_ids) for c in got if c.token_ids] == [1, 5, 5, 1], rid
        assert got[-1].finished and got[-1].completion_tokens == 12
        assert [max(p, key=lambda t: p[t]) for p in positions(got)] == list(ids(want))


@engine
async def test_score_matches_the_in_process_engine(remote: RemoteEngine, local: Engine) -> None:
    chunks = await collect(local, FRANCE, SamplingSpec(max_tokens=12), "sc-gen")
    prompt_ids = chunks[-1].prompt_token_ids
    seq = [*prompt_ids, *ids(chunks)]
    start = len(prompt_ids)
    mine = await remote.score(seq, start, 5, "sc-r")
    want = await local.score(seq, start, 5, "sc-l")
    assert len(mine) == len(want) == len(seq) - start
    for token, pos, ref in zip(seq[start:], mine, want, strict=True):
        assert 5 <= len(pos) <= 6
        assert_close(pos, ref, token)
    # from position 0: the first token has no context (an empty mapping, as in-process)
    whole = await remote.score(seq, 0, 2, "sc-0")
    assert whole[0] == {} and len(whole) == len(seq)
    # a token far outside the top-k is kept, with its (low) logprob
    odd = [*prompt_ids, 0]
    (pos,) = await remote.score(odd, start, 1, "sc-odd")
    ((ref,),) = [await local.score(odd, start, 1, "sc-odd-l")]
    assert 0 in pos and len(pos) == 2
    assert_close(pos, ref, 0)
    assert remote.num_unfinished() == 0


@engine
async def test_stop_and_max_tokens_pass_through(remote: RemoteEngine, local: Engine) -> None:
    short = SamplingSpec(max_tokens=3)
    mine = await collect(remote, COUNTING, short, "mt")
    assert len(ids(mine)) == 3 and mine[-1].finish_reason == "length"
    stop = SamplingSpec(max_tokens=40, stop=(" 10",))
    mine = await collect(remote, COUNTING, stop, "st-r")
    want = await collect(local, COUNTING, stop, "st-l")
    assert mine[-1].finish_reason == want[-1].finish_reason == "stop"
    assert text(mine) == text(want) == " 8, 9,"


@engine
async def test_ignore_eos_passes_through(remote: RemoteEngine, local: Engine) -> None:
    """The instruction's answer ends with the end-of-turn token; `ignore_eos` reaches the server
    (vLLM's extension of the OpenAI API) and the answer runs to max_tokens, as in-process."""
    ended = await collect(remote, CHAT, SamplingSpec(max_tokens=48), "ie-0")
    assert ended[-1].finish_reason == "stop" and len(ids(ended)) < 48
    spec = SamplingSpec(max_tokens=48, ignore_eos=True)
    mine = await collect(remote, CHAT, spec, "ie-r")
    want = await collect(local, CHAT, spec, "ie-l")
    assert mine[-1].finish_reason == want[-1].finish_reason == "length"
    assert len(ids(mine)) == len(ids(want)) == 48
    assert ids(mine)[: len(ids(ended))] == ids(want)[: len(ids(ended))] == ids(ended)


@engine
async def test_seed_passes_through(remote: RemoteEngine, local: Engine) -> None:
    def spec(seed: int) -> SamplingSpec:
        return SamplingSpec(max_tokens=16, temperature=1.0, seed=seed)

    first = text(await collect(remote, FRANCE, spec(7), "sd-1"))
    assert text(await collect(remote, FRANCE, spec(7), "sd-2")) == first
    others = {text(await collect(remote, FRANCE, spec(s), f"sd-{s}")) for s in (8, 9, 10)}
    assert others - {first}, "different seeds should sample differently"
    assert text(await collect(local, FRANCE, spec(7), "sd-l")) == first


@engine
@pytest.mark.parametrize(
    ("prompt", "sampling", "logprobs", "match"),
    [
        ("word " * (MAX_MODEL_LEN + 10), SamplingSpec(max_tokens=4), None, "maximum context length is 512"),
        (FRANCE, SamplingSpec(max_tokens=4), 50, "greater than max allowed: 20"),
        (FRANCE, SamplingSpec(max_tokens=4, temperature=-1.0), None, "temperature"),
        (FRANCE, SamplingSpec(max_tokens=4, top_p=0.0), None, "top_p"),
    ],
)
async def test_bad_requests_are_invalid_argument(
    remote: RemoteEngine, prompt: str, sampling: SamplingSpec, logprobs: int | None, match: str
) -> None:
    with pytest.raises(InvalidArgument, match=match):
        await collect(remote, prompt, sampling, "bad", logprobs=logprobs)
    assert remote.num_unfinished() == 0 and remote.ready


@engine
async def test_bad_scoring_is_invalid_argument(remote: RemoteEngine) -> None:
    with pytest.raises(InvalidArgument, match="max allowed: 20"):
        await remote.score([1, 2, 3], 1, 50, "bad-score")
    with pytest.raises(InvalidArgument, match="maximum context length"):
        await remote.score(list(range(1, MAX_MODEL_LEN + 2)), 1, 1, "too-long")
    assert remote.num_unfinished() == 0 and remote.ready


@engine
async def test_closing_a_stream_aborts_the_server_request(remote: RemoteEngine) -> None:
    sampling = SamplingSpec(max_tokens=MAX_MODEL_LEN - 32)  # tens of seconds if left to run
    stream = remote.generate(COUNTING, sampling, "close-me")
    seen = 0
    async for _chunk in stream:
        seen += 1
        if seen == 5:
            assert remote.num_unfinished() == 1
            assert await requests_running(remote.url) == 1
            break
    await stream.aclose()
    assert remote.num_unfinished() == 0
    assert await wait_running(remote.url, 0, within_s=5.0) < 5.0


@engine
async def test_cancelling_a_task_aborts_the_server_request(remote: RemoteEngine) -> None:
    started = asyncio.Event()

    async def consume() -> None:
        async for _chunk in remote.generate(COUNTING, SamplingSpec(max_tokens=400), "cancel-me"):
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 30)
    assert await requests_running(remote.url) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert remote.num_unfinished() == 0
    await wait_running(remote.url, 0, within_s=5.0)


@engine
async def test_abort_by_request_id(remote: RemoteEngine) -> None:
    chunks: list[Chunk] = []

    async def consume() -> None:
        async for chunk in remote.generate(COUNTING, SamplingSpec(max_tokens=400), "abort-me"):
            chunks.append(chunk)

    task = asyncio.create_task(consume())
    while not chunks:
        await asyncio.sleep(0.05)
    await remote.abort("abort-me")
    with pytest.raises(Unavailable, match="abort-me was aborted"):
        await asyncio.wait_for(task, 10)
    assert remote.num_unfinished() == 0
    await wait_running(remote.url, 0, within_s=5.0)
    await remote.abort("no-such-request")  # a no-op
    assert remote.ready


@engine
async def test_concurrent_requests_share_the_pool(remote: RemoteEngine, local: Engine) -> None:
    sampling = SamplingSpec(max_tokens=12)
    results = await asyncio.gather(
        *(collect(remote, p, sampling, f"cc-{i}") for i, p in enumerate(PROMPTS * 3))
    )
    want = {p: text(await collect(local, p, sampling, f"cc-l-{i}")) for i, p in enumerate(PROMPTS)}
    assert [text(r) for r in results] == [want[p] for p in PROMPTS * 3]
    assert remote.num_unfinished() == 0


# -- faults and lifecycle ----------------------------------------------------------------------


async def test_unreachable_server_is_unavailable_quickly() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens
    engine = RemoteEngine("gone", url, "gone", connect_timeout_s=1.0)
    start = time.monotonic()
    try:
        with pytest.raises(Unavailable, match=f"variant gone: server at {url} unreachable"):
            await engine.connect()
        with pytest.raises(Unavailable, match="unreachable"):
            await engine.check_health()
        with pytest.raises(Unavailable, match="unreachable"):
            await collect(engine, FRANCE, SamplingSpec(max_tokens=4), "u")
        with pytest.raises(Unavailable, match="unreachable"):
            await engine.score([1, 2, 3], 1, 1, "u")
        with pytest.raises(Unavailable, match="not connected"):
            _ = engine.max_model_len
        assert not engine.ready and engine.num_unfinished() == 0
    finally:
        await engine.shutdown()
    assert time.monotonic() - start < 5.0
    with pytest.raises(Unavailable, match="shut down"):
        await engine.check_health()


async def test_a_silent_address_times_out_at_the_connect_timeout() -> None:
    """A TEST-NET address (RFC 5737): nothing answers, the connect attempt gives up on time."""
    engine = RemoteEngine("void", "http://192.0.2.1:8000", "void", connect_timeout_s=0.5)
    start = time.monotonic()
    try:
        with pytest.raises(Unavailable, match="variant void"):
            await engine.connect()
    finally:
        await engine.shutdown()
    assert time.monotonic() - start < 3.0


async def test_server_error_answers_are_mapped(fake_server: FakeServer) -> None:
    engine = RemoteEngine("fake", fake_server.url, "fake")
    try:
        await engine.connect()
        assert engine.max_model_len == 64 and engine.ready
        chunks = await collect(engine, "hi", SamplingSpec(max_tokens=2), "f1", logprobs=1)
        assert text(chunks) == "ab" and ids(chunks) == (5, 6) and chunks[-1].finish_reason == "stop"
        assert positions(chunks) == [{5: -0.5, 7: -1.0}, {6: float("-inf")}]  # -9999 is -inf again
        (pos,) = await engine.score([1, 5, 6], 2, 1, "s")
        assert pos == {6: float("-inf"), 9: -0.25}  # rank 3 (beyond top-1) dropped, actual kept
        fake_server.completion = "error-event"
        with pytest.raises(EngineFailure, match="boom"):
            await collect(engine, "hi", SamplingSpec(max_tokens=2), "f2")
        fake_server.completion = "http-500"
        with pytest.raises(EngineFailure, match="engine error: kaput"):
            await collect(engine, "hi", SamplingSpec(max_tokens=2), "f3")
        fake_server.completion = "cut"
        with pytest.raises(Unavailable, match=r"generation at .* failed"):
            await collect(engine, "hi", SamplingSpec(max_tokens=2), "f4")
        fake_server.health = 503  # vLLM's answer when its engine died
        with pytest.raises(Unavailable, match=r"not healthy \(HTTP 503\)"):
            await engine.check_health()
        assert not engine.ready
        fake_server.health = 200
        await engine.check_health()
        assert engine.ready and engine.num_unfinished() == 0
    finally:
        await engine.shutdown()


@engine
async def test_server_death_and_recovery(
    remote: RemoteEngine, dense_server: ServerProcess, tmp_path: Path
) -> None:
    """Runs last on the module's server: kills it mid-stream, then brings up a new one on its port."""
    chunks: list[Chunk] = []

    async def consume() -> None:
        async for chunk in remote.generate(COUNTING, SamplingSpec(max_tokens=400), "doomed"):
            chunks.append(chunk)

    task = asyncio.create_task(consume())
    while not chunks:
        await asyncio.sleep(0.05)
    dense_server.kill()
    with pytest.raises(Unavailable, match="variant dense"):
        await asyncio.wait_for(task, 10)
    assert remote.num_unfinished() == 0
    with pytest.raises(Unavailable, match="unreachable"):
        await asyncio.wait_for(remote.check_health(), 10)
    assert not remote.ready
    start = time.monotonic()
    with pytest.raises(Unavailable):
        await collect(remote, FRANCE, SamplingSpec(max_tokens=4), "dead")
    assert time.monotonic() - start < 2.0
    await dense_server.stop(grace_s=5.0)
    assert not group_alive(dense_server.pid)

    # A new server on the same port, as a user restarts one (`driftgate variant serve` from the
    # YAML): it loads the model the first server compiled into driftgate's compile cache instead
    # of compiling it again, and the engine recovers.
    config = tmp_path / "variant.yaml"
    config.write_text(variant_yaml(dense_server.port))
    command = [
        str(Path(sys.executable).parent / "driftgate"),
        "variant",
        "serve",
        "dense",
        "--config",
        str(config),
    ]
    log = tmp_path / "restart.log"
    async with running_server(command, server_env(SERVER_CORES), log, dense_server.port) as again:
        await remote.check_health()
        assert remote.ready and remote.max_model_len == MAX_MODEL_LEN
        chunks = await collect(remote, FRANCE, SamplingSpec(max_tokens=4), "back")
        assert chunks[-1].finished and text(chunks)
    assert not group_alive(again.pid)
    started = log.read_text()
    assert "Directly load AOT compilation" in started, started[-3000:]
    assert "Compiling model again" not in started


def variant_yaml(port: int) -> str:
    """`server_variant()` as a config file (the restarted server must match the compiled one)."""
    e = server_variant().engine
    engine = {
        "url": f"http://127.0.0.1:{port}",
        "max_model_len": e.max_model_len,
        "kv_cache_gib": e.kv_cache_gib,
        "cpu_cores": e.cpu_cores,
        "max_num_seqs": e.max_num_seqs,
    }
    return yaml.safe_dump({"variants": [{"name": "dense", "model": str(model_dir()), "engine": engine}]})


# -- the launcher ----------------------------------------------------------------------------------


def test_server_command_and_env() -> None:
    command = variant_command(server_variant("int4"), 8123, host="0.0.0.0")
    assert command[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(zip(command[3::2], command[4::2], strict=False))
    assert flags["--served-model-name"] == "int4" and flags["--port"] == "8123"
    assert flags["--host"] == "0.0.0.0" and flags["--max-model-len"] == str(MAX_MODEL_LEN)
    assert flags["--kv-cache-memory-bytes"] == str(1 << 30) and flags["--generation-config"] == "vllm"
    assert "--enforce-eager" not in command
    eager = server_variant("int4")
    eager.engine.enforce_eager = True
    assert variant_command(eager, 8123)[-1] == "--enforce-eager"
    eager.engine.nice = 10  # the server and everything it starts at niceness 10
    assert variant_command(eager, 8123)[:4] == ["nice", "-n", "10", sys.executable]
    env = server_env("1", base={"VLLM_CPU_KVCACHE_SPACE": "4", "PATH": "/bin"})
    assert "VLLM_CPU_KVCACHE_SPACE" not in env and env["PATH"] == "/bin"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "1" and env["HF_HUB_OFFLINE"] == "1"
    assert env["TRANSFORMERS_OFFLINE"] == "1"
    assert "VLLM_USE_AOT_COMPILE" not in env and "VLLM_CACHE_ROOT" not in env  # a bare vllm serve


def test_variant_env_compiles_into_driftgates_cache() -> None:
    """A variant's server gets the in-process engines' compile settings (`engine.aot_compile`)."""
    base = {"PATH": "/bin", "VLLM_CPU_KVCACHE_SPACE": "4"}
    env = variant_env(server_variant(), base=base)
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == SERVER_CORES and "VLLM_CPU_KVCACHE_SPACE" not in env
    assert {k: env[k] for k in compile_cache_env()} == compile_cache_env(aot=True)
    assert env["VLLM_USE_AOT_COMPILE"] == "1" and env[AOT_LOAD_ENV] == "1"
    eager = server_variant()
    eager.engine.aot_compile = False
    env = variant_env(eager, base=base)
    assert env["VLLM_USE_AOT_COMPILE"] == "0" and env[AOT_LOAD_ENV] == "0"
    assert env["VLLM_CACHE_ROOT"] == compile_cache_env()["VLLM_CACHE_ROOT"]


def test_variant_env_preloads_what_this_machine_has_by_default() -> None:
    """`engine.preload` auto: the server gets tcmalloc and Intel OpenMP where both are installed, and
    no OpenMP runtime besides the chosen one; a bare server (`server_env`) gets nothing."""
    from serving.engines.preload import find_iomp, find_tcmalloc

    base = {"PATH": "/bin", "LD_PRELOAD": "/x/torch/lib/libgomp.so.1"}
    env = variant_env(server_variant(), base=base)
    tcmalloc, iomp = find_tcmalloc(), find_iomp()
    if tcmalloc and iomp:
        assert env["LD_PRELOAD"] == f"{tcmalloc}:{iomp}"  # libgomp dropped: vLLM refuses two runtimes
    elif tcmalloc:
        assert env["LD_PRELOAD"] == f"{tcmalloc}:/x/torch/lib/libgomp.so.1"
    else:
        assert env["LD_PRELOAD"] == "/x/torch/lib/libgomp.so.1"
    assert server_env(SERVER_CORES, base)["LD_PRELOAD"] == "/x/torch/lib/libgomp.so.1"


ROOT = Path(__file__).resolve().parents[2]
DRIVER = """
import asyncio, sys
from pathlib import Path
from serving.engines.vllm_server import running_server, server_env
from tests.engines.conftest import stub_command
async def main(port):
    async with running_server(stub_command(port), server_env("0"), Path(sys.argv[2]), port) as server:
        print(server.pid, flush=True)
        await asyncio.sleep(600)
asyncio.run(main(int(sys.argv[1])))
"""


async def test_a_killed_driver_takes_the_servers_whole_group_with_it(tmp_path: Path) -> None:
    """SIGKILL the process that started the server: the server dies with it (parent-death
    signal), and so does the child the server started, which ignores SIGTERM, as vLLM's
    engine-core would outlive its server (the wrapper's watchdog kills the group)."""
    driver = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DRIVER, str(free_port()), str(tmp_path / "d.log"),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert driver.stdout is not None
    pgid = int(await asyncio.wait_for(driver.stdout.readline(), 60))
    assert group_alive(pgid)
    driver.kill()
    await driver.wait()
    for _ in range(150):
        if not group_alive(pgid):
            break
        await asyncio.sleep(0.1)
    assert not group_alive(pgid)


async def test_running_server_leaves_no_process(tmp_path: Path) -> None:
    """A stand-in server whose child ignores SIGTERM: gone (SIGKILLed) however the block ends."""
    port = free_port()
    with pytest.raises(RuntimeError, match="body failed"):
        async with running_server(
            stub_command(port), server_env("0"), tmp_path / "a.log", port, grace_s=1.0
        ) as server:
            assert group_alive(server.pid)  # running while the block runs (and gone after)
            raise RuntimeError("body failed")
    assert not group_alive(server.pid)
    # never healthy (health answers 500): a timeout, then the same cleanup
    port = free_port()
    with pytest.raises(RuntimeError, match="not healthy after 2s"):
        stub = stub_command(port, 500)
        async with running_server(
            stub, server_env("0"), tmp_path / "b.log", port, startup_timeout_s=2.0, grace_s=1.0
        ):
            pytest.fail("unreachable")
    # exits at once: the error carries its log
    command = [sys.executable, "-c", "print('no such model'); raise SystemExit(3)"]
    with pytest.raises(RuntimeError, match=r"(?s)exited with 3.*no such model"):
        async with running_server(command, server_env("0"), tmp_path / "c.log", free_port()):
            pytest.fail("unreachable")
