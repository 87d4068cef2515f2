"""The Python API: the same run, final step, score and prediction as the command line."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

import search.api as api
from search.cli import main
from search.study.errors import SearchError
from space import TrialCfg
from space.search_space import SearchSpace, to_params

TINY = {"training.max_epochs": 2, "space.image_size": [16], "cv.folds": 2, "final.seeds": 1, "final.bootstrap": 20,
        "study.enqueue_presets": ["default", "net0"], "final.baseline_presets": ["default"],
        "sampler.name": "random", "study.name": "api-run"}


@pytest.mark.slow
def test_run_score_load_and_predict_from_python(small_twin: Path, tmp_path: Path, data_cache: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ANKLEALIGN_CACHE", str(data_cache))
    result = api.run(small_twin, trials=2, settings=TINY, out=tmp_path / "runs")
    assert result.study == "api-run" and result.run_dir == tmp_path / "runs" / "api-run"
    assert result.report is not None and result.report.is_file()
    assert result.metrics == json.loads((result.run_dir / "best" / "metrics.json").read_text())
    assert (result.run_dir / "best" / "summary.txt").is_file()
    assert api.summary(result).startswith(f"exported: trial {result.metrics['trial']}")
    # The CLI sees the run the API made, and marks the exported trial.
    capsys.readouterr()
    assert main(["best", "--study", "api-run", "--out", str(tmp_path / "runs")]) == 0
    assert "EXPORTED" in capsys.readouterr().out
    # best --toml: a [space] block that holds exactly the exported trial's config.
    assert main(["best", "--study", "api-run", "--out", str(tmp_path / "runs"), "--toml"]) == 0
    text = capsys.readouterr().out
    assert f"# trial {result.metrics['trial']} of study api-run, exported by the final step" in text
    space = SearchSpace.from_dict(tomllib.loads(text)["space"])
    to_params(TrialCfg.from_dict(result.metrics["config"]), space)
    # Prediction and scoring.
    images = sorted(small_twin.rglob("*.jpg"))[:3]
    predictions = api.load_model(result.run_dir / "best").predict(images)
    assert [p.path for p in predictions] == images and all(p.label in result.metrics["classes"] for p in predictions)
    assert all(abs(sum(p.probabilities.values()) - 1) < 1e-4 for p in predictions)
    with pytest.raises(SearchError, match="no model folder"):
        api.load_model(tmp_path / "nowhere")


def test_definition_takes_settings_as_a_mapping_or_as_set_strings() -> None:
    a = api.definition(settings={"cv.folds": 4, "space.color": ["rgb"], "final.ensemble": "greedy"}, trials=7)
    b = api.definition(settings=["cv.folds=4", 'space.color=["rgb"]', 'final.ensemble="greedy"'], trials=7)
    assert a == b and a.cv.folds == 4 and a.space["color"] == ["rgb"] and a.study.trials == 7
