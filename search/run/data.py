"""The bridge from ``anklealign`` datasets to what trials may see.

Trials get a :class:`~search.run.train.TrainPool` (the training pool on the device) and its folds;
the test split stays inside the :class:`anklealign.Dataset` and is read only by the final step.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import anklealign
from anklealign.report import twin_brief
from search.run.train import TrainPool, make_folds
from space import InputCfg

__all__ = ["DataContext", "describe", "has_colour"]

_log = logging.getLogger(__name__)


def describe(ds: anklealign.Dataset) -> dict[str, Any]:
    """Which data a run used: every report and model card carries this."""
    return {
        "kind": ds.kind,
        "synthetic": bool(ds.synthetic),
        "source": ds.source,
        "fingerprint": ds.fingerprint,
        "classes": list(ds.classes),
        "train_images": int(len(ds.train.labels)),
        "test_images": int(len(ds.test.labels)),
        "mirror_duplicates": ds.report.mirror_duplicates,
        "note": ("SYNTHETIC TWIN of the AnkleAlign data (generated, not real photographs)"
                 if ds.synthetic else "real data"),
        **({"twin": twin_brief(ds.report.twin)} if ds.synthetic and ds.report.twin else {}),
    }


def has_colour(images: torch.Tensor, *, spread: int = 24, share: float = 0.01) -> bool:
    """Whether uint8 RGB images (N, 3, H, W) carry colour: at least ``share`` of the pixels have channels more
    than ``spread`` apart (a gray picture saved as a JPEG differs by a few levels from compression alone)."""
    if images.shape[1] != 3 or not len(images):
        return False
    x = images[: min(len(images), 200)].to(torch.int16)
    gap = x.amax(dim=1) - x.amin(dim=1)
    return bool((gap > spread).float().mean() >= share)


@dataclass
class DataContext:
    """Loads the dataset once per input config (decoded tensors are cached on disk by anklealign)."""

    source: str | None
    device: torch.device
    folds: int
    seed: int
    cache_dir: Path | None = None
    default_input: InputCfg = field(default_factory=InputCfg)
    mirrors: bool | None = None  # anklealign.load's mirror rule (None: the layout's own)
    _datasets: dict[tuple, anklealign.Dataset] = field(default_factory=dict)
    _traits: dict[str, Any] | None = None
    _pools: dict[tuple, tuple[TrainPool, list]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of classes of the data source (3 for AnkleAlign; folder names for an image folder)."""
        if not self._datasets:
            self.dataset(self.default_input)
        return len(next(iter(self._datasets.values())).classes)

    def dataset(self, inp: InputCfg) -> anklealign.Dataset:
        key = (inp.image_size, inp.color, inp.resize)
        if key not in self._datasets:
            self._datasets[key] = anklealign.load(self.source, image_size=inp.image_size, color=inp.color,
                                                  resize=inp.resize, cache_dir=self.cache_dir, mirrors=self.mirrors)
        return self._datasets[key]

    def default_traits(self) -> dict[str, Any]:
        """What the search's default configuration takes from the data (see :func:`space.default_trial`).

        The AnkleAlign archive and its twin keep the default measured on the development twins (gray, flips:
        a mirrored ankle keeps its class). A folder of other images: colour when its pictures carry colour
        (gray would hide a class told by hue), and flips only when the data's rule says a mirror keeps the
        class (``data.mirror_duplicates``; off for folders by default, since a flip may change it).
        """
        if self._traits is None:
            ds = self.dataset(self.default_input)
            if ds.kind == "anklealign":
                self._traits = {"color": "gray", "hflip": True,
                                "why": "the AnkleAlign default (measured on the development twins)"}
            else:
                rgb = self.dataset(dataclasses.replace(self.default_input, color="rgb")).train.images
                colour = has_colour(rgb)
                flips = bool(ds.report.mirror_duplicates)
                self._traits = {"color": "rgb" if colour else "gray", "hflip": flips,
                                "why": ("the images carry colour" if colour else "the images are gray") + "; "
                                       + ("a mirrored picture keeps its class (data.mirror_duplicates), so flips"
                                          if flips else "a flip may change the class (data.mirror_duplicates "
                                                        "is off), so no flips")}
        return self._traits

    def pool(self, inp: InputCfg) -> tuple[TrainPool, list[tuple[np.ndarray, np.ndarray]]]:
        """The training pool on the device and its stratified, grouped folds (never the test split)."""
        key = (inp.image_size, inp.color, inp.resize)
        if key not in self._pools:
            train = self.dataset(inp).train
            labels = train.labels.numpy()
            groups = train.groups.numpy()
            folds = make_folds(labels, groups, self.folds, self.seed)
            pool = TrainPool(images=train.images.to(self.device), labels=train.labels.to(self.device),
                             groups=groups, num_classes=len(self.dataset(inp).classes))
            self._pools[key] = (pool, folds)
        return self._pools[key]
