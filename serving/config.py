"""Configuration: one dataclass per topic, every field with a default and a one-line doc.

Everything is loaded from one YAML file by `load_config`; unknown keys are an error. The CLI
builds its flags from the same dataclasses (`add_flags` / `apply_flags`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, TypeVar

import yaml

from serving.engine_choices import Executor, FusedKernels, Preload
from serving.errors import ConfigError
from serving.gate.verdict import GateConfig
from serving.home import driftgate_home

T = TypeVar("T")


def _f(default: Any, doc: str) -> Any:
    """A dataclass field with a default and a one-line doc (shown by the CLI)."""
    if isinstance(default, list | dict):
        factory = default.copy
        return field(default_factory=factory, metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


class Role(StrEnum):
    PRIMARY = "primary"
    CANDIDATE = "candidate"
    SHADOW = "shadow"


def expand_path(value: str) -> str:
    """Expands ~, $VARS and ${DRIFTGATE_HOME} (defaulted) in a configured path."""
    env = {"DRIFTGATE_HOME": str(driftgate_home()), **os.environ}
    return str(Path(os.path.expandvars(_subst(value, env))).expanduser())


def _subst(value: str, env: dict[str, str]) -> str:
    for key in ("DRIFTGATE_HOME",):
        value = value.replace("${" + key + "}", env[key]).replace("$" + key, env[key])
    return value


@dataclass
class EngineConfig:
    """Where a variant runs: in-process vLLM (no `url`) or a vLLM OpenAI server at `url`.

    The vLLM settings apply to the in-process engine and to the server `driftgate variant serve`
    starts; a remote server started otherwise has its own."""

    url: str = _f("", "base URL of the variant's vLLM OpenAI server (empty = in-process engine)")
    served_model_name: str = _f("", "remote: the model name the server serves (empty = the variant's name)")
    connect_timeout_s: float = _f(5.0, "remote: seconds to open a connection to the server")
    read_timeout_s: float = _f(120.0, "remote: seconds the server may stay silent during an answer")
    pool_size: int = _f(64, "remote: most open connections to the server")
    dtype: str = _f(
        "auto",
        "weights/activations dtype; auto = vLLM's (the checkpoint's, bf16 here), but float32 for an "
        "unquantized checkpoint on a CPU without AVX-512 (serving.engines.cpu.resolve_dtype)",
    )
    max_model_len: int = _f(2048, "context length (prompt + completion tokens)")
    kv_cache_gib: float = _f(1.0, "KV cache size in GiB (kv_cache_memory_bytes; fractions allowed)")
    cpu_cores: str = _f("0-1", "cores the engine's worker binds to (VLLM_CPU_OMP_THREADS_BIND)")
    max_num_seqs: int = _f(32, "most sequences the engine batches at once")
    max_logprobs: int = _f(20, "largest top-k of logprobs the engine may return")
    seed: int = _f(0, "engine seed")
    enforce_eager: bool = _f(False, "no torch.compile: faster start, slower single-stream decode")
    aot_compile: bool = _f(
        True, "vLLM's AOT compile, cached per model: fast decode; false: faster cold starts"
    )
    preload: Preload = _f(
        Preload.AUTO,
        "LD_PRELOAD of the engine: auto (tcmalloc+iomp, what is found) | none | tcmalloc | tcmalloc+iomp",
    )
    nice: int = _f(
        0, "CPU niceness of the engine's processes, 0-19: >0 yields the cores it shares with the gateway"
    )
    executor: Executor = _f(
        Executor.UNI,
        "uni: the model runs in vLLM's engine-core process | mp: vLLM's CPU default, a worker process of its own",
    )
    fused_kernels: FusedKernels = _f(
        FusedKernels.PARALLEL,
        "inductor's fused element-wise kernels: parallel (vLLM's, an OpenMP region each) | serial (one thread)",
    )


@dataclass
class VariantConfig:
    """One served model: dense or compressed."""

    name: str = _f("dense", "unique name; requests may pin it")
    model: str = _f("${DRIFTGATE_HOME}/models/smollm2-135m-instruct", "checkpoint directory")
    role: Role = _f(Role.PRIMARY, "primary | candidate | shadow")
    weight: float = _f(1.0, "share of live traffic (primary and candidates), relative to the others")
    sample_rate: float = _f(1.0, "shadows: share of requests mirrored to this variant (0-1)")
    score_rate: float = _f(1.0, "shadows: share of mirrored copies also scored teacher-forced (0-1)")
    max_in_flight: int = _f(8, "shadows: mirrored requests in flight beyond which copies are dropped")
    timeout_s: float = _f(60.0, "shadows: a mirrored request (and its scoring) times out after this")
    gate: dict[str, Any] = _f({}, "overrides of the `gate` defaults for this variant (same keys)")
    engine: EngineConfig = _f(None, "engine settings")

    def __post_init__(self) -> None:
        if self.engine is None:
            self.engine = EngineConfig()

    @property
    def model_path(self) -> str:
        return expand_path(self.model)

    @property
    def remote(self) -> bool:
        """Served by a vLLM server at `engine.url` rather than in this process."""
        return bool(self.engine.url)

    @property
    def served_name(self) -> str:
        return self.engine.served_model_name or self.name


@dataclass
class ServerConfig:
    """Network endpoints and lifecycle."""

    host: str = _f("127.0.0.1", "address the gRPC and metrics servers listen on")
    grpc_port: int = _f(50051, "gRPC port (0 = any free port)")
    metrics_port: int = _f(9400, "Prometheus /metrics port (0 = any free port, -1 = off)")
    http_port: int = _f(8000, "OpenAI-compatible HTTP port (0 = any free port, -1 = off)")
    drain_timeout_s: float = _f(30.0, "on SIGTERM, time in-flight requests get to finish")
    max_concurrent_requests: int = _f(256, "requests beyond this are refused with RESOURCE_EXHAUSTED")
    verdict_refresh_s: float = _f(15.0, "seconds between refreshes of the driftgate_gate_* gauges (0 = off)")
    health_interval_s: float = _f(2.0, "seconds between health checks of every variant's engine")
    health_timeout_s: float = _f(5.0, "a health check slower than this counts as failed")
    max_engine_restarts: int = _f(5, "restarts in a row of a failed in-process engine before it stays down")
    engine_start_concurrency: int = _f(0, "in-process engines built at once at start (0 = one per CPU core)")
    event_loop: str = _f(
        "asyncio", "`driftgate serve`'s event loop: asyncio or uvloop (compared by make bench)"
    )
    gc_freeze: bool = _f(
        True, "once up, freeze the start-up heap so garbage collections skip it (as vllm serve)"
    )


@dataclass
class LimitsConfig:
    """Input and concurrency limits; a request over one is refused before any engine work."""

    max_request_bytes: int = _f(4 << 20, "largest gRPC request message (gRPC refuses bigger ones itself)")
    max_prompt_bytes: int = _f(1 << 20, "largest prompt (or sum of chat message contents), UTF-8 bytes")
    max_prompt_tokens: int = _f(0, "largest prompt in tokens (0 = the model's context decides)")
    max_tokens: int = _f(4096, "largest max_tokens a request may ask for")
    max_stop_bytes: int = _f(256, "longest stop string, UTF-8 bytes")
    max_concurrent_per_key: int = _f(0, "requests in flight per API key (0 = only the overall limit)")
    allow_ignore_eos: bool = _f(True, "requests may set ignore_eos (answers run to max_tokens: load tests)")


@dataclass
class AuthConfig:
    """Who may call: API keys (as SHA-256 hashes, see serving/auth.py) and their scopes."""

    keys_file: str = _f("", "YAML file of API keys (name, scope user|admin, sha256); empty = no keys needed")
    open_health: bool = _f(True, "gRPC health checks need no key (kubelet probes carry none)")
    open_reflection: bool = _f(True, "gRPC server reflection needs no key")


@dataclass
class TlsConfig:
    """TLS for gRPC, the HTTP door and /metrics; mutual TLS when a client CA is given."""

    cert_file: str = _f("", "server certificate chain (PEM); empty = plaintext")
    key_file: str = _f("", "server private key (PEM)")
    client_ca_file: str = _f("", "CA (PEM) that client certificates must chain to; set = mTLS required")
    metrics: bool = _f(True, "serve /metrics over TLS too (with the same files)")


@dataclass
class GenerationConfig:
    """Defaults for fields a request leaves unset."""

    max_tokens: int = _f(64, "completion length when a request sets none")
    temperature: float = _f(0.0, "sampling temperature when a request sets none (0 = greedy)")
    max_stop_sequences: int = _f(8, "most stop strings a request may carry")
    max_messages: int = _f(64, "most chat messages a request may carry")


@dataclass
class DriftConfig:
    """Online comparison of shadow answers with the primary's."""

    teacher_forced: bool = _f(
        True, "score the primary's answer under the shadows (prompt logprobs); off: no KL gate"
    )
    top_k: int = _f(5, "top-k logprobs per position for teacher-forced agreement and KL")


@dataclass
class ProbeConfig:
    """Synthetic knowledge-probe traffic sent by the gateway while it runs."""

    enabled: bool = _f(False, "send probe facts to every variant as low-rate synthetic traffic")
    file: str = _f("builtin:capitals-small", "probe JSONL file, or builtin:NAME")
    rate_per_s: float = _f(0.2, "probe facts sent per second (each goes to every ready variant)")
    max_tokens: int = _f(8, "greedy tokens generated per probe")


@dataclass
class Config:
    """The whole gateway configuration (one YAML file)."""

    server: ServerConfig = _f(None, "network endpoints")
    generation: GenerationConfig = _f(None, "request defaults")
    drift: DriftConfig = _f(None, "answer comparison")
    probes: ProbeConfig = _f(None, "synthetic probe traffic")
    gate: GateConfig = _f(None, "promotion gates: defaults for every variant (see serving/gate/verdict.py)")
    limits: LimitsConfig = _f(None, "input and concurrency limits")
    auth: AuthConfig = _f(None, "API keys")
    tls: TlsConfig = _f(None, "transport security")
    variants: list[VariantConfig] = _f([], "served variants; exactly one has role primary")

    def __post_init__(self) -> None:
        self.server = self.server or ServerConfig()
        self.generation = self.generation or GenerationConfig()
        self.drift = self.drift or DriftConfig()
        self.probes = self.probes or ProbeConfig()
        self.gate = self.gate or GateConfig()
        self.limits = self.limits or LimitsConfig()
        self.auth = self.auth or AuthConfig()
        self.tls = self.tls or TlsConfig()
        if not self.variants:
            self.variants = [VariantConfig()]
        validate(self)

    @property
    def primary(self) -> VariantConfig:
        return next(v for v in self.variants if v.role is Role.PRIMARY)

    def primary_first(self) -> list[VariantConfig]:
        """The variants, the primary first (the order engines start and probes run in)."""
        return sorted(self.variants, key=lambda v: v.role is not Role.PRIMARY)

    def gate_for(self, name: str) -> GateConfig:
        """The promotion gates of variant `name`: the defaults with its overrides (no KL gate when
        `drift.teacher_forced` is off: nothing is scored)."""
        variant = self.variant(name)
        gate = self.gate.with_overrides(variant.gate if variant else None)
        return gate if self.drift.teacher_forced else gate.with_overrides(max_kl=None)

    def variant(self, name: str) -> VariantConfig | None:
        return next((v for v in self.variants if v.name == name), None)


def validate(cfg: Config) -> None:
    names = [v.name for v in cfg.variants]
    if len(set(names)) != len(names):
        raise ConfigError(f"variant names must be unique: {names}")
    primaries = [v.name for v in cfg.variants if v.role is Role.PRIMARY]
    if len(primaries) != 1:
        raise ConfigError(f"exactly one variant must have role primary, found {primaries or 'none'}")
    for v in cfg.variants:
        if not v.name or not v.name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigError(f"variant name {v.name!r}: use letters, digits, '-', '_' or '.'")
        for rate in ("sample_rate", "score_rate"):
            if not 0.0 <= getattr(v, rate) <= 1.0:
                raise ConfigError(f"variant {v.name}: {rate} must be in [0, 1], got {getattr(v, rate)}")
        if v.weight < 0:
            raise ConfigError(f"variant {v.name}: weight must be >= 0, got {v.weight}")
        if v.max_in_flight < 1 or v.timeout_s <= 0:
            raise ConfigError(f"variant {v.name}: max_in_flight must be >= 1 and timeout_s > 0")
        _validate_engine(v)
    if cfg.server.engine_start_concurrency < 0:
        raise ConfigError("server.engine_start_concurrency must be >= 0 (0 = one per CPU core)")
    if cfg.server.event_loop not in ("asyncio", "uvloop"):
        raise ConfigError(f"server.event_loop must be asyncio or uvloop, got {cfg.server.event_loop!r}")
    if cfg.primary.weight <= 0 and not any(v.weight > 0 for v in cfg.variants if v.role is Role.CANDIDATE):
        raise ConfigError("the primary and candidates have no traffic weight")
    if cfg.drift.top_k < 1 or any(cfg.drift.top_k > v.engine.max_logprobs for v in cfg.variants):
        raise ConfigError("drift.top_k must be >= 1 and <= every engine's max_logprobs")
    if bool(cfg.tls.cert_file) != bool(cfg.tls.key_file) or (
        cfg.tls.client_ca_file and not cfg.tls.cert_file
    ):
        raise ConfigError("tls: cert_file and key_file go together, and client_ca_file needs both")
    for v in cfg.variants:
        try:
            gate = cfg.gate_for(v.name)
        except ValueError as exc:
            raise ConfigError(f"variant {v.name}: gate: {exc}") from None
        if gate.kl_cap != cfg.gate.kl_cap:
            raise ConfigError(f"variant {v.name}: gate.kl_cap is set once, in the gate defaults")
        if gate.relative_to and gate.relative_to not in names:
            raise ConfigError(f"variant {v.name}: gate.relative_to names no variant: {gate.relative_to!r}")
        if gate.max_kl is not None and v.role is Role.SHADOW:
            _validate_scored(v, cfg.variant(gate.relative_to))


def _validate_scored(v: VariantConfig, twin: VariantConfig | None) -> None:
    """A shadow's KL gate needs teacher-forced scores of it (and of the twin it is judged against);
    without them its verdict would wait for samples forever."""
    for w in (v, twin):
        if w is not None and w.role is Role.SHADOW and w.score_rate <= 0:
            why = f"needs teacher-forced KL scores of {w.name}, and its score_rate is 0"
            raise ConfigError(f"variant {v.name}: gate.max_kl {why}: score some, or set max_kl: null")


def _validate_engine(v: VariantConfig) -> None:
    e = v.engine
    if e.url and not (e.url.startswith("http://") or e.url.startswith("https://")):
        raise ConfigError(f"variant {v.name}: engine.url must start with http:// or https://, got {e.url!r}")
    if min(e.connect_timeout_s, e.read_timeout_s) <= 0 or e.pool_size < 1:
        raise ConfigError(f"variant {v.name}: engine timeouts must be > 0 and pool_size >= 1")
    if not 0 <= e.nice <= 19:
        raise ConfigError(
            f"variant {v.name}: engine.nice must be in 0-19 (lower priority only), got {e.nice}"
        )


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Builds dataclass `cls` from plain YAML data; unknown keys and wrong types are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    kwargs = {key: _convert(hints[key], value, f"{where}.{key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except (ConfigError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _convert(tp: Any, value: Any, where: str) -> Any:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(args[0], value, where)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)  # type: ignore[arg-type]
    if typing.get_origin(tp) is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        return value
    if typing.get_origin(tp) is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not one of {[m.value for m in tp]}") from None
    if tp in (int, float, str, bool):
        ok = isinstance(value, tp) and not (tp is int and isinstance(value, bool))
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def load_config(path: str | Path) -> Config:
    """Loads and validates a YAML config file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from exc
    return from_dict(Config, data, where=p.name)


def add_flags(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """Adds one `--field-name` flag per scalar field of dataclass `cls` (default None = keep config)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if tp not in (int, float, str):
            continue
        flag = "--" + (prefix + f.name).replace("_", "-")
        parser.add_argument(flag, type=tp, default=None, help=f"{f.metadata.get('doc', '')} (config)")


def apply_flags(obj: Any, args: argparse.Namespace, prefix: str = "") -> None:
    """Overrides fields of `obj` with the flags `add_flags` made, where given."""
    for f in dataclasses.fields(obj):
        value = getattr(args, prefix + f.name, None)
        if value is not None:
            setattr(obj, f.name, value)
