"""Building engines from the config: the factory the composition root and the probe command use.

`check_checkpoints` runs first, over every variant, so a missing checkpoint, or one this CPU's
vLLM kernels cannot run, is a config error before any (slow) engine starts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from serving.config import VariantConfig
from serving.engines.base import Engine
from serving.engines.cpu import cpu_flags, kernel_gap
from serving.errors import ConfigError

EngineFactory = Callable[[VariantConfig], Awaitable[Engine]]


def check_checkpoints(variants: Iterable[VariantConfig], *, remote_too: bool = False) -> None:
    """Raises ConfigError naming every in-process variant whose checkpoint is missing or needs a
    kernel this CPU's vLLM build lacks (a remote variant's checkpoint is its server's business,
    unless `remote_too`)."""
    wanted = [v for v in variants if remote_too or not v.remote]
    missing = [v for v in wanted if not (Path(v.model_path) / "config.json").is_file()]
    problems = [f"variant {name}: {why}" for name, why in unservable(wanted).items()]
    if missing:
        where = "; ".join(f"variant {v.name}: no checkpoint at {v.model_path}" for v in missing)
        problems.append(
            f"{where} (run `driftgate model pull`, or `driftgate compress --all` for the compressed variants)"
        )
    if problems:
        raise ConfigError("; ".join(problems))


def unservable(variants: Iterable[VariantConfig], flags: frozenset[str] | None = None) -> dict[str, str]:
    """Name → reason for each variant whose checkpoint this CPU's vLLM build cannot run
    (`serving.engines.cpu.kernel_gap`; `flags` default to this host's)."""
    flags = cpu_flags() if flags is None else flags
    gaps = {v.name: kernel_gap(v.model_path, flags) for v in variants}
    return {name: why for name, why in gaps.items() if why is not None}


async def vllm_factory(variant: VariantConfig) -> Engine:
    """The variant's engine: a `RemoteEngine` on its vLLM server when `engine.url` is set (returned
    at once, not yet connected: the gateway's supervisor attaches it once its server answers),
    else an in-process vLLM engine (built off the event loop; see `VllmEngine.start`)."""
    if variant.remote:
        from serving.engines.remote import RemoteEngine

        e = variant.engine
        tokenizer = (
            variant.model_path if (Path(variant.model_path) / "tokenizer_config.json").is_file() else None
        )
        return RemoteEngine(
            variant.name,
            e.url,
            variant.served_name,
            connect_timeout_s=e.connect_timeout_s,
            read_timeout_s=e.read_timeout_s,
            pool_size=e.pool_size,
            tokenizer_path=tokenizer,
        )
    from serving.engines.vllm_engine import VllmEngine

    check_checkpoints([variant])
    return await VllmEngine.start(variant)
