"""Reading a request body: bounded in size before any parsing, then JSON, then a pydantic model."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from serving.http.errors import HttpError, validation_error

MAX_BODY_BYTES = 1 << 20
"""Default largest request body (413 beyond), checked on Content-Length and on the bytes read. The
door passes `limits.max_request_bytes` instead: the same limit gRPC puts on a request message."""

M = TypeVar("M", bound=BaseModel)


def _too_large(limit: int) -> HttpError:
    return HttpError(413, f"request body over {limit} bytes", code="request_too_large")


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, refused with 413 as soon as its declared or received size passes `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HttpError(400, "invalid Content-Length header", code="invalid_request")
        if int(declared) > limit:
            raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def parse_json(raw: bytes) -> dict[str, object]:
    """The body as a JSON object; 400 for anything else (bad UTF-8, bad JSON, lone surrogates,
    nesting too deep to parse, a top-level value that is not an object)."""
    if not raw.strip():
        raise HttpError(400, "the request body is empty; send a JSON object", code="invalid_json")
    try:
        data = json.loads(raw.decode("utf-8"))
        json.dumps(data, ensure_ascii=False).encode("utf-8")  # rejects lone surrogates ("\ud800")
    except UnicodeDecodeError:
        raise HttpError(400, "the request body is not valid UTF-8 text", code="invalid_json") from None
    except UnicodeEncodeError:
        raise HttpError(
            400, "the request body holds a lone surrogate escape (\\ud800-\\udfff)", code="invalid_json"
        ) from None
    except (ValueError, RecursionError):
        raise HttpError(400, "the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise HttpError(400, "the request body must be a JSON object", code="invalid_json")
    return data


async def parse_request(request: Request, model: type[M], limit: int = MAX_BODY_BYTES) -> M:
    """The body (at most `limit` bytes) validated as `model` (strict: no coercion between JSON types)."""
    data = parse_json(await read_body(request, limit))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False, include_input=False)) from None
