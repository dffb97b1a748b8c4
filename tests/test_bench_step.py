"""The `step` suite's pure parts: py-spy stacks of a vLLM worker sorted into the parts of a decode
step, on stacks shaped like the ones a real profile of this box's worker gave."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.cpu_use import ROLES
from bench.load import Sample
from bench.profile import stacks
from bench.step import (
    PARTS,
    generated_sources,
    model_thread_stacks,
    step_lines,
    step_part,
    step_parts,
    tpot_ms,
)

RUNNER = "WorkerProc.worker_busy_loop (vllm/v1/executor/multiproc_executor.py:1041)"
MODEL = f"{RUNNER};GPUModelRunner.execute_model (vllm/v1/worker/gpu_model_runner.py:4207)"
GRAPH = f"{MODEL};LlamaModel.forward (vllm/model_executor/models/llama.py:406);CompiledFxGraph.__call__ (torch/_inductor/output_code.py:763)"
GENERATED = "cxa4tgj7sc7ctrxvky5djtdj7fdqsitz7rcunv5jgqx3dfh6hno4.py"
SOURCE = [
    "def call(self, args):",
    "        torch.ops._C.onednn_mm.default(buf104, buf107, None, arg32_1)",
    "        torch.ops.vllm.unified_attention_with_output.default(buf1, buf2, buf3)",
    "        torch.ops.vllm.unified_kv_cache_update.default(buf4, buf5)",
    "        cpp_fused_mul_onednn_mm_silu_slice_3(buf6, buf7)",
    "        del buf757",
]


def _at(line: int) -> str:
    return (
        f"{GRAPH};Runner.call ({GENERATED}:{line});OpOverload.__call__ (torch/_ops.py:875);0x7fd3fd1bf20f (?)"
    )


RAW = "\n".join(
    [
        f"{_at(2)} 50",
        f"{_at(3)} 10",
        f"{_at(4)} 5",
        f"{_at(5)} 5",
        f"{_at(6)} 2",
        f"{MODEL};LlamaForCausalLM.compute_logits (vllm/model_executor/models/llama.py:560);onednn_mm (vllm/_custom_ops.py:3758) 12",
        f"{MODEL};GPUModelRunner._prepare_inputs (vllm/v1/worker/gpu_model_runner.py:1500) 3",
        f"{RUNNER};MessageQueue.dequeue (shm_broadcast.py:971);MessageQueue.acquire_read (shm_broadcast.py:864);sched_yield (libc.so.6) 9",
        "0x7fd4dbe4524a (libc.so.6);read (libc.so.6) 4",
        "not a stack line",
    ]
)


def test_each_sample_lands_in_its_part_of_the_step() -> None:
    parts = step_parts(RAW, {GENERATED: SOURCE})
    assert set(parts) == set(PARTS)
    assert sum(parts.values()) == pytest.approx(1.0)
    total = 100
    assert parts["matmul (weights)"] == pytest.approx(50 / total)
    assert parts["attention"] == pytest.approx(10 / total)
    assert parts["KV-cache write"] == pytest.approx(5 / total)
    assert parts["fused element-wise (inductor)"] == pytest.approx(5 / total)
    assert parts["compiled model, other"] == pytest.approx(2 / total)
    assert parts["LM head (compute_logits)"] == pytest.approx(12 / total)
    assert parts["model runner, other"] == pytest.approx(3 / total)
    assert parts["waiting for the next step"] == pytest.approx(9 / total)
    assert parts["other"] == pytest.approx(4 / total)


def test_a_graph_line_whose_source_was_not_found_is_still_the_compiled_model() -> None:
    assert step_part(_at(2).split(";"), {}) == "compiled model, other"
    assert step_parts("", {}) == {}


def test_generated_sources_are_found_by_name_under_the_cache(tmp_path: Path) -> None:
    deep = tmp_path / "vllm" / "torch_aot_compile" / "abc" / "inductor_cache" / "xa"
    deep.mkdir(parents=True)
    (deep / GENERATED).write_text("\n".join(SOURCE))
    found = generated_sources(RAW, [tmp_path / "missing", tmp_path])
    assert found == {GENERATED: SOURCE}
    assert step_parts(RAW, found)["attention"] == pytest.approx(0.1)


def test_tpot_is_the_median_time_per_token_after_the_first() -> None:
    samples = [Sample(1.1, 0.1, 101), Sample(2.1, 0.1, 101), Sample(3.1, 0.1, 101), Sample(9.0, 0.1, 1)]
    assert tpot_ms(samples) == pytest.approx(20.0)  # (2.1 - 0.1) / 100 s; one-token answers skipped
    assert math.isnan(tpot_ms([Sample(1.0, 0.1, 50, ok=False)]))  # no successful answer


def test_the_report_survives_failed_requests_and_empty_profiles() -> None:
    result = {
        "tpot_ms": {"0-1": [20.0, math.nan, 22.0], "1": [math.nan]},
        "profiles": {"0-1": {"parts": {}, "samples": 0}, "1": {"parts": step_parts(RAW, {})}},
    }
    text = "\n".join(step_lines(result, None))
    assert "| 0-1 | 21.0 [20.0–22.0] | 47.6 |" in text  # the NaN left out of median, min and max
    assert "| 1 |" not in text  # no successful request: no row
    assert "part of the step" not in text  # neither profile can be shown


def test_raw_lines_that_are_not_stacks_are_skipped() -> None:
    assert stacks("a;b 3\nnot a stack line\n\nc 2") == [(["a", "b"], 3), (["c"], 2)]


def test_the_report_gives_ms_per_token_for_each_part() -> None:
    parts = step_parts(RAW, {GENERATED: SOURCE})
    result = {
        "tpot_ms": {"0-1": [20.0, 22.0, 21.0], "1": [25.0, 26.0, 24.0]},
        "profiles": {"0-1": {"parts": parts, "samples": 100}, "1": {"error": "py-spy is not available"}},
    }
    text = "\n".join(step_lines(result, {"roofline_tok_s": 100.0}))
    assert "| 0-1 | 21.0 [20.0–22.0] | 47.6 | 0.48 |" in text
    assert "| 1 | 25.0 [24.0–26.0] | 40.0 | 0.40 |" in text
    assert "| matmul (weights) | 50.0%, 10.5 |" in text  # half of 21 ms
    assert "engine 1: py-spy is not available" in text
    assert "cores used, by thread" not in text  # a result from before the cores were recorded


def test_the_report_gives_the_cores_each_role_used_as_a_median_over_repeats() -> None:
    cells = [
        {ROLES[0]: 0.9, ROLES[4]: 0.02},
        {ROLES[0]: 1.0, ROLES[4]: 0.04},
        {ROLES[0]: 0.95, ROLES[4]: 0.03},
    ]
    result = {"tpot_ms": {"0-1": [20.0, 22.0, 21.0]}, "profiles": {}, "cores_used": {"0-1": cells}}
    text = "\n".join(step_lines(result, None))
    assert "| cores used, by thread | 0-1 |" in text
    assert f"| {ROLES[0]} | 0.950 |" in text
    assert f"| {ROLES[4]} | 0.030 |" in text
    assert "| all | 0.980 |" in text


def test_with_executor_uni_the_scheduling_between_steps_is_its_own_part() -> None:
    core = "EngineCoreProc.run_busy_loop (vllm/v1/engine/core.py:1210)"
    scheduling = [core, "EngineCore.step (vllm/v1/engine/core.py:480)", "Scheduler.schedule (sched.py:300)"]
    in_model = [core, *MODEL.split(";")[1:], "LlamaForCausalLM.compute_logits (llama.py:560)"]
    assert step_part(scheduling, {}) == "engine core: scheduling, outputs"
    assert step_part(in_model, {}) == "LM head (compute_logits)"  # the model's own parts come first


def test_only_the_threads_that_ran_the_model_count() -> None:
    """With executor `uni` the model runs in the engine core, whose socket threads are sampled too."""
    main, sockets = "thread (0x7F01)", "thread (0x7F02)"
    raw = "\n".join(
        [
            *(f"{main};{line}" for line in RAW.splitlines()),
            f"{sockets};0x7f48d57278ec (libpython3.11.so);thread_run (libpython3.11.so);poll (libc.so.6) 400",
        ]
    )
    assert step_parts(raw, {GENERATED: SOURCE}) == step_parts(RAW, {GENERATED: SOURCE})
    assert model_thread_stacks(RAW) == stacks(RAW)  # recorded without thread frames: every stack
