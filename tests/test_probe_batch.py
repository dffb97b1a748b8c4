"""`driftgate probe` and its Python API on the real dense engine (in-process and through a gateway)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import unicodedata
import uuid
from pathlib import Path

import pytest

from serving.app import App
from serving.engines.base import Engine, SamplingSpec
from serving.probes.batch import probe_engines, run_config, write_outputs
from serving.probes.facts import Fact, dumps_probes, load_builtin, load_probe_set
from serving.probes.report import validate_report
from serving.probes.scoring import candidates_for
from tests.conftest import make_config

pytestmark = [pytest.mark.engine, pytest.mark.asyncio(loop_scope="session")]

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def small_facts() -> list[Fact]:
    """Six capitals and four facts of two other relations."""
    geo = load_builtin("geo")
    others = [f for f in geo if f.relation != "capital"]
    second = [f for f in others if f.relation == others[0].relation][:2]
    third = [f for f in others if f.relation not in {"capital", others[0].relation}][:2]
    return load_builtin("capitals-small")[:6] + second + third


@pytest.fixture
def probe_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.jsonl"
    path.write_text(dumps_probes(small_facts()))
    return path


# ----------------------------------------------------------------- an independent P@1 / P@k


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"^[\W_]+", "", text)
    text = re.sub(r"^(?:the|an|a)\b[\W_]*", "", text)
    return re.sub(r"\s+", " ", text).strip()


def regex_correct(text: str, fact: Fact) -> bool:
    said = _norm(text)
    return any(re.match(re.escape(_norm(answer)) + r"(?![^\W_]|-[^\W_])", said) for answer in fact.answers)


async def greedy_text(engine: Engine, prompt: str) -> str:
    out = []
    async for chunk in engine.generate(prompt, SamplingSpec(max_tokens=8), uuid.uuid4().hex):
        out.append(chunk.text)
    return "".join(out)


async def object_rank(engine: Engine, fact: Fact, pool: list[Fact]) -> int:
    """Rank of the object among the candidates, scoring the tokens of the joint text."""
    tok = engine.tokenize  # type: ignore[attr-defined]
    n_prompt = len(tok(fact.prompt))
    lls = {}
    for cand in candidates_for(fact, pool):
        ids = tok(fact.prompt + " " + cand)
        scores = await engine.score(ids, n_prompt, 1, uuid.uuid4().hex)
        lls[cand] = sum(pos[t] for pos, t in zip(scores, ids[n_prompt:], strict=True))
    return 1 + sum(1 for c, ll in lls.items() if c != fact.object and ll >= lls[fact.object])


async def test_probe_engines_agrees_with_an_independent_scorer(dense_engine: Engine) -> None:
    facts = small_facts()
    report = await probe_engines({"dense": dense_engine}, "dense", facts, k=3, pool=facts)
    validate_report(report)
    mine = [regex_correct(await greedy_text(dense_engine, f.prompt), f) for f in facts]
    assert 0 < sum(mine) < len(facts)  # the set discriminates
    entry = report["variants"]["dense"]
    assert entry["n"] == len(facts) and report["k"] == 3
    assert abs(entry["p_at_1"] - sum(mine) / len(facts)) <= 1 / len(facts) + 1e-9
    ranks = [await object_rank(dense_engine, f, facts) for f in facts]
    assert abs(entry["p_at_k"] - sum(r <= 3 for r in ranks) / len(facts)) <= 1 / len(facts) + 1e-9


async def test_in_process_run_writes_report_and_plots(dense_engine: Engine, tmp_path: Path) -> None:
    facts = small_facts()[:5]

    async def borrowed(variant: object) -> Engine:
        return dense_engine

    run = await run_config(make_config(), facts, k=2, factory=borrowed, shutdown=False)
    paths = write_outputs(run, facts, tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    validate_report(report)
    assert report["k"] == 2 and report["variants"]["dense"]["p_at_k"] is not None
    pngs = [p for p in paths if p.suffix == ".png"]
    assert {p.name for p in pngs} >= {"accuracy_by_relation.png", "p1_vs_cost.png"}
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in pngs)
    answers = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert [a["prompt"] for a in answers] == [f.prompt for f in facts]
    costs = run.costs()["dense"]
    assert costs["tokens_per_s"] > 0 and costs["bytes"] > 100e6  # bf16 135M: ~270 MB


# ----------------------------------------------------------------- the CLI


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "serving.commands.main",
        "probe",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_through_a_gateway(
    app: App, dense_engine: Engine, probe_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    code, stdout, stderr = await cli(
        "--config",
        "configs/dense.yaml",
        "--probes",
        str(probe_file),
        "--target",
        app.address,
        "--out",
        str(out),
    )
    assert code == 0, stderr
    assert "P@k not measured" in stdout and "dense*" in stdout
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    entry = report["variants"]["dense"]
    assert entry["p_at_k"] is None and "k" not in report
    facts = load_probe_set(str(probe_file))
    direct = await probe_engines({"dense": dense_engine}, "dense", facts, k=None)
    assert abs(entry["p_at_1"] - direct["variants"]["dense"]["p_at_1"]) <= 1 / len(facts) + 1e-9
    pngs = sorted(out.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == PNG_MAGIC for p in pngs)


async def test_cli_bad_probe_file_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    good = small_facts()[0].to_json()
    bad.write_text(f'{good}\n{{"relation": "capital", "subject": "X"\n{good.replace("[X]", "")}\n')
    code, stdout, stderr = await cli("--config", "configs/dense.yaml", "--probes", str(bad))
    assert code == 2 and stdout == ""
    assert f"{bad}:2: bad JSON" in stderr and f"{bad}:3:" in stderr
    assert "Traceback" not in stderr


async def test_cli_unreachable_gateway_is_a_message(tmp_path: Path, probe_file: Path) -> None:
    code, _, stderr = await cli(
        "--config", "configs/dense.yaml", "--probes", str(probe_file), "--target", "127.0.0.1:1",
        "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert code == 1
    assert "cannot reach the gateway at 127.0.0.1:1" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "r").exists()
