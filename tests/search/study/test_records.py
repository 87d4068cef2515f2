"""StudyRecord and TrialRecord: the one place that reads and writes Optuna's user attributes."""

from __future__ import annotations

import optuna
import pytest

from search.study import records
from search.study.records import StudyRecord, TrialRecord


def test_study_record_round_trip_writes_the_hash_last() -> None:
    study = optuna.create_study()
    written: list[str] = []
    real = study.set_user_attr
    study.set_user_attr = lambda k, v: (written.append(k), real(k, v))  # type: ignore[method-assign]
    StudyRecord(definition={"study": {"metric": "macro_f1"}}, definition_hash="h", data={"note": "x"},
                data_fingerprint="f").write(study)
    assert written[-1] == "definition_hash"  # a joining worker waits for it, then reads the rest
    back = StudyRecord.of(study)
    assert back == StudyRecord(definition={"study": {"metric": "macro_f1"}}, definition_hash="h",
                               data={"note": "x"}, data_fingerprint="f")
    assert back.setting("study", "metric") == "macro_f1" and back.setting("cv", "folds") is None
    assert StudyRecord.of(optuna.create_study()) == StudyRecord()


def test_trial_record_fields_and_unknown_names() -> None:
    study = optuna.create_study()
    trial = study.ask()
    records.write(trial, preset="net6", epoch_seconds=(1.0, 2.0), cv_best=0.5)
    frozen = study.tell(trial, 0.5)
    r = TrialRecord.of(frozen)
    assert (r.preset, r.epoch_seconds, r.cv_best) == ("net6", (1.0, 2.0), 0.5)
    with pytest.raises(ValueError, match="not fields of TrialRecord"):
        records.attrs(nonsense=1)
    assert records.queued_attrs(preset=None, seed=4) == {"seed": 4}
