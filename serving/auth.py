"""API keys: who may call the gateway, and who may change its traffic (pure; no grpc, no HTTP).

Keys are never stored: the keys file holds, per key, a name (what logs show), a scope and the
SHA-256 of the key (hex). A caller sends `authorization: Bearer <key>` (gRPC metadata or HTTP
header); its hash is compared in constant time with every stored hash (`hmac.compare_digest`,
all of them, so timing does not tell which matched). Scopes: `user` may generate and read;
`admin` may also change weights, sample rates and the primary.

Keys file (YAML; a Kubernetes Secret mounts it):

    keys:
      - {name: ci-pipeline, scope: admin, sha256: 9f86d081884c7d65...}
      - {name: web-frontend, scope: user, sha256: 2c26b46b68ffc68f...}

`python -c "import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())" KEY`
prints the hash of a key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from serving.errors import ConfigError, GatewayError, Status

HEX64 = re.compile(r"^[0-9a-f]{64}$")
BEARER = "bearer "


class Scope(StrEnum):
    USER = "user"
    ADMIN = "admin"


class Unauthenticated(GatewayError):
    status = Status.UNAUTHENTICATED


class PermissionDenied(GatewayError):
    status = Status.PERMISSION_DENIED


@dataclass(frozen=True)
class ApiKey:
    name: str
    scope: Scope
    sha256: bytes


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _parse_key(entry: Any, where: str) -> ApiKey:
    if not isinstance(entry, Mapping) or set(entry) != {"name", "scope", "sha256"}:
        raise ConfigError(f"{where}: each key needs exactly name, scope and sha256")
    name, scope, digest = (str(entry[k]) for k in ("name", "scope", "sha256"))
    if not name or scope not in {s.value for s in Scope}:
        raise ConfigError(f"{where}: key {name!r}: scope must be user or admin, got {scope!r}")
    if not HEX64.match(digest.lower()):
        raise ConfigError(
            f"{where}: key {name!r}: sha256 must be 64 hex digits (the key's hash, not the key)"
        )
    return ApiKey(name, Scope(scope), bytes.fromhex(digest.lower()))


def load_keys(path: str | Path) -> tuple[ApiKey, ...]:
    """The keys of a keys file; raises ConfigError for a missing, unreadable or malformed one."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the keys file {path}: {exc}") from None
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected a non-empty `keys:` list")
    keys = tuple(_parse_key(e, str(path)) for e in entries)
    names = [k.name for k in keys]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: key names must be unique")
    return keys


class Authenticator:
    """Checks bearer tokens against the stored hashes. With no keys, everyone is an admin."""

    def __init__(self, keys: Sequence[ApiKey] = ()) -> None:
        self.keys = tuple(keys)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def authenticate(self, authorization: str | None) -> ApiKey | None:
        """The key behind an `authorization` value (None when authentication is off); raises
        Unauthenticated for a missing, malformed or unknown key."""
        if not self.keys:
            return None
        if not authorization or not authorization.lower().startswith(BEARER):
            raise Unauthenticated("missing credentials: send `authorization: Bearer <API key>`")
        digest = hashlib.sha256(authorization[len(BEARER) :].strip().encode("utf-8")).digest()
        found = None
        for key in self.keys:  # no early exit: every comparison runs
            if hmac.compare_digest(digest, key.sha256):
                found = key
        if found is None:
            raise Unauthenticated("invalid API key")
        return found

    def authorize(self, key: ApiKey | None, needs: Scope) -> None:
        """Raises PermissionDenied when `key`'s scope is below `needs`."""
        if key is not None and needs is Scope.ADMIN and key.scope is not Scope.ADMIN:
            raise PermissionDenied(f"key {key.name!r} has scope {key.scope.value}; this method needs admin")
