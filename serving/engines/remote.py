"""`RemoteEngine`: the Engine Protocol over the OpenAI-compatible HTTP API of vLLM's own server
(`serving.engines.vllm_server` launches one), with one pooled aiohttp session per variant.

Generation is a streamed `/v1/completions` with `return_token_ids` (each event carries its
`token_ids`, the first also `prompt_token_ids`) and, with logprobs, `return_tokens_as_token_ids`
(top-logprob keys are "token_id:N"). Teacher-forced scoring is a non-streamed completion of token
ids with `prompt_logprobs` and `max_tokens: 1` (vLLM refuses prompt logprobs on streams).
Liveness: `/health` (refused = not up, 503 = engine dead) and `/v1/models` (served name,
`max_model_len`). Token counts use a local tokenizer when `tokenizer_path` is given; without one
`encode_prompt` returns no ids and the server enforces the context length (its 400).

Semantics follow `VllmEngine`: neutral sampling defaults are sent explicitly (the server would
apply a checkpoint's generation_config.json), the server's -9999.0 logprob floor becomes -inf
again, scored positions hold the top-k plus the actual token. Closing or cancelling a generation
closes its HTTP stream, and vLLM aborts a request whose client disconnects. Errors: HTTP 400/422
-> InvalidArgument (the server's message), 500 -> EngineFailure; other statuses, refused or lost
connections and timeouts -> Unavailable, naming the variant and the server's URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from typing import Any

import aiohttp

from serving.engines.base import Chunk, SamplingSpec, TokenLogprobs
from serving.engines.openai_wire import Stream, scored, sse_data
from serving.errors import ConfigError, EngineFailure, GatewayError, InvalidArgument, Unavailable

log = logging.getLogger(__name__)

KEEPALIVE_S = 3.0
"""Idle pooled connections are closed after this: below the server's own keep-alive (uvicorn's 5 s),
so the gateway never sends a request on a connection the server is closing at that moment."""
_NEUTRAL = dict(top_k=0, min_p=0.0, repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0)
"""vLLM's neutral sampling defaults, sent so that a server's generation config can't change them."""


class RemoteEngine:
    """One variant served by a vLLM OpenAI-compatible server at `url`."""

    def __init__(
        self,
        name: str,
        url: str,
        served_model_name: str,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 120.0,
        pool_size: int = 64,
        tokenizer_path: str | None = None,
    ) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self.served_model_name = served_model_name
        self._timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout_s, sock_read=read_timeout_s)
        self._probe_timeout = aiohttp.ClientTimeout(
            total=max(2 * connect_timeout_s, 10.0), sock_connect=connect_timeout_s
        )
        self._pool_size = pool_size
        self._tokenizer_path = tokenizer_path
        self._tokenizer: Any = None
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._closed = False
        self._max_model_len: int | None = None
        self._ready = False
        self._in_flight = 0
        self._streams: dict[str, aiohttp.ClientResponse] = {}
        self._aborted: set[str] = set()

    def _http(self, probe: bool = False) -> aiohttp.ClientSession:
        """The pooled session of requests, or the small one of liveness checks (a pool full of long
        streams must not hold those up); each made on first use (it needs the running loop)."""
        if self._closed:
            raise Unavailable(f"variant {self.name} has been shut down")
        key = "probe" if probe else "pool"
        if key not in self._sessions:
            connector = aiohttp.TCPConnector(
                limit=2 if probe else self._pool_size, keepalive_timeout=KEEPALIVE_S
            )
            timeout = self._probe_timeout if probe else self._timeout
            self._sessions[key] = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self._sessions[key]

    @property
    def ready(self) -> bool:
        """Whether the last liveness check (or request) found the server serving this variant."""
        return self._ready

    @property
    def max_model_len(self) -> int:
        """The served model's context length (raises Unavailable before the first `connect`)."""
        if self._max_model_len is None:
            raise Unavailable(f"variant {self.name}: server at {self.url} not connected yet")
        return self._max_model_len

    async def connect(self) -> None:
        """Loads the local tokenizer, if any, and checks `/health` and `/v1/models`. Raises
        Unavailable if the server can't be reached or isn't healthy, ConfigError if it doesn't
        serve `served_model_name` (or the tokenizer can't be loaded)."""
        await asyncio.to_thread(self._local_tokenizer)
        await self._probe()

    async def check_health(self) -> None:
        """Raises Unavailable unless the server answers `/health` 200 and serves this variant;
        a server that restarted is picked up again (its `max_model_len` re-read)."""
        try:
            await self._probe()
        except ConfigError as exc:
            raise Unavailable(str(exc)) from exc

    async def _probe(self) -> None:
        try:
            with self._mapped("health check"):
                session = self._http(probe=True)
                async with session.get(f"{self.url}/health") as resp:
                    if resp.status != 200:
                        raise Unavailable(
                            f"variant {self.name}: server at {self.url} is not healthy (HTTP {resp.status})"
                        )
                async with session.get(f"{self.url}/v1/models") as resp:
                    models = await self._json(resp)
            cards = {m.get("id"): m for m in models.get("data") or ()}
            card = cards.get(self.served_model_name)
            if card is None:
                raise ConfigError(
                    f"variant {self.name}: server at {self.url} serves {sorted(cards)}, "
                    f"not {self.served_model_name!r}"
                )
            self._max_model_len = int(card["max_model_len"])
            self._ready = True
        except BaseException:
            self._ready = False
            raise

    @contextlib.contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        """Turns transport failures into Unavailable (and marks the variant not ready)."""
        try:
            yield
        except aiohttp.ClientConnectorError as exc:
            self._ready = False
            raise Unavailable(
                f"variant {self.name}: server at {self.url} unreachable: {exc.os_error}"
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._ready = False
            detail = str(exc) or type(exc).__name__
            raise Unavailable(f"variant {self.name}: {what} at {self.url} failed: {detail}") from exc

    def http_error(self, status: int, error: Any) -> GatewayError:
        """The gateway error for an HTTP error status and the server's error body."""
        message = error.get("message", "") if isinstance(error, dict) else str(error)
        if status in (400, 422):
            return InvalidArgument(message)
        if status == 500:
            return EngineFailure(f"variant {self.name}: engine error: {message}")
        self._ready = False
        return Unavailable(f"variant {self.name}: server at {self.url} answered HTTP {status}: {message}")

    async def _json(self, resp: aiohttp.ClientResponse) -> dict[str, Any]:
        """The JSON body of a response, or the mapped error for an error status."""
        text, body = await resp.text(), None
        with contextlib.suppress(ValueError):
            body = json.loads(text)
        if resp.status != 200:
            error = body.get("error", text) if isinstance(body, dict) else text[:500]
            raise self.http_error(resp.status, error)
        if not isinstance(body, dict):
            raise EngineFailure(f"variant {self.name}: unexpected answer from {self.url}: {text[:200]}")
        return body

    async def _open(self, path: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """POSTs `body` and returns the response once its headers arrived. A connection that the
        server dropped before answering (a pooled one it had just closed) is retried once, fresh."""
        try:
            return await self._http().post(f"{self.url}{path}", json=body)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            log.info("variant %s: %s on %s before any answer; retrying once", self.name, exc, path)
            return await self._http().post(f"{self.url}{path}", json=body)

    async def _post(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        with self._mapped(what):
            async with await self._open(path, body) as resp:
                return await self._json(resp)

    def _local_tokenizer(self) -> Any:
        if self._tokenizer is None and self._tokenizer_path:
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer_path)
            except Exception as exc:
                raise ConfigError(
                    f"variant {self.name}: no tokenizer at {self._tokenizer_path}: {exc}"
                ) from exc
        return self._tokenizer

    def encode_prompt(self, prompt: str) -> tuple[int, ...]:
        """Prompt token ids by the local tokenizer; none without one (the server then enforces the
        context length: a too-long prompt is its 400, i.e. INVALID_ARGUMENT)."""
        tokenizer = self._local_tokenizer()
        return tuple(tokenizer.encode(prompt)) if tokenizer is not None else ()

    async def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The chat template's prompt for `messages`, assistant turn opened: by the local tokenizer
        (as in-process), else rendered to tokens and detokenized by the server."""
        convo, model = [dict(m) for m in messages], self.served_model_name
        tokenizer = self._local_tokenizer()
        if tokenizer is None:
            body = {"model": model, "messages": convo, "add_generation_prompt": True}
            tokens = (await self._post("/tokenize", body, "chat rendering"))["tokens"]
            answer = await self._post("/detokenize", {"model": model, "tokens": tokens}, "chat rendering")
            return str(answer["prompt"])
        try:
            return str(tokenizer.apply_chat_template(convo, tokenize=False, add_generation_prompt=True))
        except Exception as exc:  # no template, or the template rejects the conversation
            raise InvalidArgument(f"variant {self.name} cannot render these messages: {exc}") from exc

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text` by the local tokenizer (knowledge probes need one)."""
        tokenizer = self._local_tokenizer()
        if tokenizer is None:
            raise Unavailable(f"variant {self.name}: no local tokenizer (set tokenizer_path)")
        return [int(t) for t in tokenizer.encode(text, add_special_tokens=add_special_tokens)]

    async def tokenize_async(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text` by the server's tokenizer (`/tokenize`)."""
        body = {"model": self.served_model_name, "prompt": text, "add_special_tokens": add_special_tokens}
        answer = await self._post("/tokenize", body, "tokenize")
        return [int(t) for t in answer["tokens"]]

    async def count_tokens_async(self, prompt: str) -> int:
        """Prompt tokens by the local tokenizer if any, else by the server's (`/tokenize`)."""
        if self._tokenizer_path:
            return len(self.encode_prompt(prompt))
        return len(await self.tokenize_async(prompt))

    def _completion_body(
        self, prompt: str, sampling: SamplingSpec, request_id: str, logprobs: int | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.served_model_name,
            "prompt": prompt,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            **_NEUTRAL,
            "stop": list(sampling.stop),
            "stream": True,
            "return_token_ids": True,
            "request_id": request_id,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.ignore_eos:
            body["ignore_eos"] = True  # vLLM's extension of the OpenAI API
        if sampling.stream_interval > 1:
            body["stream_interval"] = sampling.stream_interval  # vLLM's extension, per request
        if logprobs is not None:
            body["logprobs"] = logprobs
            body["return_tokens_as_token_ids"] = True
        return body

    async def generate(
        self,
        prompt: str,
        sampling: SamplingSpec,
        request_id: str,
        logprobs: int | None = None,
        prompt_token_ids: Sequence[int] = (),
    ) -> AsyncGenerator[Chunk, None]:
        """Streams the completion. Closing or cancelling the iteration closes the HTTP stream, which
        makes the server abort the request. The prompt goes as text even when `prompt_token_ids`
        are given: the local tokenizer (from `tokenizer_path`) may differ from the server's (another
        transformers version, `--tokenizer`), and ids would then change the answer silently; text
        costs the server one tokenization."""
        body = self._completion_body(prompt, sampling, request_id, logprobs)
        stream = Stream(self.http_error)
        self._in_flight += 1
        try:
            with self._mapped("generation"):
                async with await self._open("/v1/completions", body) as resp:
                    if resp.status != 200:
                        await self._json(resp)
                    self._streams[request_id] = resp
                    try:
                        async for data in sse_data(resp):
                            chunk = stream.chunk(data)
                            if chunk is not None:
                                yield chunk
                    except aiohttp.ClientError:
                        if request_id in self._aborted:  # closed by `abort`, not a failing server
                            raise Unavailable(
                                f"variant {self.name}: request {request_id} was aborted"
                            ) from None
                        raise
                    finally:
                        if not stream.finished:
                            resp.close()
        finally:
            self._in_flight -= 1
            self._streams.pop(request_id, None)
            self._aborted.discard(request_id)
        if not stream.finished:
            raise EngineFailure(f"variant {self.name}: the server ended the stream before finishing")

    async def score(
        self, token_ids: Sequence[int], start: int, top_k: int, request_id: str
    ) -> list[TokenLogprobs]:
        """Teacher-forced log-probabilities of `token_ids[start:]` (prompt logprobs)."""
        ids = [int(t) for t in token_ids]
        body = {"model": self.served_model_name, "prompt": ids, "max_tokens": 1, "temperature": 0.0}
        body |= {"prompt_logprobs": top_k, "request_id": request_id}
        self._in_flight += 1
        try:
            answer = await self._post("/v1/completions", body, "scoring")
        finally:
            self._in_flight -= 1
        choices = answer.get("choices") or []
        positions = choices[0].get("prompt_logprobs") if choices else None
        if positions is None or len(positions) != len(ids):
            raise EngineFailure(f"variant {self.name}: the server returned no prompt logprobs")
        return [scored(positions[i], ids[i], top_k) for i in range(start, len(ids))]

    async def abort(self, request_id: str) -> None:
        """Closes the request's HTTP stream, if still open: the server aborts it, its generator raises
        Unavailable. (The server's /inference/v1/abort_requests wants its internal request ids.)"""
        resp = self._streams.pop(request_id, None)
        if resp is not None:
            self._aborted.add(request_id)
            resp.close()

    def num_unfinished(self) -> int:
        """Requests of this gateway still open on the server (streams and scorings)."""
        return self._in_flight

    async def shutdown(self) -> None:
        """Closes the HTTP session (open streams are closed, so the server aborts them)."""
        self._closed = True
        self._ready = False
        for resp in list(self._streams.values()):
            resp.close()
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
