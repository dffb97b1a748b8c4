"""The engine Protocol and the plain data it exchanges with the gateway (no vllm imports)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

TokenLogprobs = Mapping[int, float]
"""A model's log-probabilities at one position: its top-k tokens plus the scored token."""


@dataclass(frozen=True)
class SamplingSpec:
    """Sampling parameters of one request, already validated and defaulted."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    """Go on past the end-of-sequence token, up to max_tokens (or a stop string)."""
    stream_interval: int = 1
    """Tokens per chunk after the first (vLLM's `stream_interval`): the first chunk and the last
    come as soon as they are made, the rest every this many tokens; 1 sends every token."""

    def __post_init__(self) -> None:
        if self.stream_interval < 1:
            raise ValueError(f"stream_interval must be at least 1, got {self.stream_interval}")


@dataclass(frozen=True)
class Chunk:
    """One step of a generation: a text delta; the last one has `finished` and the totals."""

    text: str
    token_ids: tuple[int, ...]
    finished: bool = False
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprobs, ...] = ()


@runtime_checkable
class Engine(Protocol):
    """What the gateway needs from an inference engine."""

    name: str

    @property
    def max_model_len(self) -> int: ...

    def encode_prompt(self, prompt: str) -> tuple[int, ...]:
        """The prompt's token ids as the engine tokenizes it (for the context-length check before
        submitting, then handed back to `generate` so the prompt is tokenized once); empty when
        the engine cannot tokenize locally (it then checks the length itself)."""
        ...

    async def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The prompt the model's chat template makes of `messages` (role/content mappings), with
        the assistant's turn opened, as vLLM's chat endpoint renders it."""
        ...

    def generate(
        self,
        prompt: str,
        sampling: SamplingSpec,
        request_id: str,
        logprobs: int | None = None,
        prompt_token_ids: Sequence[int] = (),
    ) -> AsyncGenerator[Chunk, None]:
        """Streams a completion (with the top-`logprobs` of each new token when asked);
        cancelling or closing the iteration aborts the engine request. `prompt_token_ids`, when
        given, are `encode_prompt(prompt)` and are used instead of tokenizing `prompt` again."""
        ...

    async def score(
        self, token_ids: Sequence[int], start: int, top_k: int, request_id: str
    ) -> list[TokenLogprobs]:
        """Teacher-forced log-probabilities of `token_ids[start:]`, each position given the tokens
        before it: one mapping per scored position holding the top-k and the actual token."""
        ...

    async def abort(self, request_id: str) -> None: ...

    async def check_health(self) -> None:
        """Raises if the engine cannot serve."""
        ...

    def num_unfinished(self) -> int:
        """Requests the engine still holds (0 once every request finished or was aborted)."""
        ...

    async def shutdown(self) -> None: ...
