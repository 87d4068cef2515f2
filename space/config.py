"""Frozen configs that describe one trial: the model, its input, augmentation and training.

Every config holds only plain values and tuples, validates itself on construction (the bad
value is in the message) and is changed with :func:`dataclasses.replace`, never in place.
:meth:`TrialCfg.to_dict` / :meth:`TrialCfg.from_dict` round-trip through JSON, so a trial's
resolved config rebuilds its model without Optuna.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ACTIVATIONS",
    "CLASS_WEIGHTINGS",
    "COLORS",
    "DOWNSAMPLES",
    "OPTIMIZERS",
    "RESIZES",
    "SCHEDULES",
    "AugmentCfg",
    "BlockCfg",
    "InputCfg",
    "ModelCfg",
    "TrainCfg",
    "TrialCfg",
]

# The small tables the categorical strings are looked up in. The modules behind the names
# live next to their users (build.py: activations; search/: optimizers and schedules).
DOWNSAMPLES: tuple[str, ...] = ("stride", "maxpool", "none")
ACTIVATIONS: tuple[str, ...] = ("relu", "gelu", "silu")
COLORS: dict[str, int] = {"gray": 1, "rgb": 3}  # name -> number of image channels
RESIZES: tuple[str, ...] = ("stretch", "letterbox")
OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd")  # sgd = momentum 0.9, nesterov
SCHEDULES: tuple[str, ...] = ("none", "cosine")
CLASS_WEIGHTINGS: tuple[str, ...] = ("none", "inverse")


def _choice(name: str, value: object, valid: Sequence[str] | Mapping[str, Any]) -> None:
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, valid))}; got {value!r}")


def _int(name: str, value: object, *, low: int, high: int | None = None) -> None:
    # bool is an int subclass; True as a channel count is a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bounds}, got {value}")


def _float(obj: object, name: str, *, low: float, high: float, high_open: bool = False) -> None:
    """Checks `obj.name` is a finite number in [low, high] (or [low, high)) and stores it as float."""
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < low or value > high or (high_open and value == high):
        raise ValueError(f"{name} must be in [{low}, {high}{')' if high_open else ']'}, got {value}")
    object.__setattr__(obj, name, float(value))


def _bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")


@dataclass(frozen=True)
class BlockCfg:
    """One convolution block: conv -> [batchnorm] -> activation, downsampling by 2 or not.

    Attributes:
        channels: Output channels of the convolution.
        kernel_size: Odd kernel size; padding is ``kernel_size // 2``.
        downsample: ``"stride"`` (stride-2 conv), ``"maxpool"`` (stride-1 conv, then
            ``MaxPool2d(2)``) or ``"none"`` (keeps the spatial size).
        batchnorm: ``BatchNorm2d`` after the conv (the conv keeps its bias, as in the seed nets).
        activation: ``"relu"``, ``"gelu"`` or ``"silu"``.
    """

    channels: int
    kernel_size: int = 3
    downsample: str = "stride"
    batchnorm: bool = False
    activation: str = "relu"

    def __post_init__(self) -> None:
        _int("channels", self.channels, low=1)
        _int("kernel_size", self.kernel_size, low=1)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        _choice("downsample", self.downsample, DOWNSAMPLES)
        _bool("batchnorm", self.batchnorm)
        _choice("activation", self.activation, ACTIVATIONS)


@dataclass(frozen=True)
class ModelCfg:
    """A CNN: conv blocks, global average pool, MLP head.

    Attributes:
        blocks: The conv blocks, input to output (at least one).
        head_hidden: Hidden sizes of the MLP head (may be empty: one linear layer).
        head_dropout: Dropout after every hidden layer's activation, in [0, 1).
        in_channels: Image channels (1 gray, 3 rgb).
        num_classes: Number of output logits.
    """

    blocks: tuple[BlockCfg, ...]
    head_hidden: tuple[int, ...] = (64,)
    head_dropout: float = 0.0
    in_channels: int = 1
    num_classes: int = 3

    def __post_init__(self) -> None:
        # Lists are accepted and frozen into tuples so configs stay hashable.
        object.__setattr__(self, "blocks", tuple(self.blocks))
        object.__setattr__(self, "head_hidden", tuple(self.head_hidden))
        if not self.blocks:
            raise ValueError("blocks must hold at least one BlockCfg, got ()")
        for i, block in enumerate(self.blocks):
            if not isinstance(block, BlockCfg):
                raise ValueError(f"blocks[{i}] must be a BlockCfg, got {block!r}")
        for j, units in enumerate(self.head_hidden):
            _int(f"head_hidden[{j}]", units, low=1)
        _float(self, "head_dropout", low=0.0, high=1.0, high_open=True)
        _int("in_channels", self.in_channels, low=1)
        _int("num_classes", self.num_classes, low=2)


@dataclass(frozen=True)
class InputCfg:
    """How images are decoded for the model.

    Attributes:
        image_size: Side of the square input in pixels.
        color: ``"gray"`` (1 channel) or ``"rgb"`` (3 channels).
        resize: ``"stretch"`` (ignore aspect) or ``"letterbox"`` (keep aspect, pad).
    """

    image_size: int = 64
    color: str = "gray"
    resize: str = "stretch"

    def __post_init__(self) -> None:
        _int("image_size", self.image_size, low=8, high=4096)
        _choice("color", self.color, COLORS)
        _choice("resize", self.resize, RESIZES)

    @property
    def channels(self) -> int:
        """Number of image channels for :attr:`color`."""
        return COLORS[self.color]


@dataclass(frozen=True)
class AugmentCfg:
    """Per-sample random augmentation applied on the device (see :func:`space.augment_batch`).

    Attributes:
        hflip_p: Probability of a horizontal mirror.
        rotate_deg: Rotation angle drawn uniformly from [-rotate_deg, rotate_deg] degrees.
        crop_scale_min: Random-resized-crop area fraction drawn from [crop_scale_min, 1]
            (aspect kept); 1.0 = no crop.
        brightness: Brightness factor drawn from [1 - brightness, 1 + brightness].
        contrast: Contrast factor drawn from [1 - contrast, 1 + contrast].
    """

    hflip_p: float = 0.0
    rotate_deg: float = 0.0
    crop_scale_min: float = 1.0
    brightness: float = 0.0
    contrast: float = 0.0

    def __post_init__(self) -> None:
        _float(self, "hflip_p", low=0.0, high=1.0)
        _float(self, "rotate_deg", low=0.0, high=180.0)
        _float(self, "crop_scale_min", low=0.0, high=1.0)
        if self.crop_scale_min == 0.0:
            raise ValueError(f"crop_scale_min must be in (0, 1], got {self.crop_scale_min}")
        _float(self, "brightness", low=0.0, high=1.0, high_open=True)
        _float(self, "contrast", low=0.0, high=1.0, high_open=True)

    @property
    def enabled(self) -> bool:
        """True when any augmentation is on (all at their defaults = no augmentation)."""
        return self != AugmentCfg()


@dataclass(frozen=True)
class TrainCfg:
    """Optimisation settings.

    Attributes:
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9, Nesterov).
        lr: Initial learning rate.
        weight_decay: L2 (adam, sgd) or decoupled (adamw) weight decay; 0 = none.
        batch_size: Training batch size.
        schedule: ``"none"`` or ``"cosine"`` (annealed to 0 over ``max_epochs``).
        label_smoothing: Cross-entropy label smoothing in [0, 1).
        class_weighting: ``"none"`` or ``"inverse"`` (loss weights ~ 1 / class frequency).
        max_epochs: Epoch budget of one training run.
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 32
    schedule: str = "none"
    label_smoothing: float = 0.0
    class_weighting: str = "none"
    max_epochs: int = 20

    def __post_init__(self) -> None:
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _float(self, "lr", low=0.0, high=10.0)
        if self.lr == 0.0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        _float(self, "weight_decay", low=0.0, high=10.0)
        _int("batch_size", self.batch_size, low=1)
        _choice("schedule", self.schedule, SCHEDULES)
        _float(self, "label_smoothing", low=0.0, high=1.0, high_open=True)
        _choice("class_weighting", self.class_weighting, CLASS_WEIGHTINGS)
        _int("max_epochs", self.max_epochs, low=1)


@dataclass(frozen=True)
class TrialCfg:
    """Everything one trial trains: model, input, augmentation and training settings."""

    model: ModelCfg
    input: InputCfg
    augment: AugmentCfg
    train: TrainCfg

    def __post_init__(self) -> None:
        for name, cls in (("model", ModelCfg), ("input", InputCfg), ("augment", AugmentCfg),
                          ("train", TrainCfg)):
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"{name} must be of type {cls.__name__}, got {getattr(self, name)!r}")
        if self.model.in_channels != self.input.channels:
            raise ValueError(f"model.in_channels must match input.color {self.input.color!r} "
                             f"({self.input.channels}), got {self.model.in_channels}")

    def to_dict(self) -> dict[str, Any]:
        """Returns the config as JSON-able plain values (tuples become lists)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialCfg:
        """Rebuilds a config from :meth:`to_dict` output (e.g. after a JSON round-trip).

        Raises:
            ValueError: On an unknown or missing key, or an invalid value.
        """
        d = _fields(cls, d, "trial")
        model = _fields(ModelCfg, d["model"], "model")
        blocks = model.get("blocks")
        if not isinstance(blocks, Sequence) or isinstance(blocks, str):
            raise ValueError(f"model.blocks must be a list, got {blocks!r}")
        model["blocks"] = tuple(BlockCfg(**_fields(BlockCfg, b, f"model.blocks[{i}]"))
                                for i, b in enumerate(blocks))
        return cls(model=ModelCfg(**model), input=InputCfg(**_fields(InputCfg, d["input"], "input")),
                   augment=AugmentCfg(**_fields(AugmentCfg, d["augment"], "augment")),
                   train=TrainCfg(**_fields(TrainCfg, d["train"], "train")))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _fields(cls: type, d: object, where: str) -> dict[str, Any]:
    """Checks a mapping against the dataclass `cls`: no unknown keys, every required key present."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{where} must be a mapping, got {d!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; valid keys: {', '.join(fields)}")
    missing = [n for n, f in fields.items() if n not in d
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"missing key(s) {missing} in {where}")
    return dict(d)
