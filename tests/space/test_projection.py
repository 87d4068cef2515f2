"""Presets moved into restricted search spaces: each lands in the space, and only what the space forbids moves."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from space import DEFAULT_TRIAL, PRESET_TRIALS, default_trial
from space.projection import project
from space.search_space import SearchSpace, to_params

RESTRICTED = [
    SearchSpace(aug_hflip_p=(0.0, 0.0)),
    SearchSpace(color=("rgb",)),
    SearchSpace(channels=(16, 32)),
    SearchSpace(n_blocks=(2, 3)),
    SearchSpace(n_blocks=(6, 7)),
    SearchSpace(augment=(False,)),
    SearchSpace(augment=(True,), aug_hflip_p=(0.1, 0.5)),
    SearchSpace(batchnorm=(True,), downsample=("stride",)),
    SearchSpace(head_layers=(0, 0)),
    SearchSpace(head_layers=(2, 2), head_units=(32,)),
    SearchSpace(lr=(1e-2, 1e-2), optimizer=("sgd",), batch_size=(128,)),
    SearchSpace(use_weight_decay=(True,), weight_decay=(1e-4, 1e-3)),
    SearchSpace(use_weight_decay=(False,), label_smoothing=(0.0, 0.0), schedule=("none",)),
    SearchSpace(aug_rotate_deg=(0.0, 0.0), aug_crop_scale_min=(1.0, 1.0), aug_jitter=(0.3, 0.3)),
    SearchSpace(image_size=(32, 128), resize=("letterbox",), kernel_size=(5,), activation=("gelu",)),
]


@pytest.mark.parametrize("name", sorted(PRESET_TRIALS))
def test_a_preset_in_the_default_space_is_not_moved(name: str) -> None:
    cfg = PRESET_TRIALS[name]
    assert project(cfg, SearchSpace()) == (cfg, [])


@pytest.mark.parametrize("space", RESTRICTED, ids=range(len(RESTRICTED)))
@pytest.mark.parametrize("name", sorted(PRESET_TRIALS))
def test_every_preset_lands_in_every_restricted_space(name: str, space: SearchSpace) -> None:
    cfg = PRESET_TRIALS[name]
    with pytest.raises(ValueError):  # each of these spaces excludes something of at least one preset ...
        for preset in PRESET_TRIALS.values():
            to_params(preset, space)
    moved, notes = project(cfg, space)
    to_params(moved, space)  # ... and the projection is a point of it
    assert project(moved, space) == (moved, [])  # a second projection moves nothing
    assert moved.model.in_channels == moved.input.channels
    assert bool(notes) == (moved != cfg)


def test_the_defaults_flips_are_turned_off_and_nothing_else_moves() -> None:
    moved, notes = project(DEFAULT_TRIAL, SearchSpace(aug_hflip_p=(0.0, 0.0)))
    assert notes == ["aug_hflip_p 0.5 -> 0"]
    assert moved == dataclasses.replace(DEFAULT_TRIAL, augment=dataclasses.replace(DEFAULT_TRIAL.augment, hflip_p=0.0))


def test_nearest_values_per_kind_of_setting() -> None:
    space = SearchSpace(channels=(16, 128), n_blocks=(2, 3), lr=(1e-4, 1e-3), color=("rgb",), optimizer=("sgd", "adam"))
    moved, notes = project(DEFAULT_TRIAL, space)  # channels 16-32-64-64-64, adamw at 2e-3, gray
    assert [b.channels for b in moved.model.blocks] == [16, 16, 128]  # 32 -> 16 (log-nearest, the smaller on a tie)
    assert moved.train.lr == pytest.approx(1e-3) and moved.train.optimizer == "sgd"
    assert moved.input.color == "rgb" and moved.model.in_channels == 3
    assert "n_blocks 5 -> 3" in notes and "color gray -> rgb" in notes and "optimizer adamw -> sgd" in notes


def test_missing_blocks_and_head_layers_repeat_the_last() -> None:
    moved, notes = project(PRESET_TRIALS["net0"], SearchSpace(n_blocks=(5, 7), head_layers=(3, 3)))
    assert [b.channels for b in moved.model.blocks] == [8, 16, 32, 32, 32]
    assert moved.model.head_hidden == (128, 64, 64)
    assert notes == ["n_blocks 3 -> 5", "head_layers 2 -> 3"]


@pytest.mark.parametrize(("color", "hflip"), [("gray", True), ("rgb", False), ("rgb", True), ("gray", False)])
def test_the_default_follows_the_datas_colour_and_flips(color: str, hflip: bool) -> None:
    cfg = default_trial(color=color, hflip=hflip)
    assert cfg.input.color == color and cfg.model.in_channels == (3 if color == "rgb" else 1)
    assert cfg.augment.hflip_p == (DEFAULT_TRIAL.augment.hflip_p if hflip else 0.0)
    assert cfg.augment.rotate_deg == DEFAULT_TRIAL.augment.rotate_deg and cfg.train == DEFAULT_TRIAL.train
    to_params(cfg, SearchSpace())
    assert default_trial() == DEFAULT_TRIAL


def test_colour_is_told_from_the_pixels() -> None:
    from search.run.data import has_colour

    gen = torch.Generator().manual_seed(0)
    gray = torch.randint(0, 256, (20, 1, 16, 16), generator=gen, dtype=torch.uint8).expand(20, 3, 16, 16).clone()
    jpeg_noise = (gray.to(torch.int16) + torch.randint(-4, 5, gray.shape, generator=gen)).clamp(0, 255).to(torch.uint8)
    assert not has_colour(gray) and not has_colour(jpeg_noise)
    tinted = gray.clone()
    tinted[:, 0, 4:8, 4:8] = 255  # a red patch on 6 % of the pixels
    tinted[:, 1:, 4:8, 4:8] = 0
    assert has_colour(tinted)
    assert not has_colour(gray[:, :1])  # a one-channel tensor has no colour to find
