"""The search space: presets are points, suggest <-> to_params round-trips, TOML validation."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import FixedTrial

from space import PRESET_TRIALS, BlockCfg, TrialCfg, build_cnn, count_params
from space.search_space import SearchSpace, suggest, to_params

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = SearchSpace()


def _sampled(space: SearchSpace, n: int, *, seed: int) -> list[tuple[dict[str, Any], TrialCfg]]:
    """(trial params, config) of `n` random trials of `space`."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        cfg = suggest(trial, space, max_epochs=5)
        study.tell(trial, 0.0)
        out.append((trial.params, cfg))
    return out


def _round_trip(cfg: TrialCfg, space: SearchSpace) -> TrialCfg:
    return suggest(FixedTrial(to_params(cfg, space)), space, max_epochs=cfg.train.max_epochs,
                   num_classes=cfg.model.num_classes)


@pytest.mark.parametrize("name", list(PRESET_TRIALS))
def test_every_preset_is_a_point_of_the_default_space(name: str) -> None:
    cfg = PRESET_TRIALS[name]
    assert _round_trip(cfg, SPACE) == cfg


def test_preset_params_use_the_stable_names() -> None:
    assert to_params(PRESET_TRIALS["net6"], SPACE) == {
        "n_blocks": 4, "conv0_channels": 8, "conv1_channels": 16, "conv2_channels": 32, "conv3_channels": 64,
        "downsample": "maxpool", "batchnorm": True, "head_layers": 1, "head0_units": 128, "head_dropout": 0.2,
        "augment": True, "aug_hflip_p": 0.3, "aug_rotate_deg": 15.0, "aug_crop_scale_min": 1.0,
        "aug_jitter": 0.0, "image_size": 64, "color": "gray", "optimizer": "adam", "lr": 5e-4,
        "batch_size": 32, "use_weight_decay": False, "schedule": "none", "label_smoothing": 0.0,
        "class_weighting": "none",
    }


def test_presets_can_be_enqueued_into_a_study() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for cfg in PRESET_TRIALS.values():
        study.enqueue_trial(to_params(cfg, SPACE))
    for cfg in PRESET_TRIALS.values():
        trial = study.ask()
        assert suggest(trial, SPACE, max_epochs=cfg.train.max_epochs) == cfg
        study.tell(trial, 0.0)


def test_sampled_configs_round_trip_and_params_are_exactly_the_applicable_ones() -> None:
    for params, cfg in _sampled(SPACE, 60, seed=0):
        back = to_params(cfg, SPACE)
        assert back.keys() == params.keys()  # conditional params appear exactly when they apply
        for name, value in params.items():
            assert back[name] == value or math.isclose(back[name], value, rel_tol=1e-9), name
        assert _round_trip(cfg, SPACE) == cfg
        n_blocks, head_layers = params["n_blocks"], params["head_layers"]
        assert {k for k in params if k.startswith("conv")} == {f"conv{i}_channels" for i in range(n_blocks)}
        assert {k for k in params if k.endswith("_units")} == {f"head{j}_units" for j in range(head_layers)}
        assert params["augment"] == any(k.startswith("aug_") for k in params)
        assert params["use_weight_decay"] == ("weight_decay" in params)
        assert not {"kernel_size", "activation", "resize"} & params.keys()  # fixed by default
        assert cfg.model.in_channels == (1 if cfg.input.color == "gray" else 3)


def test_stepped_floats_are_clean_grid_values() -> None:
    for _, cfg in _sampled(SPACE, 40, seed=1):
        for value in (cfg.model.head_dropout, cfg.augment.hflip_p, cfg.augment.crop_scale_min,
                      cfg.augment.brightness, cfg.train.label_smoothing):
            assert value == round(round(value / 0.05) * 0.05, 10)


@pytest.mark.parametrize("size", SPACE.image_size)
def test_sampled_models_train_a_step_at_every_image_size(size: int) -> None:
    space = dataclasses.replace(SPACE, image_size=(size,))
    for _, cfg in _sampled(space, 5, seed=size):
        torch.manual_seed(0)
        model = build_cnn(cfg.model)
        assert count_params(model) == count_params(cfg.model)
        x = torch.randn(2, cfg.model.in_channels, size, size)
        logits = model(x)
        assert logits.shape == (2, 3)
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2]))
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_fixed_settings_are_not_suggested_and_still_round_trip() -> None:
    space = SearchSpace.from_dict({
        "n_blocks": [5, 5], "lr": 1e-3, "resize": "letterbox", "downsample": ["maxpool"],
        "augment": [True], "aug_rotate_deg": [10, 10], "head_dropout": [0.2, 0.2]})
    for params, cfg in _sampled(space, 10, seed=2):
        assert not {"n_blocks", "lr", "resize", "downsample", "augment", "aug_rotate_deg",
                    "head_dropout"} & params.keys()
        assert len(cfg.model.blocks) == 5 and cfg.train.lr == 1e-3 and cfg.input.resize == "letterbox"
        assert cfg.augment.rotate_deg == 10.0 and cfg.model.head_dropout == 0.2
        assert {b.downsample for b in cfg.model.blocks} == {"maxpool"}
        assert _round_trip(cfg, space) == cfg


def test_always_on_augmentation_space_still_contains_unaugmented_presets() -> None:
    space = SearchSpace.from_dict({"augment": [True], "use_weight_decay": [True],
                                   "weight_decay": [1e-6, 1e-2]})
    cfg = PRESET_TRIALS["net0"]
    with pytest.raises(ValueError, match=r"weight_decay=0\.0 is outside"):
        to_params(cfg, space)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, weight_decay=1e-4))
    assert _round_trip(cfg, space) == cfg


def _with(name: str, **changes: Any) -> TrialCfg:
    """A preset trial with fields changed in model/input/augment/train (keys "<part>__<field>")."""
    cfg = PRESET_TRIALS[name]
    for key, value in changes.items():
        part, field = key.split("__")
        cfg = dataclasses.replace(cfg, **{part: dataclasses.replace(getattr(cfg, part), **{field: value})})
    return cfg


_NET0 = PRESET_TRIALS["net0"].model.blocks


@pytest.mark.parametrize(("cfg", "space", "fragment"), [
    (_with("net0", input__image_size=224), SPACE, "image_size=224 is not one of [64, 96, 128]"),
    (_with("net0", model__blocks=(BlockCfg(12), *_NET0[1:])), SPACE, "conv0_channels=12"),
    (_with("net0", model__blocks=(*_NET0, *_NET0, *_NET0)), SPACE, "n_blocks=9 is outside [2, 7]"),
    (_with("net0", model__blocks=(_NET0[0], dataclasses.replace(_NET0[1], downsample="maxpool"), _NET0[2])),
     SPACE, "downsample=['maxpool', 'stride'] differs between blocks"),
    (_with("net0", model__blocks=tuple(dataclasses.replace(b, kernel_size=5) for b in _NET0)), SPACE,
     "kernel_size=5 is not one of [3]"),
    (_with("net0", model__head_hidden=(128, 100)), SPACE, "head1_units=100"),
    (_with("net0", model__head_dropout=0.33), SPACE, "head_dropout=0.33 is not on the grid"),
    (_with("net0", model__head_hidden=(), model__head_dropout=0.2), SearchSpace(head_layers=(0, 2)),
     "head_dropout=0.2 without hidden layers"),
    (_with("net0", augment__brightness=0.1), SPACE, "aug_jitter=(0.1, 0.0) (brightness, contrast) differ"),
    (_with("net0", augment__rotate_deg=25.0), SPACE, "aug_rotate_deg=25.0 is outside [0.0, 20.0]"),
    (_with("net0", train__lr=0.5), SPACE, "lr=0.5 is outside"),
    (_with("net0", train__weight_decay=1e-8), SPACE, "weight_decay=1e-08 is outside"),
    (_with("net0", train__batch_size=48), SPACE, "batch_size=48"),
    (_with("net0", train__label_smoothing=0.3), SPACE, "label_smoothing=0.3"),
    (PRESET_TRIALS["net0"], SearchSpace(resize=("letterbox",)),
     "resize='stretch' is not one of ['letterbox']"),
    (PRESET_TRIALS["net0"], SearchSpace(lr=(1e-2, 1e-2)), "lr=0.001 but the space fixes it to 0.01"),
    (PRESET_TRIALS["net6"], SearchSpace(augment=(False,)), "augment=True is not one of [False]"),
    (PRESET_TRIALS["net0"], SearchSpace(batchnorm=(True,)), "batchnorm=False is not one of [True]"),
])
def test_a_config_outside_the_space_names_the_parameter(
        cfg: TrialCfg, space: SearchSpace, fragment: str) -> None:
    with pytest.raises(ValueError, match="not a point of the search space") as info:
        to_params(cfg, space)
    assert fragment in str(info.value)


def test_every_field_is_validated_and_serialised() -> None:
    assert list(SPACE.to_dict()) == [f.name for f in dataclasses.fields(SearchSpace)]


def test_from_dict_reads_a_toml_table() -> None:
    space = SearchSpace.from_dict({"n_blocks": [3, 5], "channels": [16, 32], "aug_rotate_deg": [0, 10],
                                   "image_size": 64, "optimizer": ["adamw"], "lr": [3e-4, 3e-3]})
    assert space.n_blocks == (3, 5) and space.channels == (16, 32) and space.image_size == (64,)
    assert space.aug_rotate_deg == (0.0, 10.0) and isinstance(space.aug_rotate_deg[0], float)
    assert space.optimizer == ("adamw",) and space.batch_size == SPACE.batch_size
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert SearchSpace.from_dict({}) == SPACE


@pytest.mark.parametrize(("table", "fragments"), [
    ({"n_block": [2, 3]}, ("unknown key 'n_block'", "valid keys: n_blocks, channels")),
    ({"lr": ["a", "b"]}, ("'lr'", "expected [low, high] numbers", "got str 'a'")),
    ({"lr": [1e-4]}, ("'lr'", "expected [low, high] numbers", "got [0.0001]")),
    ({"n_blocks": [2.5, 3]}, ("'n_blocks'", "expected [low, high] ints", "got float 2.5")),
    ({"batchnorm": [0, 1]}, ("'batchnorm'", "expected a non-empty list of bools", "got int 0")),
    ({"lr": "fast"}, ("'lr'", "expected [low, high] numbers", "got str 'fast'")),
    ({"channels": {"a": 1}}, ("'channels'", "expected a non-empty list of ints", "got dict {'a': 1}")),
    ({"channels": [8, True]}, ("'channels'", "expected a non-empty list of ints", "got bool True")),
    ({"color": "grey"}, ("'color'", "one of 'gray', 'rgb'", "got 'grey'")),
    ({"downsample": ["avgpool"]}, ("'downsample'", "'stride'", "got 'avgpool'")),
    ({"n_blocks": [5, 2]}, ("'n_blocks'", "empty range, low 5 > high 2",)),
    ({"lr": [1e-2, 1e-4]}, ("'lr'", "empty range")),
    ({"channels": []}, ("'channels'", "empty choice list")),
    ({"batch_size": [16, 16]}, ("'batch_size'", "duplicate choices")),
    ({"head_dropout": [0.0, 0.33]}, ("'head_dropout'", "multiple of the step 0.05", "[0.0, 0.33]")),
    ({"lr": [0.0, 1e-2]}, ("'lr'", "in (0, 10]", "got 0.0")),
    ({"kernel_size": [3, 4]}, ("'kernel_size'", "odd", "got 4")),
])
def test_from_dict_errors_name_the_key(table: dict[str, Any], fragments: tuple[str, ...]) -> None:
    with pytest.raises(ValueError) as info:
        SearchSpace.from_dict(table)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_importing_space_does_not_import_optuna() -> None:
    code = ("import sys, space; assert 'optuna' not in sys.modules; "
            "space.PRESETS; space.build_cnn; assert 'optuna' not in sys.modules; "
            "import space.search_space as s; "
            "assert space.suggest is s.suggest and space.SearchSpace is s.SearchSpace")
    subprocess.run([sys.executable, "-c", code], check=True)
