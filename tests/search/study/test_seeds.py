"""Seeds come from numpy's SeedSequence: the same study seed repeats a study; a re-queued trial keeps its seed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from search.run.data import DataContext
from search.run.objective import make_objective
from search.run.queue import requeue_trial
from search.run.runner import RunOptions, run_study
from search.study.definition import load_study_def
from search.study.records import TrialRecord
from search.study.seeds import derive, final_seed, sampler_seed, trial_seed
from space.search_space import SearchSpace

REPO = Path(__file__).resolve().parents[3]


def test_seeds_are_stable_across_processes_and_streams_apart() -> None:
    code = ("from search.study.seeds import trial_seed, final_seed, sampler_seed\n"
            "print(trial_seed(7, 3), final_seed(7, 0), sampler_seed(7, worker=False))")
    runs = {subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout for _ in range(2)}
    assert runs == {f"{trial_seed(7, 3)} {final_seed(7, 0)} {sampler_seed(7, worker=False)}\n"}  # no salted hash()
    seeds = {trial_seed(0, n) for n in range(200)} | {final_seed(0, i) for i in range(20)}
    assert len(seeds) == 220 and all(0 <= s < 2**31 for s in seeds)
    assert trial_seed(0, 1) != trial_seed(1, 1)
    with pytest.raises(ValueError, match=">= 0"):
        derive(-1, 1)


def _run(tmp: Path, twin: Path, cache: Path) -> list[optuna.trial.FrozenTrial]:
    defn = load_study_def("anklealign", ["study.name=repeat", "training.max_epochs=2", "space.image_size=[16]",
                                         "cv.folds=2", 'study.enqueue_presets=["net6"]', "training.deterministic=true",
                                         f'data.source="{twin}"', "study.seed=11"])
    url = f"sqlite:///{tmp / 'study.db'}"
    try:
        run_study(defn, RunOptions(trials=5, storage_url=url, run_dir=tmp, device="cpu", cache_dir=cache,
                                   show_progress=False))
    finally:
        torch.use_deterministic_algorithms(False)
    return optuna.load_study(study_name="repeat", storage=url).trials


@pytest.mark.slow
def test_the_same_study_seed_repeats_the_first_five_trials(tmp_path: Path, small_twin: Path,
                                                           data_cache: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = _run(tmp_path / "a", small_twin, data_cache), _run(tmp_path / "b", small_twin, data_cache)
    assert len(first) == len(second) == 5
    for a, b in zip(first, second, strict=True):
        assert a.params == b.params  # the sampler's proposals (four after the seed net)
        assert (a.state, a.value, a.intermediate_values) == (b.state, b.value, b.intermediate_values)
        assert TrialRecord.of(a).seed == TrialRecord.of(b).seed
    assert len({tuple(sorted(t.params.items())) for t in first}) == 5


def test_a_requeued_trial_trains_with_its_first_seed(small_twin: Path, data_cache: Path) -> None:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    space = SearchSpace.from_dict({"image_size": [16], "n_blocks": [2, 2]})
    data = DataContext(source=str(small_twin), device=torch.device("cpu"), folds=2, seed=0, cache_dir=data_cache)
    objective = make_objective(data=data, space=space, max_epochs=1, metric="macro_f1", study_seed=5)
    study.optimize(objective, n_trials=1)
    first = study.trials[0]
    assert TrialRecord.of(first).seed == trial_seed(5, 0)
    # Its worker died: the trial failed and its parameters were queued again (a new trial number).
    requeue_trial(study, first)
    retry = study.trials[1]
    assert retry.state == TrialState.WAITING and TrialRecord.of(retry).seed == trial_seed(5, 0)
    study.optimize(objective, n_trials=1)
    done = study.trials[1]
    assert done.number == 1 and done.params == first.params
    assert TrialRecord.of(done).seed == trial_seed(5, 0) != trial_seed(5, 1)
    assert done.value == first.value  # same parameters, same seed: the same training
