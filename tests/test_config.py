"""Config loading: defaults, YAML, unknown keys, validation, CLI flags built from the same types."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from serving.config import Config, Role, ServerConfig, VariantConfig, add_flags, apply_flags, load_config
from serving.errors import ConfigError, InvalidArgument
from serving.traffic import promoted, reloaded

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_load() -> None:
    dense = load_config(ROOT / "configs/dense.yaml")
    assert [v.name for v in dense.variants] == ["dense"] and dense.primary.role is Role.PRIMARY
    demo = load_config(ROOT / "configs/demo.yaml")
    names = {v.name for v in demo.variants}
    assert {"dense", "gptq-w4a16", "awq-w4a16", "sparsegpt-50", "sparsegpt-2of4", "int8-w8a8"} <= names
    assert "magnitude-global-all-50" in names
    assert all(v.role is Role.SHADOW for v in demo.variants if v.name != "dense")


def test_defaults_and_home_expansion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRIFTGATE_HOME", str(tmp_path))
    cfg = Config()
    assert cfg.primary.model_path == str(tmp_path / "models/smollm2-135m-instruct")
    assert cfg.primary.engine.dtype == "auto" and cfg.server.grpc_port == 50051


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("serverr: {}", "unknown key(s) ['serverr']"),
        ("server: {grpc_prt: 1}", "config.yaml.server: unknown key(s) ['grpc_prt']"),
        ("variants: [{name: a, engine: {cores: '0'}}]", "unknown key(s) ['cores']"),
        ("server: {grpc_port: '80'}", "expected int"),
        ("variants: [{name: a, role: boss}]", "'boss' is not one of"),
        ("variants: [{name: a, role: shadow}]", "exactly one variant must have role primary"),
        ("variants: [{name: a}, {name: a, role: shadow}]", "unique"),
        ("variants: [{name: a}, {name: b, role: shadow, sample_rate: 1.5}]", "sample_rate"),
        ("variants: [{name: a}, {name: b, role: shadow, score_rate: -0.5}]", "score_rate"),
        (
            "variants: [{name: a}, {name: b, role: shadow, score_rate: 0}]",
            "variant b: gate.max_kl needs teacher-forced KL scores of b, and its score_rate is 0",
        ),
        (
            "variants: [{name: a}, {name: t, role: shadow, score_rate: 0, gate: {max_kl: null}},"
            " {name: c, role: shadow, gate: {relative_to: t}}]",
            "variant c: gate.max_kl needs teacher-forced KL scores of t",
        ),
        ("server: {event_loop: trio}", "server.event_loop must be asyncio or uvloop"),
        ("variants: [{name: a, engine: {nice: 20}}]", "variant a: engine.nice must be in 0-19"),
        ("variants: [{name: a, engine: {nice: -5}}]", "variant a: engine.nice must be in 0-19"),
    ],
)
def test_bad_configs_are_rejected_with_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text).rename(tmp_path / "config.yaml"))
    assert fragment in str(info.value)


def test_a_shadow_compared_on_text_only_turns_its_kl_gate_off(tmp_path: Path) -> None:
    # the primary is never judged: its relative_to an unscored twin is harmless
    text = (
        "variants: [{name: a, gate: {relative_to: b}},"
        " {name: b, role: shadow, score_rate: 0, gate: {max_kl: null}}]"
    )
    cfg = load_config(write(tmp_path, text).rename(tmp_path / "config.yaml"))
    assert cfg.variants[1].score_rate == 0.0 and cfg.gate_for("b").max_kl is None


def test_no_teacher_forced_scoring_turns_every_kl_gate_off(tmp_path: Path) -> None:
    text = (
        "drift: {teacher_forced: false}\nvariants: [{name: a}, {name: b, role: shadow, gate: {max_kl: 0.2}}]"
    )
    cfg = load_config(write(tmp_path, text).rename(tmp_path / "config.yaml"))
    assert cfg.gate_for("a").max_kl is None and cfg.gate_for("b").max_kl is None
    assert cfg.gate.max_kl == 0.1  # the defaults as written; only the judged gates drop KL
    old = cfg.primary.name
    cfg.variants = promoted(cfg, "b")  # the old primary becomes a shadow with no KL to wait for
    assert cfg.variant(old) is not None and cfg.gate_for(old).max_kl is None


def test_cli_flags_come_from_the_dataclass() -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser, ServerConfig)
    args = parser.parse_args(["--grpc-port", "0", "--metrics-port", "9999"])
    cfg = Config()
    apply_flags(cfg.server, args)
    assert (cfg.server.grpc_port, cfg.server.metrics_port, cfg.server.host) == (0, 9999, "127.0.0.1")


async def test_serving_a_missing_checkpoint_is_a_config_error(tmp_path: Path) -> None:
    from serving.app import start_app

    cfg = Config(
        server=ServerConfig(grpc_port=0, metrics_port=-1, http_port=-1),
        variants=[VariantConfig(name="dense", model=str(tmp_path / "nowhere"))],
    )
    with pytest.raises(ConfigError, match="variant dense: no checkpoint at"):
        await start_app(cfg)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.primary.name == "dense"


def test_a_reload_that_needs_new_gate_defaults_says_they_need_a_restart(tmp_path: Path) -> None:
    running = load_config(
        write(tmp_path, "variants: [{name: a}, {name: b, role: shadow}]").rename(tmp_path / "a.yaml")
    )
    unscored = "variants: [{name: a}, {name: b, role: shadow, score_rate: 0}]"
    # valid as a file (its defaults have no KL gate), not on the running defaults, which a reload keeps
    new = load_config(write(tmp_path, "gate: {max_kl: null}\n" + unscored).rename(tmp_path / "b.yaml"))
    with pytest.raises(InvalidArgument, match=r"score_rate is 0.*restart to apply them"):
        reloaded(running, new)
    same_defaults = "variants: [{name: a}, {name: b, role: shadow, score_rate: 0.5}]"
    new = load_config(write(tmp_path, same_defaults).rename(tmp_path / "c.yaml"))
    assert [v.score_rate for v in reloaded(running, new)] == [1.0, 0.5]
