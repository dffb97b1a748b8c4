"""OpenAI's request and response bodies (the subset driftgate serves), as pydantic models.

Requests are strict (no string-to-number coercion) and closed: an unknown field is an error, as
on OpenAI's API. Fields OpenAI clients commonly send are accepted at their neutral values and
refused otherwise (`unsupported`), so a request never silently loses a setting.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

UINT64_MAX = (1 << 64) - 1
Seed = Annotated[int, Field(ge=0, le=UINT64_MAX)]
"""The gRPC contract's `uint64 seed`: the same range over HTTP."""


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class StreamOptions(_Request):
    include_usage: bool | None = None


def _text_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ValueError("must be a string or a list of strings")
    return value


class _Sampling(_Request):
    """Fields both endpoints share."""

    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: Seed | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    ignore_eos: bool | None = None
    """vLLM's extension (`vllm bench serve --ignore-eos` sends it): generate up to max_tokens."""
    repetition_penalty: float | None = None
    """vLLM's extension; `vllm bench serve` sends 1.0 (neutral), the only value accepted."""
    stream_interval: int | None = None
    """vLLM's extension: tokens per streamed chunk after the first (checked always, used with `stream`)."""

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, value: Any) -> Any:
        return value if value is None or isinstance(value, str) else _text_list(value)

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def unsupported(self) -> list[tuple[str, str]]:
        """(parameter, reason) for every field set to something driftgate cannot honour."""
        found = []
        if self.n not in (None, 1):
            found.append(("n", "only n=1 is supported (one choice per request)"))
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0):
                found.append((name, f"{name} is not supported; leave it unset or 0"))
        if self.logit_bias:
            found.append(("logit_bias", "logit_bias is not supported"))
        if self.repetition_penalty not in (None, 1):
            found.append(("repetition_penalty", "repetition_penalty is not supported; leave it unset or 1"))
        if self.stream_options is not None and not self.stream:
            found.append(("stream_options", "stream_options is only allowed with stream: true"))
        return found


class CompletionRequest(_Sampling):
    """`POST /v1/completions`."""

    prompt: str
    logprobs: int | None = None
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
            return value[0]
        raise ValueError("must be a string (batches and token-id arrays are not supported)")

    def unsupported(self) -> list[tuple[str, str]]:
        found = super().unsupported()
        if self.logprobs is not None:
            found.append(("logprobs", "logprobs is not supported by driftgate"))
        if self.echo:
            found.append(("echo", "echo is not supported by driftgate"))
        if self.best_of not in (None, 1):
            found.append(("best_of", "only best_of=1 is supported"))
        if self.suffix:
            found.append(("suffix", "suffix (insertion) is not supported"))
        return found


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessageIn(_Request):
    role: str
    content: str | list[TextPart] | None = None
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
            return value
        raise ValueError('must be a string or a list of {"type": "text", "text": ...} parts')

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "\n".join(part.text for part in self.content)


class ChatCompletionRequest(_Sampling):
    """`POST /v1/chat/completions`."""

    messages: Annotated[list[ChatMessageIn], Field(min_length=1)]
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None

    def completion_limit(self) -> int | None:
        return self.max_tokens if self.max_completion_tokens is None else self.max_completion_tokens

    def unsupported(self) -> list[tuple[str, str]]:
        found = super().unsupported()
        if self.logprobs or self.top_logprobs:
            found.append(("logprobs", "logprobs is not supported by driftgate"))
        if self.response_format not in (None, {"type": "text"}):
            found.append(("response_format", 'only response_format {"type": "text"} is supported'))
        both = self.max_tokens is not None and self.max_completion_tokens is not None
        if both and self.max_tokens != self.max_completion_tokens:
            found.append(("max_completion_tokens", "max_tokens and max_completion_tokens disagree"))
        return found


# ---------------------------------------------------------------------------------- responses
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: str | None


class CompletionResponse(BaseModel):
    """A completion, and also one streamed chunk of one (OpenAI uses the same object name)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: dict[str, str]
    """{"role": "assistant"} first, then {"content": ...}, then {} with the finish reason."""
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    """One entry of `GET /v1/models`; `role` and `ready` are driftgate's additions."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "driftgate"
    role: str
    ready: bool


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorBody
