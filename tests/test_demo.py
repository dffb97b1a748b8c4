"""The demo's pure helpers."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from serving.commands.demo import MIRRORED_PROMPTS, MIRRORED_REQUESTS
from serving.probes.facts import load_builtin, stratified

ROOT = Path(__file__).resolve().parents[1]


def test_stratified_takes_every_relation_evenly_in_file_order() -> None:
    facts = load_builtin("geo")
    picked = stratified(facts, 60)
    counts = Counter(f.relation for f in picked)
    assert len(picked) == 60 and len(counts) == 6 and set(counts.values()) == {10}
    capitals = [f for f in picked if f.relation == "capital"]
    assert capitals == [f for f in facts if f.relation == "capital"][:10]
    assert stratified(facts, 0) == facts


def test_demo_sends_distinct_mirrored_prompts() -> None:
    assert len(set(MIRRORED_PROMPTS[:MIRRORED_REQUESTS])) == MIRRORED_REQUESTS == 16


def test_library_output_goes_to_the_log_and_the_demo_lines_to_the_terminal(tmp_path: Path) -> None:
    """`_terminal_only` sends what libraries and child processes print to the log file, and the
    demo's own lines (print and the bars' stream) to the terminal; both fds are restored after."""
    log = tmp_path / "demo.log"
    code = f"""
import subprocess, sys, logging
from pathlib import Path
from serving.commands.demo import _terminal_only
logging.basicConfig(level=logging.INFO)
with _terminal_only(Path({str(log)!r})) as terminal:
    print("demo line")
    logging.getLogger("vllm").info("library log line")
    subprocess.run([sys.executable, "-c", "import sys; print('child out'); print('child err', file=sys.stderr)"])
    terminal.write("bar line\\n")
print("after")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.splitlines() == ["demo line", "bar line", "after"]
    assert done.stderr == ""
    logged = log.read_text()
    assert "library log line" in logged and "child out" in logged and "child err" in logged
    assert "demo line" not in logged
