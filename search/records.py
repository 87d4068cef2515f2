"""What a trial records about itself, in one typed place: :class:`TrialRecord`.

The objective writes these fields into the trial's Optuna user attributes as it goes (the config
first, so that even a crashed trial rebuilds; the figures when it ends), and every reader
(runner, final step, notes, report, CLI) reads them back through :meth:`TrialRecord.of`. No other
module indexes ``user_attrs`` by string, so a field is renamed in exactly one place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from optuna.trial import BaseTrial, FrozenTrial

__all__ = ["TrialRecord", "write", "FIELDS"]


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
        """The recorded fields only (for trials.csv and JSON output)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrialRecord))


def write(trial: BaseTrial, **values: Any) -> None:
    """Record fields of :class:`TrialRecord` on a running trial; an unknown name is a programming error."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"not fields of TrialRecord: {unknown} (valid: {', '.join(FIELDS)})")
    for key, value in values.items():
        trial.set_user_attr(key, list(value) if isinstance(value, tuple) else value)
