"""Study definitions: ``studies/<name>.toml`` + ``--set`` overrides -> one frozen, validated object.

The definition is read with the standard library's :mod:`tomllib`. Every section is a frozen dataclass; an unknown
section or key, or a wrong value, is a :class:`StudyDefError` naming the key; ``[space]`` is a :class:`SearchSpace`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from search.study.errors import SearchError
from space import PRESET_TRIALS, SEED_NETS

__all__ = ["StudyDef", "StudyDefError", "load_study_def", "study_def_from_dict", "apply_overrides", "find_study_file",
           "name_from_data", "METRICS", "OBJECTIVES", "SAMPLERS", "PRUNERS"]

METRICS = ("macro_f1", "balanced_accuracy", "accuracy")
# A trial's value: its best epoch's, its last epoch's or its last five epochs' mean fold score (run.objective).
OBJECTIVES = ("best_epoch", "last_epoch", "last_mean")
SAMPLERS = ("tpe", "random")
PRUNERS = ("guarded", "median", "successive_halving", "hyperband", "none")
DEVICES = ("auto", "cpu", "cuda")
_PRESET_NAMES = tuple(PRESET_TRIALS)  # the seed nets of docs/SEED_NETS.md and "default"
_GONE = {"wilcoxon": "with 3 folds its smallest p-value, 0.125, never passes its threshold: it never pruned"}


class StudyDefError(SearchError):
    """A study definition that cannot be used (syntax, unknown key, wrong type, bad value)."""


def _choice(name: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        gone = f" (no longer offered: {_GONE[value]})" if value in _GONE else ""
        raise StudyDefError(f"{name} must be one of {', '.join(valid)}; got {value!r}{gone}")


@dataclass(frozen=True)
class StudySection:
    name: str = ""  # "" = named after the data: "<archive or folder stem>-<8 hex of its fingerprint>"
    seed: int = 0
    trials: int = 30
    metric: str = "macro_f1"
    objective: str = "last_mean"
    enqueue_presets: tuple[str, ...] = ("default", *SEED_NETS)

    def __post_init__(self) -> None:
        if any(c in self.name for c in "/\\:") or self.name.startswith(".") or self.name != self.name.strip():
            raise StudyDefError(f"study.name must be a plain name without / \\ or :, got {self.name!r}")
        if self.seed < 0:
            raise StudyDefError(f"study.seed must be >= 0, got {self.seed}")
        if self.trials < 1:
            raise StudyDefError(f"study.trials must be >= 1, got {self.trials}")
        _choice("study.metric", self.metric, METRICS)
        _choice("study.objective", self.objective, OBJECTIVES)
        for p in self.enqueue_presets:
            _choice("study.enqueue_presets", p, _PRESET_NAMES)


@dataclass(frozen=True)
class DataSection:
    source: str = ""
    # Mirrored copies as duplicates: auto = on for the AnkleAlign archive (a flip keeps its classes), off for
    # train/<class> folders (a flip may change the class); on | off (docs/SELECTION.md).
    mirror_duplicates: str = "auto"

    def __post_init__(self) -> None:
        _choice("data.mirror_duplicates", self.mirror_duplicates, ("auto", "on", "off"))

    @property
    def mirrors(self) -> bool | None:
        """``anklealign.load``'s ``mirrors`` argument (None = the layout's own rule)."""
        return {"auto": None, "on": True, "off": False}[self.mirror_duplicates]


@dataclass(frozen=True)
class CVSection:
    folds: int = 3

    def __post_init__(self) -> None:
        if not 2 <= self.folds <= 20:
            raise StudyDefError(f"cv.folds must be in [2, 20], got {self.folds}")


@dataclass(frozen=True)
class TrainingSection:
    max_epochs: int = 30
    device: str = "auto"
    deterministic: bool = False  # torch.use_deterministic_algorithms (--deterministic)

    def __post_init__(self) -> None:
        if self.max_epochs < 1:
            raise StudyDefError(f"training.max_epochs must be >= 1, got {self.max_epochs}")
        _choice("training.device", self.device, DEVICES)


@dataclass(frozen=True)
class SamplerSection:
    name: str = "tpe"
    n_startup_trials: int = 10
    multivariate: bool = True

    def __post_init__(self) -> None:
        _choice("sampler.name", self.name, SAMPLERS)
        if self.n_startup_trials < 0:
            raise StudyDefError(f"sampler.n_startup_trials must be >= 0, got {self.n_startup_trials}")


@dataclass(frozen=True)
class PrunerSection:
    name: str = "guarded"
    n_startup_trials: int = 5
    n_warmup_steps: int = 2
    min_share: float = 0.4  # guarded: no decision before this share of the epoch budget
    band: float = 0.05  # guarded: prune only this far below the keep threshold, and above chance + band
    reduction_factor: int = 3  # guarded, successive_halving, hyperband: keep the top 1/reduction_factor per rung

    def __post_init__(self) -> None:
        _choice("pruner.name", self.name, PRUNERS)
        if self.n_startup_trials < 0 or self.n_warmup_steps < 0:
            raise StudyDefError("pruner.n_startup_trials and pruner.n_warmup_steps must be >= 0")
        if not 0 < self.min_share <= 1 or self.band < 0 or self.reduction_factor < 2:
            raise StudyDefError("pruner.min_share must be in (0, 1], pruner.band >= 0, pruner.reduction_factor >= 2")


@dataclass(frozen=True)
class StorageSection:
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: int = 2
    outage_timeout: int = 300  # seconds a lost database connection is waited out before giving up (exit code 3)

    def __post_init__(self) -> None:
        if self.heartbeat_interval < 1 or self.max_retry < 0 or self.outage_timeout < 0:
            raise StudyDefError(f"storage.heartbeat_interval must be >= 1, storage.max_retry and "
                                f"storage.outage_timeout >= 0; got {self.heartbeat_interval}, {self.max_retry}, "
                                f"{self.outage_timeout}")
        if self.grace_period <= self.heartbeat_interval:
            raise StudyDefError(
                f"storage.grace_period ({self.grace_period}) must exceed storage.heartbeat_interval "
                f"({self.heartbeat_interval})"
            )


@dataclass(frozen=True)
class FinalSection:
    seeds: int = 3
    top_k: int = 1  # the exported model averages the best 1..top_k trials, as the out-of-fold score says
    ensemble: str = "top_k"  # top_k | greedy: Caruana's selection on out-of-fold NLL, at most top_k distinct trials
    baseline_presets: tuple[str, ...] = ("default", *SEED_NETS)
    references: int = 2  # retrain "default" and this many of the listed seed nets, best CV first; 0 = every one
    bootstrap: int = 1000
    calibrate: bool = True  # temperature scaling fitted on out-of-fold predictions, folded into the model
    label_shift: bool = True  # estimate the test prior from unlabelled outputs; a prior-adjusted row
    votes: bool = True  # accuracy against the vote majority, ties apart
    per_class: bool = True  # per-class precision and recall with intervals
    keep_default: bool = True  # export the default trial unless the winner beats it out of fold (final/selection.py)

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.top_k < 1:
            raise StudyDefError(f"final.seeds and final.top_k must be >= 1, got {self.seeds} and {self.top_k}")
        _choice("final.ensemble", self.ensemble, ("top_k", "greedy"))
        if self.bootstrap < 0 or self.references < 0:
            raise StudyDefError(f"final.bootstrap and final.references must be >= 0, got {self.bootstrap}, "
                                f"{self.references}")
        for p in self.baseline_presets:
            _choice("final.baseline_presets", p, _PRESET_NAMES)


_SECTIONS: dict[str, type] = {
    "study": StudySection,
    "data": DataSection,
    "cv": CVSection,
    "training": TrainingSection,
    "sampler": SamplerSection,
    "pruner": PrunerSection,
    "storage": StorageSection,
    "final": FinalSection,
}

# Keys that do not change what a trial computes: a worker may differ in these and still join.
_RUN_ONLY = {("study", "trials"), ("training", "device"), ("training", "deterministic"), ("data", "source"),
             ("storage", "outage_timeout"), *(("final", f.name) for f in dataclasses.fields(FinalSection))}


@dataclass(frozen=True)
class StudyDef:
    """The resolved, validated study definition."""

    study: StudySection = field(default_factory=StudySection)
    data: DataSection = field(default_factory=DataSection)
    cv: CVSection = field(default_factory=CVSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    sampler: SamplerSection = field(default_factory=SamplerSection)
    pruner: PrunerSection = field(default_factory=PrunerSection)
    storage: StorageSection = field(default_factory=StorageSection)
    final: FinalSection = field(default_factory=FinalSection)
    space: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.study.name

    def named(self, name: str) -> StudyDef:
        """The same definition under study name ``name`` (validated)."""
        return dataclasses.replace(self, study=dataclasses.replace(self.study, name=name))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists instead of tuples), the form written to study.toml."""
        out: dict[str, Any] = {}
        for section in _SECTIONS:
            out[section] = {k: list(v) if isinstance(v, tuple) else v
                            for k, v in dataclasses.asdict(getattr(self, section)).items()}
        out["space"] = _plain(dict(self.space))
        return out

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def trial_relevant(self) -> dict[str, Any]:
        """The part of the definition that changes what trials compute (for the join check)."""
        d = self.to_dict()
        for section, key in _RUN_ONLY:
            d[section].pop(key, None)
        d.pop("storage", None)
        return d

    def definition_hash(self) -> str:
        blob = json.dumps(self.trial_relevant(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def _check_type(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against a dataclass field type; return it converted (lists -> tuples)."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise StudyDefError(f"{key} must be a list, got {type(value).__name__} {value!r}")
        (item_tp, _) = typing.get_args(tp)
        return tuple(_check_type(f"{key}[]", x, item_tp) for x in value)
    if tp is bool:
        if not isinstance(value, bool):
            raise StudyDefError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise StudyDefError(f"{key} must be an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise StudyDefError(f"{key} must be a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise StudyDefError(f"{key} must be a string, got {type(value).__name__} {value!r}")
        return value
    raise AssertionError(f"unsupported field type {tp} for {key}")


def _section(cls: type, name: str, raw: Any) -> Any:
    if not isinstance(raw, Mapping):
        raise StudyDefError(f"[{name}] must be a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in valid:
            raise StudyDefError(f"unknown key {name}.{key} (valid keys of [{name}]: {', '.join(valid)})")
        kwargs[key] = _check_type(f"{name}.{key}", value, hints[key])
    return cls(**kwargs)


def study_def_from_dict(raw: Mapping[str, Any]) -> StudyDef:
    """Validate a definition given as a dict (e.g. the one recorded in a study's attributes)."""
    return _from_dict(raw)


def _from_dict(raw: Mapping[str, Any]) -> StudyDef:
    for section in raw:
        if section not in _SECTIONS and section != "space":
            raise StudyDefError(
                f"unknown section [{section}] (valid: {', '.join([*_SECTIONS, 'space'])})"
            )
    kwargs: dict[str, Any] = {s: _section(cls, s, raw.get(s, {})) for s, cls in _SECTIONS.items()}
    space_raw = raw.get("space", {})
    if not isinstance(space_raw, Mapping):
        raise StudyDefError("[space] must be a table")
    _validate_space(space_raw)
    return StudyDef(**kwargs, space=dict(space_raw))


def _validate_space(space_raw: Mapping[str, Any]) -> None:
    from space.search_space import SearchSpace

    try:
        SearchSpace.from_dict(dict(space_raw))
    except (ValueError, TypeError) as exc:
        raise StudyDefError(f"[space]: {exc}") from exc


def name_from_data(source: str | None, fingerprint: str) -> str:
    """The default study name: the archive or folder stem and 8 hex digits of the data's fingerprint.

    ``anklealign.zip`` -> ``anklealign-1f3a9c0e``; the synthetic twin (``source`` None) -> ``twin-...``.
    Another dataset, or the same folder with other labels, gets another name, so studies of two
    datasets never mix in one run folder.
    """
    stem = "twin" if not source else Path(source.rstrip("/\\")).name
    for suffix in (".zip", ".ZIP"):
        stem = stem.removesuffix(suffix)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "data"
    return f"{stem}-{fingerprint[:8]}"


def find_study_file(study: str) -> Path:
    """Resolve ``--study NAME|PATH`` to a TOML file. A value ending in ``.toml`` or containing a path separator is a
    path; otherwise
    ``studies/<name>.toml`` is looked up in the current folder (a user's own definitions win), then among the
    definitions that ship with the package (``search/studies/``), so an installed tool works from any folder.
    """
    if study.endswith(".toml") or "/" in study or "\\" in study:
        path = Path(study)
        if not path.is_file():
            raise StudyDefError(f"study file not found: {path}")
        return path
    shipped = {"anklealign": "default"}.get(study, study)  # the shipped default's former name still finds it
    candidates = [Path.cwd() / "studies" / f"{study}.toml",
                  Path(__file__).resolve().parent.parent / "studies" / f"{shipped}.toml"]
    for path in candidates:
        if path.is_file():
            return path
    known = sorted({p.stem for c in candidates if c.parent.is_dir() for p in c.parent.glob("*.toml")})
    raise StudyDefError(f"no study definition named {study!r} (known: {', '.join(known) or 'none'}; "
                        f"or give a path to a .toml file)")


def _parse_override(text: str) -> tuple[str, str, Any]:
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise StudyDefError(f"--set expects SECTION.KEY=VALUE, got {text!r}")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word such as hyperband is taken as a string
    return section, key, value


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of a raw definition with ``SECTION.KEY=VALUE`` overrides applied."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    for text in overrides:
        section, key, value = _parse_override(text)
        out.setdefault(section, {})
        if not isinstance(out[section], dict):
            raise StudyDefError(f"--set {text!r}: [{section}] is not a table")
        out[section][key] = value
    return out


def load_study_def(study: str = "default", overrides: Sequence[str] = ()) -> StudyDef:
    """Read, override and validate a study definition.

    Args:
        study: a study name (``studies/<name>.toml``) or a path to a TOML file.
        overrides: ``SECTION.KEY=VALUE`` strings (values in TOML syntax; bare words are strings).

    Raises:
        StudyDefError: the file is missing, not valid TOML, or a key/value is wrong.
    """
    path = find_study_file(study)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise StudyDefError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise StudyDefError(f"{path}: not a UTF-8 text file") from exc
    raw = apply_overrides(raw, overrides)
    try:
        return _from_dict(raw)
    except (StudyDefError, TypeError) as exc:  # TypeError: a dataclass rejecting a value
        raise StudyDefError(f"{path}: {exc}") from exc
