"""Property test of the HTTP door: random bytes, random JSON and near-valid OpenAI bodies, sent to
both endpoints of a real uvicorn server over scripted engines, with a valid, a wrong or no API key,
never get a 500 or a body that is not OpenAI's shape; a request without a valid key always gets
401. Afterwards the door still answers a normal request and nothing leaked (no engine request
unfinished, nothing in flight in the gateway, no mirrored copy left).

The server runs in the session's event loop; hypothesis drives a blocking httpx client from a
worker thread (hypothesis has no asyncio support of its own).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.auth import hash_key
from serving.config import AuthConfig, Role, VariantConfig
from tests.fakes import CountingEngine
from tests.http.conftest import fake_config, open_door, sse_events

pytestmark = pytest.mark.asyncio(loop_scope="session")

EXAMPLES = 600
ALLOWED = {200, 400, 404, 413, 429, 503}
KEY = "fuzz-key-77"
CREDENTIALS = {"good": f"Bearer {KEY}", "wrong": "Bearer nope", "bare": KEY, "none": None}
PATHS = ("/v1/completions", "/v1/chat/completions")

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.text(st.characters(categories=["Cs", "Lu", "Nd"]), max_size=3)  # lone surrogates too
)
any_json = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
role = st.sampled_from(["user", "system", "assistant", "developer", "robot"])
parts = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=8)}), max_size=3)
message = st.fixed_dictionaries(
    {"role": role}, optional={"content": st.text(max_size=20) | parts, "name": st.text(max_size=5)}
)
GOOD: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from(["driftgate", "dense", "twin", "nope"]),
    "max_tokens": st.integers(min_value=1, max_value=600),
    "temperature": st.floats(min_value=0, max_value=2),
    "top_p": st.floats(min_value=0.01, max_value=1),
    "seed": st.integers(min_value=0, max_value=2**64 - 1),
    "stop": st.text(min_size=1, max_size=3) | st.lists(st.text(min_size=1, max_size=3), max_size=3),
    "stream": st.booleans(),
    "stream_options": st.none() | st.fixed_dictionaries({"include_usage": st.booleans()}),
    "n": st.just(1),
    "user": st.text(max_size=10),
}
CORRUPTIBLE = [*GOOD, "prompt", "messages", "logprobs", "echo", "presence_penalty", "bogus"]
completion = st.fixed_dictionaries({"prompt": st.text(max_size=40)}, optional=GOOD)
chat = st.fixed_dictionaries(
    {"messages": st.lists(message, min_size=1, max_size=3)},
    optional={**GOOD, "max_completion_tokens": st.integers(min_value=1, max_value=600)},
)
corruption = st.dictionaries(st.sampled_from(CORRUPTIBLE), any_json, max_size=2)


def _merge(pair: tuple[dict[str, Any], dict[str, Any]]) -> bytes:
    return json.dumps({**pair[0], **pair[1]}).encode()


requests = st.one_of(
    st.tuples(st.just("/v1/completions"), st.tuples(completion, st.just({}) | corruption).map(_merge)),
    st.tuples(st.just("/v1/chat/completions"), st.tuples(chat, st.just({}) | corruption).map(_merge)),
    st.tuples(
        st.sampled_from(PATHS), st.binary(max_size=200) | any_json.map(lambda v: json.dumps(v).encode())
    ),
)


def check_answer(response: httpx.Response, body: bytes, authorized: bool = True) -> None:
    allowed = ALLOWED if authorized else {401}
    assert response.status_code in allowed, (response.status_code, response.text, body)
    if response.status_code != 200:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and isinstance(error["type"], str)
        return
    if response.headers["content-type"].startswith("text/event-stream"):
        events = sse_events(response.text)
        assert events[-1] == "[DONE]" and all("error" not in e for e in events[:-1]), events
        return
    answer = response.json()
    assert answer["object"] in ("text_completion", "chat.completion") and len(answer["choices"]) == 1


def run_property(base_url: str) -> int:
    """Runs the property in this (worker) thread; returns how many examples ran."""
    ran = 0
    with httpx.Client(base_url=base_url, timeout=10.0) as http:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(
            request=requests, credential=st.sampled_from(["good"] * 6 + sorted(set(CREDENTIALS) - {"good"}))
        )
        def prop(request: tuple[str, bytes], credential: str) -> None:
            nonlocal ran
            ran += 1
            path, body = request
            value = CREDENTIALS[credential]
            headers = {"authorization": value} if value else {}
            check_answer(http.post(path, content=body, headers=headers), body, credential == "good")

        prop()
    return ran


async def test_random_bodies_never_break_the_door(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"keys:\n  - {{name: fuzz, scope: user, sha256: {hash_key(KEY)}}}\n")
    config = fake_config(
        VariantConfig(name="dense"),
        VariantConfig(name="twin", role=Role.SHADOW, max_in_flight=1000),
        auth=AuthConfig(keys_file=str(keys)),
    )
    engines = {"dense": CountingEngine("dense"), "twin": CountingEngine("twin")}
    async with open_door(config, engines) as door:
        start = time.perf_counter()
        ran = await asyncio.to_thread(run_property, door.url)
        elapsed = time.perf_counter() - start
        assert ran >= 500 and elapsed < 60, (ran, elapsed)
        await door.gateway.mirror.drain()
        assert [e.num_unfinished() for e in engines.values()] == [0, 0]
        assert door.gateway._in_flight == 0 and door.gateway.mirror.in_flight("twin") == 0
        async with door.client() as http:
            body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
            ok = await http.post(PATHS[1], json=body, headers={"authorization": f"Bearer {KEY}"})
            assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "one two"
        assert door.gateway.is_ready() and engines["dense"].started > 50
