"""Traffic steps a canary controller drives: weights, sample rates, roles, promotion (pure).

Each function returns a new list of variants (copies; the old ones stay untouched, so requests
in flight keep the settings they started with) or raises InvalidArgument/NotFound with what is
wrong. The gateway swaps the new list in at once (`Gateway.set_variants`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from serving.config import Config, Role, VariantConfig
from serving.errors import ConfigError, InvalidArgument, NotFound


@dataclass(frozen=True)
class TrafficChange:
    """One admin change; None leaves a field as it is."""

    variant: str
    weight: float | None = None
    sample_rate: float | None = None
    role: Role | None = None
    score_rate: float | None = None


def _find(variants: list[VariantConfig], name: str) -> VariantConfig:
    found = next((v for v in variants if v.name == name), None)
    if found is None:
        raise NotFound(f"unknown variant {name!r}; known: {', '.join(v.name for v in variants)}")
    return found


def checked(config: Config, variants: list[VariantConfig]) -> list[VariantConfig]:
    """`variants` if they make a valid config with the rest of `config` (else InvalidArgument)."""
    try:
        dataclasses.replace(config, variants=variants)
    except ConfigError as exc:
        raise InvalidArgument(str(exc)) from None
    return variants


def changed(config: Config, change: TrafficChange) -> list[VariantConfig]:
    """The variants with `change` applied to one of them."""
    target = _find(config.variants, change.variant)
    if change.role is Role.PRIMARY or (change.role is not None and target.role is Role.PRIMARY):
        raise InvalidArgument("the primary changes only by Promote")
    updates = {k: v for k, v in dataclasses.asdict(change).items() if k != "variant" and v is not None}
    if not updates:
        raise InvalidArgument("nothing to change: give weight, sample_rate, score_rate or role")
    new = [dataclasses.replace(v, **updates) if v.name == change.variant else v for v in config.variants]
    return checked(config, new)


def promoted(config: Config, name: str) -> list[VariantConfig]:
    """`name` becomes the primary (keeping its weight, 1 if it had none); the old primary becomes a
    shadow mirrored and scored at rate 1, so the comparison goes on, now the other way round."""
    target = _find(config.variants, name)
    if target.role is Role.PRIMARY:
        raise InvalidArgument(f"{name} is already the primary")
    old = config.primary.name

    def step(v: VariantConfig) -> VariantConfig:
        if v.name == name:
            return dataclasses.replace(v, role=Role.PRIMARY, weight=v.weight if v.weight > 0 else 1.0)
        if v.name == old:
            return dataclasses.replace(v, role=Role.SHADOW, sample_rate=1.0, score_rate=1.0)
        return v

    return checked(config, [step(v) for v in config.variants])


def reloaded(config: Config, new: Config) -> list[VariantConfig]:
    """The traffic settings of `new` (roles, weights, sample and score rates, mirroring bounds) on the running
    variants; the set of variants and their models/engines cannot change without a restart."""
    running = {v.name: v for v in config.variants}
    wanted = {v.name: v for v in new.variants}
    if set(running) != set(wanted):
        raise InvalidArgument(f"reload cannot add or remove variants ({sorted(running)} -> {sorted(wanted)})")
    moved = [
        n for n, v in wanted.items() if (v.model_path, v.engine) != (running[n].model_path, running[n].engine)
    ]
    if moved:
        raise InvalidArgument(f"reload cannot change the model or engine of {moved}: restart instead")
    fields = ("role", "weight", "sample_rate", "score_rate", "max_in_flight", "timeout_s", "gate")
    variants = [
        dataclasses.replace(v, **{f: getattr(wanted[v.name], f) for f in fields}) for v in config.variants
    ]
    try:
        return checked(config, variants)
    except InvalidArgument as exc:
        if (new.gate, new.drift) == (config.gate, config.drift):
            raise
        raise InvalidArgument(
            f"{exc.message} (checked against the running gate defaults and drift settings: a reload does not "
            "change those, restart to apply them)"
        ) from None
