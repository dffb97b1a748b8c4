"""The client of the gateway's OpenAI-compatible HTTP door: one keep-alive session (HTTPS or not),
every call reported as `completions[variant]`, `chat/stream[variant]` (+ `/ttft`, `/itl`), ..."""

from __future__ import annotations

import json
import time
from typing import Any

import requests
from locust.env import Environment

from dgload.options import Options, Target
from dgload.report import CallError, Reporter, StreamClock


def error_of(response: requests.Response) -> CallError:
    """A non-200 answer as "HTTP <status>: <OpenAI error message>"."""
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    return CallError(f"HTTP {response.status_code}", message)


def text_of(event: dict[str, Any]) -> str:
    """The text of a completion/chat answer or stream chunk ("" for role and usage chunks)."""
    if not event.get("choices"):
        return ""
    choice = event["choices"][0]
    if "text" in choice:
        return str(choice["text"] or "")
    part = choice.get("message") or choice.get("delta") or {}
    return str(part.get("content") or "")


def session_of(opts: Options) -> requests.Session:
    session = requests.Session()
    if opts.tls_cert:
        session.cert = (opts.tls_cert, opts.tls_key)
    if opts.api_key:
        session.headers["authorization"] = f"Bearer {opts.api_key}"
    return session


class OpenAIClient(Reporter):
    """`/v1/completions` and `/v1/chat/completions`, whole and streamed (SSE)."""

    request_type = "http"

    def __init__(self, environment: Environment, target: Target, opts: Options) -> None:
        super().__init__(environment, opts.variant)
        self._base_url = target.base_url()
        self._timeout_s = opts.timeout_s
        self._session = session_of(opts)
        # Per request: a session's `verify` loses to $REQUESTS_CA_BUNDLE (requests issue 3829).
        self._verify: str | bool = opts.tls_ca or True

    def close(self) -> None:
        self._session.close()

    def _post(self, path: str, body: dict[str, Any], stream: bool = False) -> requests.Response:
        return self._session.post(
            self._base_url + path, json=body, stream=stream, timeout=self._timeout_s, verify=self._verify
        )

    def whole(self, path: str, name: str, body: dict[str, Any]) -> str | None:
        """A non-streamed answer. Returns its text, or None on failure."""
        start = time.perf_counter()
        try:
            response = self._post(path, body)
        except requests.RequestException as exc:
            self.done(name, start, None, 0, CallError("CONNECTION", type(exc).__name__))
            return None
        if response.status_code != 200:
            self.done(name, start, None, 0, error_of(response))
            return None
        answer = response.json()
        text = text_of(answer)
        self.done(name, start, answer.get("model"), len(text.encode()), None)
        return text

    def stream(self, path: str, name: str, body: dict[str, Any]) -> str | None:
        """A streamed answer (usage asked for, to count tokens). Returns its text, or None on failure."""
        clock = StreamClock(time.perf_counter())
        parts: list[str] = []
        variant: str | None = None
        error: Exception | None = CallError("INCOMPLETE", "the stream ended without data: [DONE]")
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        try:
            with self._post(path, body, stream=True) as response:
                ok = response.status_code == 200
                error = error if ok else error_of(response)
                for line in response.iter_lines() if ok else []:
                    data = line.decode("utf-8").removeprefix("data: ")  # SSE is UTF-8
                    if data == "[DONE]":
                        error = None
                        break
                    event = json.loads(data) if data else {}
                    if "error" in event:
                        error = CallError("SSE error", str(event["error"].get("message", "")))
                        break
                    variant = event.get("model") or variant
                    clock.tokens = (event.get("usage") or {}).get("completion_tokens", clock.tokens)
                    text = text_of(event)
                    if text:
                        clock.chunk()
                    parts.append(text)
        except requests.RequestException as exc:
            error = CallError("CONNECTION", type(exc).__name__)
        clock.end = time.perf_counter()
        text = "".join(parts)
        self.stream_done(name, clock, variant if error is None else None, len(text.encode()), error)
        return None if error else text
