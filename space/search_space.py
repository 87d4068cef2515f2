"""The search space: its bounds, the trial -> config function, and the config -> params inverse.

This is the only module of ``space`` that imports optuna, and :func:`suggest` is the only
caller of ``trial.suggest_*``. Parameter names are stable (renaming one breaks saved studies):

    n_blocks, conv{i}_channels (i < n_blocks), kernel_size, downsample, batchnorm, activation,
    head_layers, head{j}_units (j < head_layers), head_dropout (when head_layers > 0),
    augment, aug_hflip_p, aug_rotate_deg, aug_crop_scale_min, aug_jitter (when augment),
    image_size, color, resize, optimizer, lr, batch_size, use_weight_decay,
    weight_decay (when use_weight_decay), schedule, label_smoothing, class_weighting

A parameter fixed by the space (one choice, or low == high) is not suggested at all: its value
is used directly and it does not appear in the trial's params. By default kernel_size (3),
activation ("relu") and resize ("stretch") are fixed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import optuna

from space.config import (
    ACTIVATIONS,
    CLASS_WEIGHTINGS,
    COLORS,
    DOWNSAMPLES,
    OPTIMIZERS,
    RESIZES,
    SCHEDULES,
    AugmentCfg,
    BlockCfg,
    InputCfg,
    ModelCfg,
    TrainCfg,
    TrialCfg,
)

__all__ = ["SearchSpace", "suggest", "to_params"]


class _Spec(NamedTuple):
    kind: str  # "choices" (a tuple of values) or "range" (low, high)
    type: type  # element type: int, float, bool or str
    ok: Callable[[Any], bool]  # domain of one element
    domain: str  # the domain in words, for messages
    step: float | None = None  # float ranges: grid step
    log: bool = False  # float ranges: log-uniform


def _names(table: Any) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in table), "one of " + ", ".join(map(repr, table))


_POS = (lambda v: v >= 1), ">= 1"
_SPECS: dict[str, _Spec] = {
    "n_blocks": _Spec("range", int, *_POS),
    "channels": _Spec("choices", int, *_POS),
    "kernel_size": _Spec("choices", int, lambda v: v >= 1 and v % 2 == 1, "odd and >= 1"),
    "downsample": _Spec("choices", str, *_names(DOWNSAMPLES)),
    "batchnorm": _Spec("choices", bool, lambda v: True, "a bool"),
    "activation": _Spec("choices", str, *_names(ACTIVATIONS)),
    "head_layers": _Spec("range", int, lambda v: v >= 0, ">= 0"),
    "head_units": _Spec("choices", int, *_POS),
    "head_dropout": _Spec("range", float, lambda v: 0 <= v < 1, "in [0, 1)", step=0.05),
    "augment": _Spec("choices", bool, lambda v: True, "a bool"),
    "aug_hflip_p": _Spec("range", float, lambda v: 0 <= v <= 1, "in [0, 1]", step=0.05),
    "aug_rotate_deg": _Spec("range", float, lambda v: 0 <= v <= 180, "in [0, 180]", step=1.0),
    "aug_crop_scale_min": _Spec("range", float, lambda v: 0 < v <= 1, "in (0, 1]", step=0.05),
    "aug_jitter": _Spec("range", float, lambda v: 0 <= v < 1, "in [0, 1)", step=0.05),
    "image_size": _Spec("choices", int, lambda v: 8 <= v <= 4096, "in [8, 4096]"),
    "color": _Spec("choices", str, *_names(COLORS)),
    "resize": _Spec("choices", str, *_names(RESIZES)),
    "optimizer": _Spec("choices", str, *_names(OPTIMIZERS)),
    "lr": _Spec("range", float, lambda v: 0 < v <= 10, "in (0, 10]", log=True),
    "batch_size": _Spec("choices", int, *_POS),
    "use_weight_decay": _Spec("choices", bool, lambda v: True, "a bool"),
    "weight_decay": _Spec("range", float, lambda v: 0 < v <= 10, "in (0, 10]", log=True),
    "schedule": _Spec("choices", str, *_names(SCHEDULES)),
    "label_smoothing": _Spec("range", float, lambda v: 0 <= v < 1, "in [0, 1)", step=0.05),
    "class_weighting": _Spec("choices", str, *_names(CLASS_WEIGHTINGS)),
}


@dataclass(frozen=True)
class SearchSpace:
    """Bounds (``(low, high)``, inclusive) and choices (tuples) of every searched setting.

    The defaults contain every preset of ``space.PRESET_TRIALS`` as a point. Float ranges are
    searched on a fixed grid (step 0.05; 1 degree for ``aug_rotate_deg``) except ``lr`` and
    ``weight_decay``, which are log-uniform. ``channels`` and ``head_units`` are the choices of
    every ``conv{i}_channels`` / ``head{j}_units`` parameter; ``aug_jitter`` sets brightness and
    contrast alike. One choice or ``low == high`` fixes a setting (not suggested).
    """

    n_blocks: tuple[int, int] = (2, 7)
    channels: tuple[int, ...] = (8, 16, 32, 64, 128)
    kernel_size: tuple[int, ...] = (3,)
    downsample: tuple[str, ...] = ("stride", "maxpool")  # one choice for all blocks
    batchnorm: tuple[bool, ...] = (False, True)
    activation: tuple[str, ...] = ("relu",)
    head_layers: tuple[int, int] = (1, 2)
    head_units: tuple[int, ...] = (32, 64, 128, 256)
    head_dropout: tuple[float, float] = (0.0, 0.5)
    augment: tuple[bool, ...] = (False, True)
    aug_hflip_p: tuple[float, float] = (0.0, 0.5)
    aug_rotate_deg: tuple[float, float] = (0.0, 20.0)
    aug_crop_scale_min: tuple[float, float] = (0.6, 1.0)
    aug_jitter: tuple[float, float] = (0.0, 0.3)
    image_size: tuple[int, ...] = (64, 96, 128)
    color: tuple[str, ...] = ("gray", "rgb")
    resize: tuple[str, ...] = ("stretch",)
    optimizer: tuple[str, ...] = ("adam", "adamw", "sgd")
    lr: tuple[float, float] = (1e-4, 1e-2)
    batch_size: tuple[int, ...] = (16, 32, 64)
    use_weight_decay: tuple[bool, ...] = (False, True)
    weight_decay: tuple[float, float] = (1e-6, 1e-2)
    schedule: tuple[str, ...] = ("none", "cosine")
    label_smoothing: tuple[float, float] = (0.0, 0.2)
    class_weighting: tuple[str, ...] = ("none", "inverse")

    def __post_init__(self) -> None:
        for name, spec in _SPECS.items():
            object.__setattr__(self, name, _check(name, getattr(self, name), spec))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchSpace:
        """Builds a space from the study TOML's ``[space]`` table; missing keys keep defaults.

        Ranges are ``[low, high]`` lists and choices are lists; a bare value fixes the setting
        (``resize = "letterbox"`` is ``["letterbox"]``, ``lr = 1e-3`` is ``[1e-3, 1e-3]``).

        Raises:
            ValueError: On an unknown key (the valid ones are listed), a value of the wrong
                type (key, expected and got are named), or an empty range or choice list.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"[space] must be a table, got {d!r}")
        unknown = sorted(set(d) - set(_SPECS))
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r} in [space]; valid keys: {', '.join(_SPECS)}")
        kwargs: dict[str, Any] = {}
        for name, value in d.items():
            if isinstance(value, list | tuple):
                kwargs[name] = tuple(value)
            else:  # a bare value fixes the setting
                kwargs[name] = (value,) if _SPECS[name].kind == "choices" else (value, value)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, list[Any]]:
        """Returns the space as a TOML/JSON-able table (the inverse of :meth:`from_dict`)."""
        return {name: list(getattr(self, name)) for name in _SPECS}


def _expected(spec: _Spec) -> str:
    what = {int: "int", float: "number", bool: "bool", str: "string"}[spec.type]
    return f"a non-empty list of {what}s" if spec.kind == "choices" else f"[low, high] {what}s"


def _check(name: str, value: Any, spec: _Spec) -> tuple[Any, ...]:
    """Validates one field of a SearchSpace and returns it as a tuple of the element type."""
    if not isinstance(value, list | tuple):
        raise ValueError(f"space key {name!r}: expected {_expected(spec)}, got {value!r}")
    values = tuple(value)
    for v in values:
        number = spec.type is float and isinstance(v, int | float)
        if isinstance(v, bool) != (spec.type is bool) or not (number or isinstance(v, spec.type)):
            raise ValueError(f"space key {name!r}: expected {_expected(spec)}, got {type(v).__name__} {v!r}")
        if not spec.ok(v):
            raise ValueError(f"space key {name!r}: every value must be {spec.domain}, got {v!r}")
    if spec.type is float:
        values = tuple(float(v) for v in values)
    if spec.kind == "choices":
        if not values:
            raise ValueError(f"space key {name!r}: empty choice list")
        if len(set(values)) != len(values):
            raise ValueError(f"space key {name!r}: duplicate choices in {list(values)}")
        return values
    if len(values) != 2:
        raise ValueError(f"space key {name!r}: expected {_expected(spec)}, got {list(value)}")
    low, high = values
    if low > high:
        raise ValueError(f"space key {name!r}: empty range, low {low} > high {high}")
    if spec.step is not None and low < high and not _on_grid(high, low, spec.step):
        raise ValueError(f"space key {name!r}: high - low must be a multiple of the step {spec.step}, "
                         f"got [{low}, {high}]")
    return values


def _on_grid(value: float, low: float, step: float) -> bool:
    k = (value - low) / step
    return abs(k - round(k)) < 1e-6


# --- trial -> config --------------------------------------------------------------------------

def _choose(trial: optuna.trial.BaseTrial, name: str, choices: tuple[Any, ...]) -> Any:
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, choices)


def _int(trial: optuna.trial.BaseTrial, name: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    return low if low == high else trial.suggest_int(name, low, high)


def _float(trial: optuna.trial.BaseTrial, name: str, bounds: tuple[float, float], *, key: str) -> float:
    low, high = bounds
    if low == high:
        return low
    spec = _SPECS[key]
    value = trial.suggest_float(name, low, high, step=spec.step, log=spec.log)
    # Optuna's grid gives 0.30000000000000004; configs and reports want 0.3.
    return round(value, 10) if spec.step is not None else value


def suggest(trial: optuna.trial.BaseTrial, space: SearchSpace, *, max_epochs: int,
            num_classes: int = 3) -> TrialCfg:
    """Turns a trial into a config; the only caller of ``trial.suggest_*``.

    Args:
        trial: An Optuna trial (``Trial``, ``FrozenTrial`` or ``FixedTrial``).
        space: What may be suggested.
        max_epochs: Epoch budget written into ``TrainCfg.max_epochs`` (not searched).
        num_classes: Number of classes of the dataset (not searched).

    Returns:
        The resolved trial config.
    """
    s = space
    n_blocks = _int(trial, "n_blocks", s.n_blocks)
    channels = [_choose(trial, f"conv{i}_channels", s.channels) for i in range(n_blocks)]
    kernel_size = _choose(trial, "kernel_size", s.kernel_size)
    downsample = _choose(trial, "downsample", s.downsample)
    batchnorm = _choose(trial, "batchnorm", s.batchnorm)
    activation = _choose(trial, "activation", s.activation)
    head_layers = _int(trial, "head_layers", s.head_layers)
    units = tuple(_choose(trial, f"head{j}_units", s.head_units) for j in range(head_layers))
    # Dropout sits after hidden layers only; without one it would be a dead parameter.
    dropout = _float(trial, "head_dropout", s.head_dropout, key="head_dropout") if head_layers else 0.0

    augment = AugmentCfg()
    if _choose(trial, "augment", s.augment):
        hflip_p = _float(trial, "aug_hflip_p", s.aug_hflip_p, key="aug_hflip_p")
        rotate_deg = _float(trial, "aug_rotate_deg", s.aug_rotate_deg, key="aug_rotate_deg")
        crop = _float(trial, "aug_crop_scale_min", s.aug_crop_scale_min, key="aug_crop_scale_min")
        jitter = _float(trial, "aug_jitter", s.aug_jitter, key="aug_jitter")
        augment = AugmentCfg(hflip_p=hflip_p, rotate_deg=rotate_deg, crop_scale_min=crop,
                             brightness=jitter, contrast=jitter)

    inp = InputCfg(image_size=_choose(trial, "image_size", s.image_size),
                   color=_choose(trial, "color", s.color), resize=_choose(trial, "resize", s.resize))
    optimizer = _choose(trial, "optimizer", s.optimizer)
    lr = _float(trial, "lr", s.lr, key="lr")
    batch_size = _choose(trial, "batch_size", s.batch_size)
    weight_decay = 0.0
    if _choose(trial, "use_weight_decay", s.use_weight_decay):
        weight_decay = _float(trial, "weight_decay", s.weight_decay, key="weight_decay")
    train = TrainCfg(
        optimizer=optimizer, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
        schedule=_choose(trial, "schedule", s.schedule),
        label_smoothing=_float(trial, "label_smoothing", s.label_smoothing, key="label_smoothing"),
        class_weighting=_choose(trial, "class_weighting", s.class_weighting), max_epochs=max_epochs)

    blocks = tuple(BlockCfg(c, kernel_size=kernel_size, downsample=downsample, batchnorm=batchnorm,
                            activation=activation) for c in channels)
    model = ModelCfg(blocks=blocks, head_hidden=units, head_dropout=dropout,
                     in_channels=inp.channels, num_classes=num_classes)
    return TrialCfg(model=model, input=inp, augment=augment, train=train)


# --- config -> params -------------------------------------------------------------------------

def _not_a_point(name: str, value: Any, where: str) -> ValueError:
    return ValueError(f"config is not a point of the search space: {name}={value!r} {where}")


class _Params:
    """Collects the params dict of :func:`to_params`, checking every value against the space."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def choice(self, name: str, value: Any, choices: tuple[Any, ...]) -> None:
        # Compare with the type: True == 1, but a bool is not a channel count.
        if not any(type(value) is type(c) and value == c for c in choices):
            raise _not_a_point(name, value, f"is not one of {list(choices)}")
        if len(choices) > 1:
            self.params[name] = value

    def int(self, name: str, value: int, bounds: tuple[int, int]) -> None:
        low, high = bounds
        if not low <= value <= high:
            raise _not_a_point(name, value, f"is outside [{low}, {high}]")
        if low < high:
            self.params[name] = value

    def float(self, name: str, value: float, bounds: tuple[float, float], *, key: str) -> None:
        low, high = bounds
        spec = _SPECS[key]
        if low == high:
            if not math.isclose(value, low, rel_tol=1e-9, abs_tol=1e-12):
                raise _not_a_point(name, value, f"but the space fixes it to {low}")
            return
        slack = 1e-9 * max(abs(low), abs(high), 1e-12)
        if not low - slack <= value <= high + slack:
            raise _not_a_point(name, value, f"is outside [{low}, {high}]")
        if spec.step is not None:
            if not _on_grid(value, low, spec.step):
                raise _not_a_point(name, value, f"is not on the grid {low} + k * {spec.step}")
            value = round(low + round((value - low) / spec.step) * spec.step, 10)
        self.params[name] = value


def to_params(cfg: TrialCfg, space: SearchSpace) -> dict[str, Any]:
    """Returns the params that make :func:`suggest` rebuild `cfg` (for enqueue_trial/FixedTrial).

    ``suggest(FixedTrial(to_params(cfg, space)), space, max_epochs=cfg.train.max_epochs,
    num_classes=cfg.model.num_classes) == cfg`` for every point of the space.

    Args:
        cfg: A trial config, e.g. one of ``space.PRESET_TRIALS``.
        space: The space the params are for (fixed settings are left out).

    Returns:
        Parameter name -> value.

    Raises:
        ValueError: If `cfg` is not a point of `space`; the message names the parameter.
    """
    s, p, model = space, _Params(), cfg.model
    p.int("n_blocks", len(model.blocks), s.n_blocks)
    for i, block in enumerate(model.blocks):
        p.choice(f"conv{i}_channels", block.channels, s.channels)
    for name in ("kernel_size", "downsample", "batchnorm", "activation"):
        values = {getattr(b, name) for b in model.blocks}
        if len(values) > 1:  # the space has one choice for all blocks
            raise _not_a_point(name, sorted(values, key=str), "differs between blocks")
        p.choice(name, values.pop(), getattr(s, name))
    p.int("head_layers", len(model.head_hidden), s.head_layers)
    for j, units in enumerate(model.head_hidden):
        p.choice(f"head{j}_units", units, s.head_units)
    if model.head_hidden:
        p.float("head_dropout", model.head_dropout, s.head_dropout, key="head_dropout")
    elif model.head_dropout:
        raise _not_a_point("head_dropout", model.head_dropout, "without hidden layers (it has no effect)")

    aug = cfg.augment
    on = aug.enabled or False not in s.augment  # off-values are a point of an always-on space
    p.choice("augment", on, s.augment)
    if on:
        p.float("aug_hflip_p", aug.hflip_p, s.aug_hflip_p, key="aug_hflip_p")
        p.float("aug_rotate_deg", aug.rotate_deg, s.aug_rotate_deg, key="aug_rotate_deg")
        p.float("aug_crop_scale_min", aug.crop_scale_min, s.aug_crop_scale_min, key="aug_crop_scale_min")
        if aug.brightness != aug.contrast:
            raise _not_a_point("aug_jitter", (aug.brightness, aug.contrast),
                               "(brightness, contrast) differ; the space sets both to aug_jitter")
        p.float("aug_jitter", aug.brightness, s.aug_jitter, key="aug_jitter")

    p.choice("image_size", cfg.input.image_size, s.image_size)
    p.choice("color", cfg.input.color, s.color)
    p.choice("resize", cfg.input.resize, s.resize)
    train = cfg.train
    p.choice("optimizer", train.optimizer, s.optimizer)
    p.float("lr", train.lr, s.lr, key="lr")
    p.choice("batch_size", train.batch_size, s.batch_size)
    use_wd = train.weight_decay > 0 or False not in s.use_weight_decay
    p.choice("use_weight_decay", use_wd, s.use_weight_decay)
    if use_wd:
        p.float("weight_decay", train.weight_decay, s.weight_decay, key="weight_decay")
    p.choice("schedule", train.schedule, s.schedule)
    p.float("label_smoothing", train.label_smoothing, s.label_smoothing, key="label_smoothing")
    p.choice("class_weighting", train.class_weighting, s.class_weighting)
    return p.params
