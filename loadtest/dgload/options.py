"""The load generator's options: locust command-line arguments, each also read from an environment
variable (so `DRIFTGATE_API_KEY=... locust ...` works, and a master forwards them to its workers)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_TOKENS = 16
DEFAULT_TIMEOUT_S = 60.0
TLS_SCHEMES = ("https", "grpcs")


def _f(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Options:
    """What every simulated user sends and how it connects."""

    max_tokens: int = _f(DEFAULT_MAX_TOKENS, "max_tokens of every request")
    ignore_eos: bool = _f(False, "generate past end-of-sequence: every answer is max_tokens long")
    variant: str = _f("", "pin every request to this variant (gRPC `variant`, HTTP `model`); empty: routed")
    timeout_s: float = _f(DEFAULT_TIMEOUT_S, "per-request deadline in seconds")
    tls_ca: str = _f("", "PEM file of the CA that signed the gateway's certificate (turns TLS on)")
    tls_cert: str = _f("", "PEM client certificate for mTLS (turns TLS on; needs tls_key)")
    tls_key: str = _f("", "PEM private key of tls_cert")
    tls_server_name: str = _f("", "name to check the server's certificate against (default: the host)")
    api_key: str = _f("", "API key, sent as `authorization: Bearer <key>`")


def boolean(raw: str) -> bool:
    """1/true/yes/on or 0/false/no/off (any case); ValueError otherwise."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


ARGUMENTS: tuple[tuple[str, str, Any], ...] = (
    ("max_tokens", "DRIFTGATE_MAX_TOKENS", int),
    ("ignore_eos", "DRIFTGATE_IGNORE_EOS", boolean),
    ("variant", "DRIFTGATE_VARIANT", str),
    ("timeout_s", "DRIFTGATE_TIMEOUT_S", float),
    ("tls_ca", "DRIFTGATE_TLS_CA", str),
    ("tls_cert", "DRIFTGATE_TLS_CERT", str),
    ("tls_key", "DRIFTGATE_TLS_KEY", str),
    ("tls_server_name", "DRIFTGATE_TLS_SERVER_NAME", str),
    ("api_key", "DRIFTGATE_API_KEY", str),
)
"""(field, environment variable, type); the flag is `--dg-` + the field with dashes."""


def flag(name: str) -> str:
    return "--dg-" + name.replace("_", "-")


def add_arguments(parser: Any) -> None:
    """Adds the `--dg-*` arguments to locust's parser (configargparse: `env_var` is honoured)."""
    for name, env, tp in ARGUMENTS:
        doc = Options.__dataclass_fields__[name].metadata["doc"]
        switch = {"nargs": "?", "const": "true"} if tp is boolean else {}  # `--dg-ignore-eos` alone: on
        parser.add_argument(
            flag(name),
            type=str,
            default=None,
            **switch,
            env_var=env,
            help=f"{doc} [env {env}]",
            include_in_web_ui=name != "api_key",
        )


def _check(opts: Options) -> Options:
    if opts.max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {opts.max_tokens}")
    if opts.timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {opts.timeout_s}")
    if bool(opts.tls_cert) != bool(opts.tls_key):
        raise ValueError("mTLS needs both a client certificate and its key (DRIFTGATE_TLS_CERT/_KEY)")
    for path in (opts.tls_ca, opts.tls_cert, opts.tls_key):
        if path and not os.path.isfile(path):
            raise ValueError(f"no such file: {path}")
    return opts


def options_of(parsed: Any) -> Options:
    """The options from locust's parsed arguments, or (used as a library) the environment alone.
    Raises ValueError on a bad value."""
    values: dict[str, Any] = {}
    for name, env, tp in ARGUMENTS:
        raw = getattr(parsed, "dg_" + name, None) if parsed is not None else None
        raw = os.environ.get(env, "") if raw is None else raw
        raw = str(raw).strip()
        if raw:
            try:
                values[name] = tp(raw)
            except ValueError:
                raise ValueError(f"{env} ({flag(name)}): not a {tp.__name__}: {raw!r}") from None
    return _check(Options(**values))


@dataclass(frozen=True)
class Target:
    """Where the users connect: HOST:PORT and whether over TLS."""

    hostport: str
    tls: bool

    def base_url(self) -> str:
        return ("https://" if self.tls else "http://") + self.hostport


def target_of(host: str | None, opts: Options) -> Target:
    """`--host` as a target: `HOST:PORT`, `http://HOST:PORT` or `https://`/`grpcs://HOST:PORT`
    (TLS; also on with any TLS option). Any host: a staging cluster is a fine target."""
    if not host:
        raise ValueError("no host: pass --host HOST:PORT, e.g. --host 127.0.0.1:50051")
    scheme, sep, rest = host.strip().partition("://")
    if not sep:
        scheme, rest = "", host.strip()
    hostport = rest.split("/", 1)[0]
    name, colon, port = hostport.rpartition(":")
    if not colon or not port.isdigit() or not name.strip("[]"):
        raise ValueError(f"host {host!r}: expected HOST:PORT")
    if scheme and scheme.lower() not in ("http", *TLS_SCHEMES):
        raise ValueError(f"host {host!r}: scheme must be http, https or grpcs")
    tls = scheme.lower() in TLS_SCHEMES or bool(opts.tls_ca or opts.tls_cert)
    return Target(hostport, tls)


def read(path: str) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()
