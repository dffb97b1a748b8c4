"""Building engines from the config: the factory the composition root and the probe command use.

`check_checkpoints` runs first, over every variant, so a missing checkpoint is a config error
before any (slow) engine starts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from serving.config import VariantConfig
from serving.engines.base import Engine
from serving.errors import ConfigError

EngineFactory = Callable[[VariantConfig], Awaitable[Engine]]


def check_checkpoints(variants: Iterable[VariantConfig]) -> None:
    """Raises ConfigError naming every in-process variant whose checkpoint is missing."""
    missing = [v for v in variants if not (Path(v.model_path) / "config.json").is_file()]
    if missing:
        where = "; ".join(f"variant {v.name}: no checkpoint at {v.model_path}" for v in missing)
        raise ConfigError(
            f"{where} (run `driftgate model pull`, or `driftgate compress --all` for the compressed variants)"
        )


async def vllm_factory(variant: VariantConfig) -> Engine:
    """An in-process vLLM engine for `variant` (built off the event loop; see `VllmEngine.start`)."""
    from serving.engines.vllm_engine import VllmEngine

    check_checkpoints([variant])
    return await VllmEngine.start(variant)
