"""The gateway's error hierarchy: each error carries the gRPC status code it maps to.

Only `serving/grpc/` translates these into gRPC statuses (one interceptor); the rest of the
code raises them without importing grpc.
"""

from __future__ import annotations

from enum import Enum


class Status(Enum):
    """Status codes, named after gRPC's, so the domain layer needs no grpc import."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    INTERNAL = "INTERNAL"


class GatewayError(Exception):
    """Base class: a message safe to show a client and the status it maps to."""

    status: Status = Status.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(GatewayError):
    status = Status.INVALID_ARGUMENT


class NotFound(GatewayError):
    status = Status.NOT_FOUND


class ResourceExhausted(GatewayError):
    status = Status.RESOURCE_EXHAUSTED


class Unavailable(GatewayError):
    status = Status.UNAVAILABLE


class PayloadTooLarge(GatewayError):
    """Input over a size limit (RESOURCE_EXHAUSTED over gRPC, as gRPC's own size limit; 413 over HTTP)."""

    status = Status.RESOURCE_EXHAUSTED


class EngineFailure(GatewayError):
    status = Status.INTERNAL


class ConfigError(ValueError):
    """A configuration file or value is wrong (raised at start-up, never on the request path)."""
