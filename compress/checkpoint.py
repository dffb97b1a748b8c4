"""Pure-Python facts about HF checkpoints on disk: safetensors headers, hashes and sizes (no torch)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path

DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    nbytes: int

    @property
    def numel(self) -> int:
        return prod(self.shape)


class CheckpointError(ValueError):
    """A model directory that is not a usable HF safetensors checkpoint."""


def safetensors_files(model_dir: Path) -> list[Path]:
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no *.safetensors files in {model_dir}")
    return files


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Tensor names, dtypes, shapes and byte sizes of one safetensors file, read from its header."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{path}: truncated safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > 100_000_000:
            raise CheckpointError(f"{path}: implausible safetensors header length {length}")
        header = json.loads(fh.read(length))
    out: dict[str, TensorInfo] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        out[name] = TensorInfo(dtype=meta["dtype"], shape=tuple(meta["shape"]), nbytes=end - begin)
    return out


def read_tensors(model_dir: Path) -> dict[str, TensorInfo]:
    """All tensors of a checkpoint (every shard)."""
    tensors: dict[str, TensorInfo] = {}
    for path in safetensors_files(model_dir):
        tensors.update(read_header(path))
    return tensors


def weights_bytes(model_dir: Path) -> int:
    """Bytes of the safetensors files of a checkpoint."""
    return sum(p.stat().st_size for p in safetensors_files(model_dir))


def dir_bytes(path: Path) -> int:
    """Bytes of every regular file under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def fp32_bytes(model_dir: Path) -> int:
    """Bytes the checkpoint's tensors would take in fp32 (tied tensors are stored, and counted, once)."""
    return 4 * sum(t.numel for t in read_tensors(model_dir).values())


def num_params(model_dir: Path) -> int:
    return sum(t.numel for t in read_tensors(model_dir).values())


def check_model_dir(model_dir: Path) -> None:
    """Raise CheckpointError unless ``model_dir`` looks like an HF causal-LM checkpoint."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError(f"model directory not found: {model_dir} (run `driftgate model pull`?)")
    if not (model_dir / "config.json").is_file():
        raise CheckpointError(f"{model_dir} has no config.json: not a Hugging Face model directory")
    safetensors_files(model_dir)


def layer_bits_per_weight(
    source: dict[str, TensorInfo], output: dict[str, TensorInfo], modules: list[str]
) -> float:
    """Stored bits per logical weight of ``modules`` (packed weights + scales + zero points + ...).

    The logical weight count of a module is the numel of ``<module>.weight`` in the dense source;
    every output tensor named ``<module>.<something>`` counts towards its stored bytes.
    """
    logical = sum(source[f"{m}.weight"].numel for m in modules)
    prefixes = tuple(f"{m}." for m in modules)
    stored = sum(t.nbytes for name, t in output.items() if name.startswith(prefixes))
    return 8 * stored / logical if logical else 0.0
