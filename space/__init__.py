"""What a trial can be: frozen configs, the CNN builder, presets, augmentation, the search space.

``space`` never imports ``anklealign`` or ``search``. Importing ``space`` does not import
optuna: ``SearchSpace``, ``suggest`` and ``to_params`` live in :mod:`space.search_space` and are
loaded on first access (``space.suggest`` or ``from space import suggest``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from space.augment import augment_batch, normalize
from space.build import build_cnn, count_macs, count_params
from space.config import AugmentCfg, BlockCfg, InputCfg, ModelCfg, TrainCfg, TrialCfg
from space.presets import DEFAULT_TRIAL, PRESET_TRIALS, PRESETS, SEED_NETS, default_trial

if TYPE_CHECKING:
    from space.projection import project
    from space.search_space import SearchSpace, suggest, to_params

__all__ = [
    "PRESETS",
    "PRESET_TRIALS",
    "DEFAULT_TRIAL",
    "SEED_NETS",
    "AugmentCfg",
    "BlockCfg",
    "InputCfg",
    "ModelCfg",
    "SearchSpace",
    "TrainCfg",
    "TrialCfg",
    "augment_batch",
    "build_cnn",
    "count_macs",
    "count_params",
    "default_trial",
    "normalize",
    "project",
    "suggest",
    "to_params",
]

_LAZY = {"SearchSpace": "search_space", "suggest": "search_space", "to_params": "search_space",
         "project": "projection"}  # need optuna; only loaded when asked for


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"space.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
