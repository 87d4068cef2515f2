"""What a trial and a study record about themselves, in one typed place.

:class:`TrialRecord`: the objective writes these fields into the trial's Optuna user attributes as it
goes (the config first, so that even a crashed trial rebuilds; the figures when it ends), and every
reader (runner, final step, notes, report, CLI) reads them back through :meth:`TrialRecord.of`.
:class:`StudyRecord`: what ``run`` writes on the study when it creates it (the definition, its hash,
the data description and fingerprint). No other module indexes ``user_attrs`` by string, so a field
is renamed in exactly one place (``tests/test_architecture.py`` checks it).
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import BaseTrial, FrozenTrial

__all__ = ["TrialRecord", "StudyRecord", "write", "attrs", "FIELDS", "queued_attrs", "encode_probs"]


@dataclass(frozen=True)
class TrialRecord:
    """The user attributes of one trial (``None`` = not recorded, e.g. a trial that failed early).

    Attributes:
        config: the resolved :class:`space.TrialCfg` as a dict (rebuilds the model without Optuna).
        seed: the trial's seed (a re-queued trial keeps its first attempt's).
        preset: the seed net it is (``net0`` ...), if enqueued as one.
        params_count, macs: model size and multiply-accumulates per image.
        device, worker: where it ran (``cpu``/``cuda:0``; ``host:pid``).
        cv_best: the fold-mean validation score of its best epoch.
        best_epoch: that epoch, 1-based (the epoch count a best-epoch retrain runs).
        cv_last: the fold-mean validation score of the last epoch it ran.
        cv_last_mean: the mean fold-mean validation score of its last five epochs (a complete trial).
        oof: out-of-fold class probabilities of every training image, of the state the trial's value
            describes (the mean over the last five epochs; the best epoch's for ``objective = "best_epoch"``),
            as ``"lp16:"`` + base64 of float16 natural-log probabilities (row-major N x K; about 3
            significant digits of every probability down to float32's smallest, so a fitted temperature
            is exact). Studies before this format stored base64 of uint8 (probability x 255), which
            rounds every probability below 1/510 to 0; they still load (:attr:`oof_exact` is False).
            See :meth:`oof_probs`.
        epochs_run: epochs trained (fewer than the budget when pruned).
        epoch_seconds: wall time of each epoch (all folds).
        train_images_per_s, seconds, peak_memory_mb: throughput, total time, peak memory.
        prune_reason, fail_reason: why it was pruned or failed.
        interrupted: stopped by Ctrl-C (re-queued; does not count as finished).
    """

    config: dict[str, Any] | None = None
    seed: int | None = None
    preset: str | None = None
    params_count: int | None = None
    macs: int | None = None
    device: str | None = None
    worker: str | None = None
    cv_best: float | None = None
    best_epoch: int | None = None
    cv_last: float | None = None
    cv_last_mean: float | None = None
    oof: str | None = None
    epochs_run: int | None = None
    epoch_seconds: tuple[float, ...] = ()
    train_images_per_s: float | None = None
    seconds: float | None = None
    peak_memory_mb: float | None = None
    prune_reason: str | None = None
    fail_reason: str | None = None
    interrupted: bool = False

    @classmethod
    def of(cls, trial: FrozenTrial | BaseTrial) -> TrialRecord:
        """Read a trial's record (keys this version does not know are ignored)."""
        attrs = trial.user_attrs
        values = {k: attrs[k] for k in FIELDS if k in attrs}
        if "epoch_seconds" in values:
            values["epoch_seconds"] = tuple(values["epoch_seconds"])
        return cls(**values)

    @property
    def reason(self) -> str | None:
        """Why the trial did not complete, if it did not."""
        return self.prune_reason or self.fail_reason

    def as_dict(self) -> dict[str, Any]:
        """The recorded fields only (for trials.csv and JSON output; the out-of-fold array is left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k != "oof"}

    @property
    def oof_exact(self) -> bool | None:
        """Whether the out-of-fold record keeps small probabilities (None when there is none): False for the
        uint8 records of older studies, on which a fitted temperature is only approximate."""
        return None if not self.oof else self.oof.startswith(_LOGP16)

    def oof_probs(self, num_classes: int) -> np.ndarray | None:
        """The out-of-fold probabilities as a float (N, K) array, or None when not recorded."""
        if not self.oof:
            return None
        if self.oof.startswith(_LOGP16):
            raw = np.frombuffer(base64.b64decode(self.oof[len(_LOGP16):]), dtype=np.float16)
            probs = np.exp(raw.astype(np.float64))
        else:  # the uint8 format of older studies
            raw = np.frombuffer(base64.b64decode(self.oof), dtype=np.uint8)
            probs = raw.astype(np.float64) / 255.0
        if raw.size % num_classes:
            raise ValueError(f"out-of-fold record of {raw.size} values is not a multiple of {num_classes} classes")
        probs = probs.reshape(-1, num_classes)
        return probs / np.clip(probs.sum(1, keepdims=True), 1e-300, None)


_LOGP16 = "lp16:"  # prefix of the exact format of TrialRecord.oof
# log of float32's smallest normal number: a float32 softmax is exactly 0 below it, so 0 is read as "at most this"
_LOG_FLOOR = float(np.log(np.finfo(np.float32).tiny))


def encode_probs(probs: np.ndarray) -> str:
    """Class probabilities (N, K) as the text of :attr:`TrialRecord.oof`: float16 log-probabilities, so that a
    probability of 1e-20 stays 1e-20 to about 0.1 % (uint8 probabilities made it 0, and a temperature fitted on
    them ran to its bound)."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logp = np.maximum(np.log(p), _LOG_FLOOR).astype(np.float16)
    return _LOGP16 + base64.b64encode(logp.tobytes()).decode("ascii")


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrialRecord))


def attrs(**values: Any) -> dict[str, Any]:
    """Fields of :class:`TrialRecord` as user attributes; an unknown name is a programming error."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"not fields of TrialRecord: {unknown} (valid: {', '.join(FIELDS)})")
    return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}


def write(trial: BaseTrial, **values: Any) -> None:
    """Record fields of :class:`TrialRecord` on a running trial."""
    for key, value in attrs(**values).items():
        trial.set_user_attr(key, value)


def queued_attrs(*, preset: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """The user attributes of a trial put in the queue: a seed net's name, a retry's first seed."""
    return {k: v for k, v in (("preset", preset), ("seed", seed)) if v is not None}


@dataclass(frozen=True)
class StudyRecord:
    """The user attributes of a study (``None`` = not recorded, e.g. a study made by another tool).

    Attributes:
        definition: the resolved study definition (``StudyDef.to_dict()``) the trials ran with.
        definition_hash: the hash of its trial-relevant sections (joining workers must match it).
        data: which data the study ran on (``search.run.data.describe``): every report says it.
        data_fingerprint: the data's fingerprint (a resumed study must see the same data).
        exported: what the final step exported: ``{"trial", "why"}`` (written after it; None before).
    """

    definition: dict[str, Any] | None = None
    definition_hash: str | None = None
    data: dict[str, Any] | None = None
    data_fingerprint: str | None = None
    exported: dict[str, Any] | None = None

    @classmethod
    def of(cls, study: optuna.Study) -> StudyRecord:
        attrs = study.user_attrs
        return cls(**{f.name: attrs[f.name] for f in dataclasses.fields(cls) if f.name in attrs})

    def write(self, study: optuna.Study) -> None:
        """Record the fields that are set (the hash first: a joining worker waits for it, then reads the rest)."""
        for f in ("definition", "data", "data_fingerprint", "definition_hash", "exported"):
            value = getattr(self, f)
            if value is not None:
                study.set_user_attr(f, value)

    def setting(self, section: str, key: str) -> Any:
        """A key of the recorded definition (``None`` when not recorded)."""
        return ((self.definition or {}).get(section) or {}).get(key)
