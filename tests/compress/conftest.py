"""Fixtures of the compress tests: a tiny random llama built offline, and the compress venv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# Widths 192 and 384: 128 does not divide 192, so "auto" must choose 64 (as on SmolLM2, hidden 576).
TINY: dict[str, Any] = {
    "hidden_size": 192,
    "intermediate_size": 384,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
# Layer 1's Linear weights are scaled up, so a global magnitude threshold prunes layer 0 far more.
LAYER1_SCALE = 4.0


def build_tokenizer(out: Path) -> int:
    """A small byte-level BPE tokenizer trained on the shipped calibration text (no hub)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from compress.paths import CALIBRATION_FILE

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(CALIBRATION_FILE)], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    fast.save_pretrained(str(out))
    return len(fast)


def build_tiny_llama(out: Path) -> Path:
    """A random 2-layer llama (bf16 safetensors, tied embeddings) plus its tokenizer in ``out``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = build_tokenizer(out)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        **TINY,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and ".layers.1." in name:
                module.weight.mul_(LAYER1_SCALE)
    model = model.bfloat16()
    model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def compress_venv() -> Path:
    """The compress venv's Python; compress tests are skipped without it (`make setup-compress`)."""
    from compress.paths import compress_python

    python = compress_python()
    if not python.exists():
        pytest.skip(f"compress venv missing ({python}): run `make setup-compress`")
    return python
