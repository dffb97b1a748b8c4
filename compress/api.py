"""Python API of the compress stage (serving side: no torch, no llm-compressor imports).

``compress(model_dir, recipe, out_dir)`` runs ``compress.worker`` in the compress venv and moves its
output into place only when it succeeded: the worker writes into a hidden temporary directory next to
``out_dir`` that is renamed at the end, or removed on any failure, so no half-written variant is left.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from compress.checkpoint import CheckpointError, check_model_dir
from compress.manifest import Manifest, read_manifest
from compress.paths import MANIFEST_NAME, REPO_ROOT, compress_python, variant_dir
from compress.recipes import Recipe, load_recipe
from serving.home import checkpoint_sha256, default_model_dir, set_offline, variants_dir

DEMO_RECIPES = (
    "gptq-w4a16",
    "awq-w4a16",
    "sparsegpt-50",
    "sparsegpt-2of4",
    "int8-w8a8",
    "magnitude-global-all-50",
)


class CompressError(RuntimeError):
    """A compression run that failed; no output directory was left behind."""


def worker_env(verbose: bool = False) -> dict[str, str]:
    """The environment of the worker subprocess: offline, the repo on PYTHONPATH, quiet logs."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    set_offline(env)
    # llm-compressor warns "No accelerator available!" at every step on CPU: show only errors by default.
    env.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "INFO" if verbose else "ERROR")
    return env


def _check_python(python: Path) -> None:
    if not python.exists():
        raise CompressError(
            f"compress environment not found: {python} does not exist; run `make setup-compress` "
            "(or point DRIFTGATE_COMPRESS_PYTHON at a Python with llm-compressor installed)"
        )


def _run_worker(recipe: Recipe, model_dir: Path, tmp_dir: Path, verbose: bool) -> None:
    python = compress_python()
    _check_python(python)
    error_file = tmp_dir.with_name(tmp_dir.name + ".error.json")
    payload = json.dumps({**recipe.to_dict(), "description": recipe.description})
    cmd = [str(python), "-m", "compress.worker", "--model", str(model_dir), "--recipe", payload]
    cmd += ["--out", str(tmp_dir), "--error-file", str(error_file)]
    try:
        proc = subprocess.run(cmd, env=worker_env(verbose), cwd=str(REPO_ROOT), check=False)
        if proc.returncode != 0:
            detail = f"exit status {proc.returncode}"
            if error_file.is_file():
                err = json.loads(error_file.read_text())
                detail = f"{err['type']}: {err['error']}"
            raise CompressError(f"compressing {model_dir} with recipe {recipe.name!r} failed: {detail}")
    finally:
        error_file.unlink(missing_ok=True)


def compress(
    model_dir: str | Path,
    recipe: str | Path | Recipe,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    verbose: bool = False,
) -> Manifest:
    """Compress ``model_dir`` with ``recipe`` (a name, a YAML path or a Recipe) into ``out_dir``.

    Raises RecipeError for an unknown or invalid recipe, CompressError for anything else; on error
    ``out_dir`` is left as it was. An existing ``out_dir`` is replaced only when ``overwrite``.
    """
    recipe = load_recipe(recipe)
    model_dir = Path(model_dir).expanduser().resolve()
    out_dir = Path(out_dir).expanduser().absolute()
    try:
        check_model_dir(model_dir)
    except CheckpointError as exc:
        raise CompressError(str(exc)) from None
    if out_dir.exists() and not overwrite:
        raise CompressError(f"output directory already exists: {out_dir} (pass --force to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        tmp_dir.chmod(0o755)
        _run_worker(recipe, model_dir, tmp_dir, verbose)
        if not (tmp_dir / MANIFEST_NAME).is_file():
            raise CompressError(f"worker finished without writing {MANIFEST_NAME}")
        manifest = Manifest.read(tmp_dir)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old)
            tmp_dir.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp_dir.rename(out_dir)
        return manifest
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)


def is_current(out_dir: Path, recipe: Recipe, source_sha256: str) -> bool:
    """True when ``out_dir`` holds a variant made by ``recipe`` from the source with that hash."""
    manifest = read_manifest(out_dir)
    return manifest is not None and manifest.matches(recipe.to_dict(), source_sha256)


def build_recipes(
    model_dir: str | Path | None,
    recipes: tuple[str, ...] | list[str],
    out_dir: str | Path | None = None,
    *,
    verbose: bool = False,
    log: bool = True,
) -> dict[str, Path]:
    """Compress ``model_dir`` with each recipe into ``<out_dir>/<recipe>/``, skipping current outputs.

    An output whose manifest matches its recipe and source model is kept; any other existing output is
    rebuilt. Every recipe is attempted; CompressError lists all failures at the end.
    """
    model = Path(model_dir).expanduser() if model_dir is not None else default_model_dir()
    parent = Path(out_dir).expanduser() if out_dir is not None else variants_dir()
    resolved = [load_recipe(name) for name in recipes]  # fail fast on unknown names
    try:
        check_model_dir(model)
    except CheckpointError as exc:
        raise CompressError(str(exc)) from None
    source_sha = checkpoint_sha256(model)
    built: dict[str, Path] = {}
    failures: list[str] = []
    for recipe in resolved:
        target = variant_dir(recipe.name, parent)
        if is_current(target, recipe, source_sha):
            if log:
                print(f"[driftgate] {recipe.name}: up to date in {target}", file=sys.stderr)
            built[recipe.name] = target
            continue
        try:
            compress(model, recipe, target, overwrite=True, verbose=verbose)
        except CompressError as exc:
            failures.append(str(exc))
            continue
        built[recipe.name] = target
    if failures:
        raise CompressError("; ".join(failures))
    return built


def build_demo_set(model_dir: str | Path | None = None, out_dir: str | Path | None = None) -> dict[str, Path]:
    """The demo variants (``DEMO_RECIPES``) of ``model_dir`` (default: the pulled default model).

    Outputs go to ``<out_dir>/<recipe>/`` (default ``$DRIFTGATE_HOME/variants``); current ones are kept.
    """
    return build_recipes(model_dir, DEMO_RECIPES, out_dir)
