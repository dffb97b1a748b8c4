"""The enumerated settings of a vLLM CPU engine (`serving.config.EngineConfig`), re-exported by
`serving.config`."""

from __future__ import annotations

from enum import StrEnum


class Preload(StrEnum):
    """Libraries preloaded into a vLLM engine's processes (see `serving.engines.preload`)."""

    AUTO = "auto"
    NONE = "none"
    TCMALLOC = "tcmalloc"
    TCMALLOC_IOMP = "tcmalloc+iomp"


class Executor(StrEnum):
    """Where a vLLM CPU engine runs its model (see `serving.engines.vllm_plugin`)."""

    UNI = "uni"
    MP = "mp"


class FusedKernels(StrEnum):
    """Threads of the element-wise kernels inductor fuses for a vLLM CPU engine (see
    `serving.engines.vllm_plugin`)."""

    PARALLEL = "parallel"
    SERIAL = "serial"
