"""Engines for tests: a scripted fake (pure routing logic only) and fault-injecting wrappers
around a real engine (for the mirroring tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence

from serving.engines.base import Chunk, Engine, SamplingSpec, TokenLogprobs


class FakeEngine:
    """Answers every prompt with `text` split into one chunk per word."""

    def __init__(self, name: str, text: str = "ok fine", max_model_len: int = 512, first_id: int = 0) -> None:
        self.name = name
        self.text = text
        self.first_id = first_id
        self._max = max_model_len
        self.prompts: list[str] = []
        self.samplings: list[SamplingSpec] = []
        self.logprob_asks: list[int | None] = []
        self.scored = 0

    @property
    def max_model_len(self) -> int:
        return self._max

    def encode_prompt(self, prompt: str) -> tuple[int, ...]:
        return tuple(range(len(prompt.split())))

    async def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"

    async def generate(
        self,
        prompt: str,
        sampling: SamplingSpec,
        request_id: str,
        logprobs: int | None = None,
        prompt_token_ids: Sequence[int] = (),
    ) -> AsyncGenerator[Chunk, None]:
        self.prompts.append(prompt)
        self.samplings.append(sampling)
        self.logprob_asks.append(logprobs)
        words = self.text.split(" ")
        for i, w in enumerate(words):
            last = i == len(words) - 1
            yield Chunk(
                text=w if i == 0 else " " + w,
                token_ids=(self.first_id + i,),
                finished=last,
                finish_reason="stop" if last else None,
                prompt_tokens=len(self.encode_prompt(prompt)),
                completion_tokens=i + 1,
                logprobs=({self.first_id + i: 0.0},) if logprobs else (),
            )

    async def score(
        self, token_ids: Sequence[int], start: int, top_k: int, request_id: str
    ) -> list[TokenLogprobs]:
        self.scored += 1
        return [{t: 0.0} for t in token_ids[start:]]

    async def abort(self, request_id: str) -> None:
        return None

    async def check_health(self) -> None:
        return None

    def num_unfinished(self) -> int:
        return 0

    async def shutdown(self) -> None:
        return None


class OwnedFake(FakeEngine):
    """A fake that records whether it was shut down."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.shut = False

    async def shutdown(self) -> None:
        self.shut = True


class _Wrapper:
    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.name = inner.name

    @property
    def max_model_len(self) -> int:
        return self.inner.max_model_len

    def encode_prompt(self, prompt: str) -> tuple[int, ...]:
        return self.inner.encode_prompt(prompt)

    async def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        return await self.inner.render_chat(messages)

    async def score(
        self, token_ids: Sequence[int], start: int, top_k: int, request_id: str
    ) -> list[TokenLogprobs]:
        return await self.inner.score(token_ids, start, top_k, request_id)

    async def abort(self, request_id: str) -> None:
        await self.inner.abort(request_id)

    async def check_health(self) -> None:
        await self.inner.check_health()

    def num_unfinished(self) -> int:
        return self.inner.num_unfinished()

    async def shutdown(self) -> None:
        return None


class RaisingEngine(_Wrapper):
    """A shadow whose generations fail at once."""

    async def generate(
        self,
        prompt: str,
        sampling: SamplingSpec,
        request_id: str,
        logprobs: int | None = None,
        prompt_token_ids: Sequence[int] = (),
    ) -> AsyncGenerator[Chunk, None]:
        raise RuntimeError("injected shadow failure")
        yield Chunk(text="", token_ids=())  # pragma: no cover  (makes this an async generator)


class HangingEngine(_Wrapper):
    """A shadow that never answers (until cancelled); counts how many copies it holds."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)
        self.holding = 0
        self.cancelled = 0

    async def generate(
        self,
        prompt: str,
        sampling: SamplingSpec,
        request_id: str,
        logprobs: int | None = None,
        prompt_token_ids: Sequence[int] = (),
    ) -> AsyncGenerator[Chunk, None]:
        self.holding += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.holding -= 1
        yield Chunk(text="", token_ids=())  # pragma: no cover  (never reached)


class CountingEngine(FakeEngine):
    """A fast fake that keeps an engine's books: `num_unfinished` counts generations begun and not
    yet ended (finished, failed, closed or cancelled), as vLLM's does. It honours `max_tokens`
    (finish reason "length" when it cuts the text), yields to the loop before every token, as a
    real engine does, and keeps no prompts (fuzzing sends megabytes)."""

    def __init__(self, name: str, text: str = "one two three four five six seven eight") -> None:
        super().__init__(name, text)
        self.unfinished = 0
        self.started = 0

    def answer(self, max_tokens: int) -> tuple[str, str]:
        """The text and finish reason of a generation of at most `max_tokens` tokens."""
        words = self.text.split(" ")
        return " ".join(words[:max_tokens]), "length" if max_tokens < len(words) else "stop"

    async def generate(
        self,
        prompt: str,
        sampling: SamplingSpec,
        request_id: str,
        logprobs: int | None = None,
        prompt_token_ids: Sequence[int] = (),
    ) -> AsyncGenerator[Chunk, None]:
        self.unfinished += 1
        self.started += 1
        try:
            text, reason = self.answer(sampling.max_tokens)
            words = text.split(" ")
            for i, w in enumerate(words):
                await asyncio.sleep(0)
                last = i == len(words) - 1
                yield Chunk(
                    text=w if i == 0 else " " + w,
                    token_ids=(self.first_id + i,),
                    finished=last,
                    finish_reason=reason if last else None,
                    prompt_tokens=len(self.encode_prompt(prompt)),
                    completion_tokens=i + 1,
                )
        finally:
            self.unfinished -= 1

    def num_unfinished(self) -> int:
        return self.unfinished
