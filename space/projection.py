"""A config moved into a search space: the nearest point, setting by setting, and what was moved.

A study may restrict its space (``--set 'space.color=["rgb"]'``, ``space.aug_hflip_p=[0, 0]``,
``space.channels=[16, 32]``). The presets (the search's default configuration and the seed nets) are
points of the default space, not of every space: :func:`project` moves each setting the space does not
allow to the nearest value it does allow, so a preset still runs, and says what it changed, so the user
sees which recipe ran. Nothing the space allows is changed: a preset never hides a setting from the
search's decision.

"Nearest" per kind of setting: a number is clamped into its range (and put on the range's grid); a
numeric choice (channels, image size, batch size) takes the closest allowed value on a log scale; any
other choice (colour, optimizer, ...) takes the space's first choice. Blocks and head layers beyond the
allowed count are dropped; missing ones repeat the last.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from space.config import COLORS, AugmentCfg, TrialCfg
from space.search_space import _SPECS, SearchSpace, to_params

__all__ = ["project", "space_of"]


class _Mover:
    """Moves values into the space and notes every move ("color gray -> rgb")."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.notes: list[str] = []

    def _note(self, name: str, old: Any, new: Any) -> Any:
        if old != new or type(old) is not type(new):
            self.notes.append(f"{name} {_fmt(old)} -> {_fmt(new)}")
        return new

    def choice(self, name: str, value: Any, key: str | None = None) -> Any:
        choices = getattr(self.space, key or name)
        if any(type(value) is type(c) and value == c for c in choices):
            return value
        numeric = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
        if numeric and all(isinstance(c, int | float) and not isinstance(c, bool) for c in choices):
            new = min(choices, key=lambda c: (abs(math.log(c / value)), c))
        else:
            new = choices[0]
        return self._note(name, value, new)

    def number(self, name: str, value: float, key: str | None = None) -> Any:
        key = key or name
        low, high = getattr(self.space, key)
        new = min(max(value, low), high)
        step = _SPECS[key].step
        if step is not None and low < high:
            new = round(low + round((new - low) / step) * step, 10)
            new = min(max(new, low), high)
        if isinstance(value, float) and math.isclose(new, value, rel_tol=1e-9, abs_tol=1e-12):
            return value
        return self._note(name, value, type(value)(new) if isinstance(value, int) else float(new))

    def count(self, name: str, items: tuple, key: str) -> tuple:
        low, high = getattr(self.space, key)
        n = min(max(len(items), low), high)
        if n == len(items):
            return items
        self._note(name, len(items), n)
        return items[:n] if n < len(items) else items + (items[-1],) * (n - len(items)) if items else items


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def project(cfg: TrialCfg, space: SearchSpace) -> tuple[TrialCfg, list[str]]:
    """The point of ``space`` nearest to ``cfg``, and the moves in words (empty when ``cfg`` is a point of it).

    ``to_params(result, space)`` always succeeds.
    """
    m = _Mover(space)
    model = cfg.model
    blocks = m.count("n_blocks", model.blocks, "n_blocks")
    first = blocks[0]
    shared = {k: m.choice(k, getattr(first, k)) for k in ("kernel_size", "downsample", "batchnorm", "activation")}
    blocks = tuple(dataclasses.replace(b, channels=m.choice(f"conv{i}_channels", b.channels, "channels"), **shared)
                   for i, b in enumerate(blocks))
    if not model.head_hidden and space.head_layers[0] > 0:
        hidden: tuple[int, ...] = (space.head_units[0],) * space.head_layers[0]
        m._note("head_layers", 0, len(hidden))
    else:
        hidden = m.count("head_layers", model.head_hidden, "head_layers")
    hidden = tuple(m.choice(f"head{j}_units", u, "head_units") for j, u in enumerate(hidden))
    dropout = m.number("head_dropout", model.head_dropout) if hidden else m._note("head_dropout",
                                                                                  model.head_dropout, 0.0)

    aug = cfg.augment
    # Augmentation off is a point of an always-on space (every amount zero): no move to speak of.
    on = aug.enabled or False not in space.augment if True in space.augment else m.choice("augment", aug.enabled)
    if on:
        jitter = max(aug.brightness, aug.contrast)
        jitter = m.number("aug_jitter", jitter)
        augment = AugmentCfg(hflip_p=m.number("aug_hflip_p", aug.hflip_p),
                             rotate_deg=m.number("aug_rotate_deg", aug.rotate_deg),
                             crop_scale_min=m.number("aug_crop_scale_min", aug.crop_scale_min),
                             brightness=jitter, contrast=jitter)
    else:
        augment = AugmentCfg()

    color = m.choice("color", cfg.input.color)
    inp = dataclasses.replace(cfg.input, image_size=m.choice("image_size", cfg.input.image_size), color=color,
                              resize=m.choice("resize", cfg.input.resize))
    t = cfg.train
    use_wd = m.choice("use_weight_decay", t.weight_decay > 0)
    if use_wd:
        wd = m.number("weight_decay", t.weight_decay if t.weight_decay > 0 else space.weight_decay[0])
    else:
        wd = 0.0
    train = dataclasses.replace(
        t, optimizer=m.choice("optimizer", t.optimizer), lr=m.number("lr", t.lr),
        batch_size=m.choice("batch_size", t.batch_size), weight_decay=wd, schedule=m.choice("schedule", t.schedule),
        label_smoothing=m.number("label_smoothing", t.label_smoothing),
        class_weighting=m.choice("class_weighting", t.class_weighting))
    out = TrialCfg(model=dataclasses.replace(model, blocks=blocks, head_hidden=hidden, head_dropout=dropout,
                                             in_channels=COLORS[color]),
                   input=inp, augment=augment, train=train)
    to_params(out, space)  # a bug here, not a user error: the projection must land in the space
    return out, m.notes


def space_of(cfg: TrialCfg) -> dict[str, list[Any]]:
    """The narrowest ``[space]`` table that holds ``cfg``: every setting fixed to its value, the channel and
    head-width choices to the set the config uses (the space has one list for all blocks and layers)."""
    m, a, t = cfg.model, cfg.augment, cfg.train
    first = m.blocks[0]
    table: dict[str, list[Any]] = {
        "n_blocks": [len(m.blocks)] * 2, "channels": sorted({b.channels for b in m.blocks}),
        "kernel_size": [first.kernel_size], "downsample": [first.downsample], "batchnorm": [first.batchnorm],
        "activation": [first.activation], "head_layers": [len(m.head_hidden)] * 2,
        "head_units": sorted(set(m.head_hidden)) or [64], "head_dropout": [m.head_dropout] * 2,
        "augment": [a.enabled], "image_size": [cfg.input.image_size], "color": [cfg.input.color],
        "resize": [cfg.input.resize], "optimizer": [t.optimizer], "lr": [t.lr] * 2, "batch_size": [t.batch_size],
        "use_weight_decay": [t.weight_decay > 0], "schedule": [t.schedule], "label_smoothing": [t.label_smoothing] * 2,
        "class_weighting": [t.class_weighting]}
    if a.enabled:
        table.update({"aug_hflip_p": [a.hflip_p] * 2, "aug_rotate_deg": [a.rotate_deg] * 2,
                      "aug_crop_scale_min": [a.crop_scale_min] * 2, "aug_jitter": [a.brightness] * 2})
    if t.weight_decay > 0:
        table["weight_decay"] = [t.weight_decay] * 2
    to_params(cfg, SearchSpace.from_dict(table))  # a bug here, not a user error: the config must be a point of it
    return table
