"""A client's request and its checks (pure): input limits first, before any tokenization, then
the sampling parameters against the defaults, the limits and the answering model's context."""

from __future__ import annotations

import math
from dataclasses import dataclass

from serving.config import GenerationConfig, LimitsConfig
from serving.engines.base import SamplingSpec
from serving.errors import InvalidArgument, PayloadTooLarge

CHAT_ROLES = frozenset({"system", "user", "assistant"})


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a chat conversation."""

    role: str
    content: str


@dataclass(frozen=True)
class GenerateCall:
    """A client's request, before defaults and validation: a `prompt`, or chat `messages`."""

    prompt: str = ""
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    variant: str = ""
    request_id: str = ""
    messages: tuple[ChatMessage, ...] = ()
    ignore_eos: bool = False
    """Generate past end-of-sequence, up to max_tokens or a stop string (fixed-length answers)."""
    caller: str = ""
    """The API key's name ("" when authentication is off): per-key concurrency counts by it."""
    door: str = "internal"
    """Where the request came in: grpc | http | internal (labels the gateway's added latency)."""
    received_at: float | None = None
    """`time.perf_counter()` when the door received it (default: when the gateway did)."""
    stream_interval: int | None = None
    """Tokens per streamed chunk after the first (vLLM's `stream_interval`); unset: every token."""


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def check_input(call: GenerateCall, g: GenerationConfig, limits: LimitsConfig) -> None:
    """Shape and size checks that need no tokenizer (oversized input is refused here, cheaply)."""
    size = _utf8_len(call.prompt) + sum(_utf8_len(m.content) for m in call.messages)
    if size > limits.max_prompt_bytes:
        raise PayloadTooLarge(f"the prompt is {size} bytes; the limit is {limits.max_prompt_bytes}")
    if call.messages:
        if call.prompt:
            raise InvalidArgument("send either prompt or messages, not both")
        if len(call.messages) > g.max_messages:
            raise InvalidArgument(f"at most {g.max_messages} messages, got {len(call.messages)}")
        roles = sorted({m.role for m in call.messages} - CHAT_ROLES)
        if roles:
            raise InvalidArgument(f"unknown message role(s) {roles}; use one of {sorted(CHAT_ROLES)}")
        if not any(m.content.strip() for m in call.messages):
            raise InvalidArgument("every message is empty")
    elif not call.prompt.strip():
        raise InvalidArgument("prompt must not be empty (or send messages)")
    if len(call.stop) > g.max_stop_sequences or any(not s for s in call.stop):
        raise InvalidArgument(f"stop: at most {g.max_stop_sequences} non-empty strings, got {len(call.stop)}")
    if any(_utf8_len(s) > limits.max_stop_bytes for s in call.stop):
        raise InvalidArgument(f"stop: each string at most {limits.max_stop_bytes} bytes")
    if call.max_tokens is not None and not 1 <= call.max_tokens <= limits.max_tokens:
        raise InvalidArgument(f"max_tokens must be in [1, {limits.max_tokens}], got {call.max_tokens}")
    if call.stream_interval is not None and not 1 <= call.stream_interval <= limits.max_tokens:
        raise InvalidArgument(
            f"stream_interval must be in [1, {limits.max_tokens}], got {call.stream_interval}"
        )
    if call.ignore_eos and not limits.allow_ignore_eos:
        raise InvalidArgument("ignore_eos is turned off on this gateway (limits.allow_ignore_eos)")


def sampling_spec(
    call: GenerateCall, prompt_tokens: int, max_model_len: int, g: GenerationConfig, limits: LimitsConfig
) -> SamplingSpec:
    """The validated, defaulted sampling parameters of `call` (a prompt of `prompt_tokens`)."""
    max_tokens = g.max_tokens if call.max_tokens is None else call.max_tokens
    temperature = g.temperature if call.temperature is None else call.temperature
    if not math.isfinite(temperature) or not 0.0 <= temperature <= 2.0:
        raise InvalidArgument(f"temperature must be in [0, 2], got {temperature}")
    top_p = 1.0 if call.top_p is None else call.top_p
    if not math.isfinite(top_p) or not 0.0 < top_p <= 1.0:
        raise InvalidArgument(f"top_p must be in (0, 1], got {top_p}")
    if limits.max_prompt_tokens and prompt_tokens > limits.max_prompt_tokens:
        raise PayloadTooLarge(
            f"the prompt is {prompt_tokens} tokens; the limit is {limits.max_prompt_tokens}"
        )
    if prompt_tokens + max_tokens > max_model_len:
        raise InvalidArgument(
            f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds the model's "
            f"context of {max_model_len} tokens"
        )
    return SamplingSpec(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=call.seed,
        stop=tuple(call.stop),
        ignore_eos=call.ignore_eos,
        stream_interval=call.stream_interval or 1,
    )
