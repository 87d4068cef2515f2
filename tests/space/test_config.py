"""Config validation (the bad value is in the message) and the JSON round-trip."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable

import pytest

from space import PRESET_TRIALS, AugmentCfg, BlockCfg, InputCfg, ModelCfg, TrainCfg, TrialCfg

_B = (BlockCfg(8),)

# (constructor, fragments the message must contain)
BAD_CONFIGS: list[tuple[Callable[[], object], tuple[str, ...]]] = [
    (lambda: BlockCfg(0), ("channels", "got 0")),
    (lambda: BlockCfg(True), ("channels", "got True")),
    (lambda: BlockCfg(8, kernel_size=4), ("kernel_size must be odd", "got 4")),
    (lambda: BlockCfg(8, downsample="avgpool"), ("'avgpool'", "'stride'", "'maxpool'", "'none'")),
    (lambda: BlockCfg(8, batchnorm=1), ("batchnorm", "got 1")),  # type: ignore[arg-type]
    (lambda: BlockCfg(8, activation="tanh"), ("'tanh'", "'relu'", "'gelu'", "'silu'")),
    (lambda: ModelCfg(blocks=()), ("blocks", "got ()")),
    (lambda: ModelCfg(blocks=(8,)), ("blocks[0]", "got 8")),  # type: ignore[arg-type]
    (lambda: ModelCfg(blocks=_B, head_hidden=(64, 0)), ("head_hidden[1]", "got 0")),
    (lambda: ModelCfg(blocks=_B, head_dropout=1.0), ("head_dropout must be in [0.0, 1.0), got 1.0",)),
    (lambda: ModelCfg(blocks=_B, head_dropout=-0.1), ("got -0.1",)),
    (lambda: ModelCfg(blocks=_B, head_dropout="0.2"), ("head_dropout", "got '0.2'")),  # type: ignore[arg-type]
    (lambda: ModelCfg(blocks=_B, in_channels=0), ("in_channels", "got 0")),
    (lambda: ModelCfg(blocks=_B, num_classes=1), ("num_classes", "got 1")),
    (lambda: InputCfg(image_size=4), ("image_size", "got 4")),
    (lambda: InputCfg(color="cmyk"), ("'cmyk'", "'gray'", "'rgb'")),
    (lambda: InputCfg(resize="crop"), ("'crop'", "'stretch'", "'letterbox'")),
    (lambda: AugmentCfg(hflip_p=1.5), ("hflip_p", "got 1.5")),
    (lambda: AugmentCfg(rotate_deg=-1), ("rotate_deg", "got -1")),
    (lambda: AugmentCfg(crop_scale_min=0.0), ("crop_scale_min", "got 0.0")),
    (lambda: AugmentCfg(brightness=1.0), ("brightness", "got 1.0")),
    (lambda: AugmentCfg(contrast=math.nan), ("contrast", "got nan")),
    (lambda: TrainCfg(optimizer="rmsprop"), ("'rmsprop'", "'adam'", "'adamw'", "'sgd'")),
    (lambda: TrainCfg(lr=0), ("lr must be > 0", "got 0")),
    (lambda: TrainCfg(weight_decay=-1e-4), ("weight_decay", "got -0.0001")),
    (lambda: TrainCfg(batch_size=0), ("batch_size", "got 0")),
    (lambda: TrainCfg(schedule="step"), ("'step'", "'none'", "'cosine'")),
    (lambda: TrainCfg(label_smoothing=1.0), ("label_smoothing", "got 1.0")),
    (lambda: TrainCfg(class_weighting="sqrt"), ("'sqrt'", "'inverse'")),
    (lambda: TrainCfg(max_epochs=0), ("max_epochs", "got 0")),
    (lambda: TrialCfg(ModelCfg(_B), InputCfg(color="rgb"), AugmentCfg(), TrainCfg()),
     ("in_channels", "'rgb'", "got 1")),
    (lambda: TrialCfg(ModelCfg(_B), InputCfg(), None, TrainCfg()),  # type: ignore[arg-type]
     ("augment must be of type AugmentCfg", "got None")),
]


@pytest.mark.parametrize(("make", "fragments"), BAD_CONFIGS)
def test_invalid_value_raises_and_names_it(make: Callable[[], object], fragments: tuple[str, ...]) -> None:
    with pytest.raises(ValueError) as info:
        make()
    for fragment in fragments:
        assert fragment in str(info.value)


def test_configs_are_frozen_and_replace_revalidates() -> None:
    train = TrainCfg()
    with pytest.raises(dataclasses.FrozenInstanceError):
        train.lr = 0.1  # type: ignore[misc]
    assert dataclasses.replace(train, lr=0.1).lr == 0.1
    with pytest.raises(ValueError, match=re.escape("got -0.1")):
        dataclasses.replace(train, lr=-0.1)


def test_lists_become_tuples_and_numbers_become_floats() -> None:
    cfg = ModelCfg(blocks=[BlockCfg(8)], head_hidden=[32, 16], head_dropout=0)  # type: ignore[arg-type]
    assert cfg.blocks == (BlockCfg(8),) and cfg.head_hidden == (32, 16)
    assert isinstance(cfg.head_dropout, float)
    hash(cfg)  # usable as a dict key / in sets


@pytest.mark.parametrize("field", ["hflip_p", "rotate_deg", "crop_scale_min", "brightness", "contrast"])
def test_augment_enabled_by_any_field(field: str) -> None:
    assert not AugmentCfg().enabled
    value = 0.5 if field != "rotate_deg" else 10.0
    assert AugmentCfg(**{field: value}).enabled


def _rich_trial() -> TrialCfg:
    blocks = (BlockCfg(16, kernel_size=5, downsample="none", activation="gelu"),
              BlockCfg(32, downsample="maxpool", batchnorm=True))
    return TrialCfg(
        model=ModelCfg(blocks=blocks, head_hidden=(), in_channels=3, num_classes=4),
        input=InputCfg(image_size=96, color="rgb", resize="letterbox"),
        augment=AugmentCfg(hflip_p=0.5, rotate_deg=12.0, crop_scale_min=0.7, brightness=0.1, contrast=0.2),
        train=TrainCfg(optimizer="sgd", lr=0.03, weight_decay=1e-4, batch_size=8, schedule="cosine",
                       label_smoothing=0.1, class_weighting="inverse", max_epochs=7))


@pytest.mark.parametrize("cfg", [*PRESET_TRIALS.values(), _rich_trial()],
                         ids=[*PRESET_TRIALS, "rich"])
def test_trial_round_trips_through_json(cfg: TrialCfg) -> None:
    d = cfg.to_dict()
    assert isinstance(d["model"]["blocks"], list) and isinstance(d["model"]["head_hidden"], list)
    text = json.dumps(d)
    back = TrialCfg.from_dict(json.loads(text))
    assert back == cfg
    assert json.dumps(back.to_dict()) == text


def test_from_dict_fills_defaults_and_rejects_unknown_or_missing_keys() -> None:
    d = PRESET_TRIALS["net0"].to_dict()
    del d["train"]["max_epochs"]
    assert TrialCfg.from_dict(d).train.max_epochs == TrainCfg().max_epochs
    d["train"]["momentum"] = 0.9
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['momentum'\] in train; valid keys: optimizer"):
        TrialCfg.from_dict(d)
    d = PRESET_TRIALS["net0"].to_dict()
    del d["model"]["blocks"][0]["channels"]
    with pytest.raises(ValueError, match=re.escape("missing key(s) ['channels'] in model.blocks[0]")):
        TrialCfg.from_dict(d)
    with pytest.raises(ValueError, match="model must be a mapping"):
        TrialCfg.from_dict({**PRESET_TRIALS["net0"].to_dict(), "model": [1]})
