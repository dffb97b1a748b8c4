"""The gRPC client of `driftgate.v1.Gateway`: one channel (TLS or not), every call reported."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
from locust.env import Environment

from dgload.options import Options, Target, read
from dgload.report import CallError, Reporter, StreamClock
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc


def from_rpc_error(exc: grpc.RpcError) -> CallError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else None
    return CallError(getattr(code, "name", "UNKNOWN"), details or "")


def channel_of(target: Target, opts: Options) -> grpc.Channel:
    """An insecure channel, or a TLS one (CA from `tls_ca`, else the system roots; a client
    certificate for mTLS; `tls_server_name` overrides the name checked)."""
    if not target.tls:
        return grpc.insecure_channel(target.hostport)
    creds = grpc.ssl_channel_credentials(read(opts.tls_ca), read(opts.tls_key), read(opts.tls_cert))
    options = [("grpc.ssl_target_name_override", opts.tls_server_name)] if opts.tls_server_name else []
    return grpc.secure_channel(target.hostport, creds, options=options)


class GatewayClient(Reporter):
    """A Gateway stub on one channel, reported as `Generate[variant]`, `GenerateStream[variant]`
    (+ `/ttft`, `/itl`)."""

    request_type = "grpc"

    def __init__(self, environment: Environment, target: Target, opts: Options) -> None:
        super().__init__(environment, opts.variant)
        self._timeout_s = opts.timeout_s
        self._metadata = (("authorization", f"Bearer {opts.api_key}"),) if opts.api_key else ()
        self._channel = channel_of(target, opts)
        self._stub = pb_grpc.GatewayStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def generate(self, request: Any) -> Any | None:
        """Unary Generate. Returns the response, or None on failure."""
        start = time.perf_counter()
        try:
            reply = self._stub.Generate(request, timeout=self._timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            self.done("Generate", start, None, 0, from_rpc_error(exc))
            return None
        self.done("Generate", start, reply.variant, len(reply.text.encode()), None)
        return reply

    def generate_stream(self, request: Any) -> str | None:
        """GenerateStream. Returns the streamed text, or None on failure."""
        clock = StreamClock(time.perf_counter())
        parts: list[str] = []
        last: Any = None
        error: Exception | None = None
        try:
            chunks: Iterator[Any] = self._stub.GenerateStream(
                request, timeout=self._timeout_s, metadata=self._metadata
            )
            for chunk in chunks:
                if chunk.text:
                    clock.chunk()
                parts.append(chunk.text)
                last = chunk
        except grpc.RpcError as exc:
            error = from_rpc_error(exc)
        clock.end = time.perf_counter()
        if error is None and (last is None or not last.finished):
            error = CallError("INCOMPLETE", "the stream ended without a finished chunk")
        text = "".join(parts)
        variant = last.variant if error is None else None
        clock.tokens = last.completion_tokens if error is None else 0
        self.stream_done("GenerateStream", clock, variant, len(text.encode()), error)
        return None if error else text
