"""serving.engines.cpu: the host's feature flags and the bf16-without-AVX-512 warning."""

from __future__ import annotations

from pathlib import Path

from serving.engines.cpu import cpu_fields, cpu_flags, dtype_advice

AVX2_ONLY = (
    "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx fma avx2\n\n"
    "processor\t: 1\nmodel name\t: other\n"
)
AVX512 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"


def test_flags_of_the_first_processor(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(AVX2_ONLY)
    assert cpu_flags(info) == frozenset({"fpu", "sse4_2", "avx", "fma", "avx2"})
    assert cpu_flags(tmp_path / "missing") == frozenset()
    assert cpu_fields(info)["model name"] == "AMD EPYC"  # the first processor's block only
    assert cpu_fields(tmp_path / "missing") == {}


def test_bf16_without_avx512_is_warned_about_and_nothing_else(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(AVX2_ONLY)
    advice = dtype_advice("bfloat16", cpu_flags(info))
    assert advice is not None and "engine.dtype: float32" in advice
    assert dtype_advice("float32", cpu_flags(info)) is None
    info.write_text(AVX512)
    assert dtype_advice("bfloat16", cpu_flags(info)) is None
    assert dtype_advice("bfloat16", frozenset()) is None  # flags unknown: no guess
