"""Compression recipes: one parameter dataclass per method, loaded from YAML or built from a name.

A recipe YAML mirrors the Python API::

    description: GPTQ int4 weights ...
    method: gptq
    params:          # fields of GPTQParams; omitted fields take their defaults
      group_size: auto

Unknown keys (top level or in ``params``) are an error that names the key. This module is imported by
the serving side: it must not import torch or llm-compressor.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from compress.paths import RECIPES_DIR

GroupSize = int | Literal["auto"]
MAGNITUDE_NAME = re.compile(r"^magnitude-(global|local)-(attn|ffn|all)-(\d{1,2})$")
MAGNITUDE_PATTERN = "magnitude-{global,local}-{attn,ffn,all}-{1..99}"
_MASK_STRUCTURE = re.compile(r"^(\d+):(\d+)$")


class RecipeError(ValueError):
    """A recipe that does not exist or does not validate."""


def _default_ignore() -> list[str]:
    return ["lm_head"]


def _check_group_size(value: object) -> None:
    if value == "auto":
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value % 2:
        raise RecipeError(f"group_size must be 'auto' or a positive even integer, got {value!r}")


def _check_calibration(samples: object, seq_len: object) -> None:
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise RecipeError(f"num_calibration_samples must be a positive integer, got {samples!r}")
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 8:
        raise RecipeError(f"max_seq_length must be an integer >= 8, got {seq_len!r}")


def _check_ignore(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RecipeError(f"ignore must be a list of module names or 're:' patterns, got {value!r}")


def _check_fraction(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < float(value) < 1.0:
        raise RecipeError(f"{name} must be a number strictly between 0 and 1, got {value!r}")


def _check_int_weights(p: _IntWeightFields) -> None:
    """The checks GPTQ and AWQ share before the calibration ones: bit width and group size."""
    if p.bits not in (4, 8):
        raise RecipeError(f"bits must be 4 or 8, got {p.bits!r}")
    _check_group_size(p.group_size)


@dataclass
class CalibratedParams:
    """What the methods that run on calibration text share: modules left alone, calibration set size.

    These fields come last in a recipe's ``params`` (YAML, manifests). Dataclass fields follow the
    reversed MRO, so a method lists this base *first* and keeps its own fields in a second base:
    ``class GPTQParams(CalibratedParams, _GPTQFields)``.
    """

    ignore: list[str] = field(default_factory=_default_ignore)
    num_calibration_samples: int = 64
    max_seq_length: int = 256

    def __post_init__(self) -> None:
        _check_ignore(self.ignore)
        _check_calibration(self.num_calibration_samples, self.max_seq_length)


@dataclass
class _IntWeightFields:
    """Int weights with per-group scales (GPTQ, AWQ), checked by ``_check_int_weights``."""

    bits: int = 4
    group_size: GroupSize = "auto"
    symmetric: bool = True


@dataclass
class _GPTQFields(_IntWeightFields):
    block_size: int = 128
    dampening_frac: float = 0.01


@dataclass
class GPTQParams(CalibratedParams, _GPTQFields):
    """GPTQ (Frantar et al. 2022) int weights with per-group scales; activations stay 16-bit."""

    def __post_init__(self) -> None:
        _check_int_weights(self)
        super().__post_init__()


@dataclass
class _AWQFields(_IntWeightFields):
    symmetric: bool = False  # keeps its place after group_size, with AWQ's default (zero points)
    n_grid: int = 20
    duo_scaling: bool = True


@dataclass
class AWQParams(CalibratedParams, _AWQFields):
    """AWQ (Lin et al. 2023) activation-aware scaling, then int weights with per-group scales."""

    def __post_init__(self) -> None:
        _check_int_weights(self)
        super().__post_init__()
        if not isinstance(self.n_grid, int) or self.n_grid < 1:
            raise RecipeError(f"n_grid must be a positive integer, got {self.n_grid!r}")


@dataclass
class _SparseGPTFields:
    sparsity: float = 0.5
    mask_structure: str = "0:0"
    block_size: int = 128
    dampening_frac: float = 0.01


@dataclass
class SparseGPTParams(CalibratedParams, _SparseGPTFields):
    """SparseGPT (Frantar & Alistarh 2023) one-shot pruning; ``mask_structure`` "0:0" = unstructured."""

    def __post_init__(self) -> None:
        _check_fraction("sparsity", self.sparsity)
        match = _MASK_STRUCTURE.match(str(self.mask_structure))
        if not match or int(match[1]) > int(match[2]):
            raise RecipeError(f"mask_structure must look like 'N:M' with N <= M, got {self.mask_structure!r}")
        super().__post_init__()

    @property
    def structured(self) -> tuple[int, int] | None:
        """``(n, m)``: n of every m consecutive input weights are pruned; None when unstructured."""
        n, m = (int(x) for x in self.mask_structure.split(":"))
        return (n, m) if m > 0 else None


@dataclass
class Int8Params:
    """W8A8 int8: per-channel symmetric weights (round to nearest), dynamic per-token int8 activations."""

    ignore: list[str] = field(default_factory=_default_ignore)

    def __post_init__(self) -> None:
        _check_ignore(self.ignore)


@dataclass
class MagnitudeParams:
    """L1 magnitude pruning (Namburi et al. 2023, *The Cost of Compression*).

    ``selection``: "global" ranks all weights of the scope together (one threshold), "local" ranks
    each layer on its own (one threshold per layer). ``scope``: "attn" (q/k/v/o projections), "ffn"
    (gate/up/down projections) or "all" (every Linear except lm_head).
    """

    sparsity: float = 0.5
    selection: Literal["global", "local"] = "global"
    scope: Literal["attn", "ffn", "all"] = "all"

    def __post_init__(self) -> None:
        _check_fraction("sparsity", self.sparsity)
        if self.selection not in ("global", "local"):
            raise RecipeError(f"selection must be 'global' or 'local', got {self.selection!r}")
        if self.scope not in ("attn", "ffn", "all"):
            raise RecipeError(f"scope must be 'attn', 'ffn' or 'all', got {self.scope!r}")


MethodParams = GPTQParams | AWQParams | SparseGPTParams | Int8Params | MagnitudeParams

PARAMS: dict[str, type[MethodParams]] = {
    "gptq": GPTQParams,
    "awq": AWQParams,
    "sparsegpt": SparseGPTParams,
    "int8": Int8Params,
    "magnitude": MagnitudeParams,
}
PRUNING_METHODS = frozenset({"sparsegpt", "magnitude"})


@dataclass(frozen=True)
class Recipe:
    """A named method plus its parameters."""

    name: str
    method: str
    params: MethodParams
    description: str = ""

    @property
    def prunes(self) -> bool:
        return self.method in PRUNING_METHODS

    @property
    def uses_calibration(self) -> bool:
        """True for the methods that run on calibration text (their params are ``CalibratedParams``)."""
        return isinstance(self.params, CalibratedParams)

    @property
    def weight_bits(self) -> int:
        """Nominal bits of a stored weight of a compressed layer (16 for dense-stored pruning)."""
        if isinstance(self.params, GPTQParams | AWQParams):
            return self.params.bits
        return 8 if isinstance(self.params, Int8Params) else 16

    def to_dict(self) -> dict[str, Any]:
        """The JSON form recorded in manifests (and compared to decide whether a variant is current)."""
        return {"name": self.name, "method": self.method, "params": dataclasses.asdict(self.params)}


def params_from_dict(method: str, data: dict[str, Any] | None, where: str = "recipe") -> MethodParams:
    """Build the parameter dataclass of ``method``; unknown keys are an error naming the key."""
    if method not in PARAMS:
        raise RecipeError(f"{where}: unknown method {method!r} (known: {', '.join(PARAMS)})")
    cls = PARAMS[method]
    if data is not None and not isinstance(data, dict):
        raise RecipeError(f"{where}: params must be a mapping, got {type(data).__name__}")
    data = dict(data or {})
    allowed = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in allowed:
            raise RecipeError(
                f"{where}: unknown key {key!r} in params of method {method!r} (allowed: {', '.join(allowed)})"
            )
    try:
        return cls(**data)
    except RecipeError as exc:
        raise RecipeError(f"{where}: {exc}") from None


def recipe_from_dict(name: str, data: dict[str, Any]) -> Recipe:
    """Build a recipe from its YAML/JSON mapping (keys: method, params, description; also name)."""
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {name!r}: expected a mapping at the top level")
    for key in data:
        if key not in ("name", "method", "params", "description"):
            raise RecipeError(
                f"recipe {name!r}: unknown key {key!r} (allowed: name, method, params, description)"
            )
    if "method" not in data:
        raise RecipeError(f"recipe {name!r}: missing key 'method' (one of {', '.join(PARAMS)})")
    name = str(data.get("name", name))
    params = params_from_dict(str(data["method"]), data.get("params"), where=f"recipe {name!r}")
    return Recipe(
        name=name, method=str(data["method"]), params=params, description=str(data.get("description", ""))
    )


def magnitude_recipe(name: str) -> Recipe | None:
    """``magnitude-{global,local}-{attn,ffn,all}-{SPARSITY%}`` as a recipe, or None if ``name`` is not one."""
    match = MAGNITUDE_NAME.match(name)
    if not match or not 1 <= int(match[3]) <= 99:
        return None
    selection, scope, percent = match[1], match[2], int(match[3])
    params = MagnitudeParams(sparsity=percent / 100, selection=selection, scope=scope)  # type: ignore[arg-type]
    what = {"attn": "attention projections", "ffn": "FFN projections", "all": "all Linear layers but lm_head"}
    return Recipe(
        name=name,
        method="magnitude",
        params=params,
        description=f"L1 magnitude pruning to {percent}% of the {what[scope]}, {selection} threshold",
    )


def builtin_recipe_names() -> list[str]:
    """The names of the YAML recipes shipped in ``compress/recipes/``."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe_file(path: Path) -> Recipe:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc}") from None
    return recipe_from_dict(path.stem, data)


def load_recipe(spec: str | Path | Recipe) -> Recipe:
    """A recipe from a built-in name, a magnitude family name, or a path to a YAML file."""
    if isinstance(spec, Recipe):
        return spec
    text = str(spec)
    path = Path(text).expanduser()
    if text.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise RecipeError(f"recipe file not found: {path}")
        return load_recipe_file(path)
    builtin = RECIPES_DIR / f"{text}.yaml"
    if builtin.is_file():
        return load_recipe_file(builtin)
    magnitude = magnitude_recipe(text)
    if magnitude is not None:
        return magnitude
    known = ", ".join([*builtin_recipe_names(), MAGNITUDE_PATTERN])
    raise RecipeError(f"unknown recipe {text!r}; built-in recipes: {known}; or a path to a recipe YAML file")


def recipe_yaml(recipe: Recipe) -> str:
    """The YAML text of a recipe (what ``load_recipe_file`` reads back)."""
    data = {"description": recipe.description, "method": recipe.method, "params": recipe.to_dict()["params"]}
    return yaml.safe_dump(data, sort_keys=False)
