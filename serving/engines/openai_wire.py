"""The wire format of vLLM's OpenAI-compatible completions, parsed (for `RemoteEngine`).

Streamed events become `Chunk`s; logprob keys "token_id:N" become ids; the server's -9999.0 floor
becomes -inf again (JSON has no infinity); scored positions keep the top-k by rank plus the token.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from serving.engines.base import Chunk, TokenLogprobs
from serving.errors import GatewayError

LOGPROB_FLOOR = -9999.0
"""vLLM's server replaces -inf logprobs with this (JSON has no infinity)."""


def _logprob(value: Any) -> float:
    return float("-inf") if float(value) <= LOGPROB_FLOOR else float(value)


def _token_id(key: str) -> int:
    """A top-logprobs key: "token_id:N" (with `return_tokens_as_token_ids`) or a bare id."""
    return int(key.rsplit(":", 1)[-1])


def _top_logprobs(raw: dict[str, Any] | None) -> tuple[TokenLogprobs, ...]:
    positions = (raw or {}).get("top_logprobs") or ()
    return tuple({_token_id(k): _logprob(v) for k, v in (pos or {}).items()} for pos in positions)


def scored(pos: dict[str, Any] | None, actual: int, top_k: int) -> dict[int, float]:
    """One prompt-logprobs position: the top-k by rank plus the actual token."""
    if not pos:
        return {}
    return {
        int(k): _logprob(v["logprob"])
        for k, v in pos.items()
        if int(k) == actual or int(v.get("rank") or 0) <= top_k
    }


async def sse_data(resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The `data:` payloads of a server-sent-event stream, up to `[DONE]`."""
    buf = b""
    async for piece in resp.content.iter_any():
        buf += piece
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank separators, keep-alive comments
            data = line[5:].strip().decode()
            if data == "[DONE]":
                return
            yield data


class Stream:
    """Folds streamed completion events into `Chunk`s."""

    def __init__(self, http_error: Callable[[int, Any], GatewayError]) -> None:
        self._http_error = http_error
        self.prompt_ids: tuple[int, ...] = ()
        self.completion = 0
        self.finished = False

    def chunk(self, data: str) -> Chunk | None:
        event = json.loads(data)
        if "error" in event:
            raise self._http_error(int(event["error"].get("code") or 500), event["error"])
        choices = event.get("choices") or []
        if not choices:
            return None  # the usage event
        c = choices[0]
        if c.get("prompt_token_ids"):
            self.prompt_ids = tuple(int(t) for t in c["prompt_token_ids"])
        token_ids = tuple(int(t) for t in c.get("token_ids") or ())
        self.completion += len(token_ids)
        reason = c.get("finish_reason")
        self.finished = reason is not None
        return Chunk(
            text=c.get("text") or "",
            token_ids=token_ids,
            finished=self.finished,
            finish_reason=reason,
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=self.completion,
            prompt_token_ids=self.prompt_ids,
            logprobs=_top_logprobs(c.get("logprobs")),
        )
