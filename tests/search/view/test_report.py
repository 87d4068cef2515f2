"""report.html and trials.csv of a finished study (built directly with optuna, no training)."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path

import pytest

from search.cli import main
from search.view.figures import metrics_rows
from search.view.report import CSV_COLUMNS, write_report

# The suite imports test files by path (--import-mode=importlib): load the sibling helper the same way.
_spec = importlib.util.spec_from_file_location("finished_study", Path(__file__).with_name("finished_study.py"))
finished_study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(finished_study)
build_study, METRICS_JSON = finished_study.build_study, finished_study.METRICS_JSON

SECTIONS = {
    "summary": "Result",
    "data": "Data and study",
    "trials": "Trials",
    "history": "Optimisation history",
    "curves": "Learning curves and pruning",
    "importances": "Parameter importances",
    "parallel": "Parallel coordinates",
    "presets": "Seed nets versus the best trial",
    "test": "Test set metrics",
}
FIGURELESS = {"summary", "trials"}  # text, the confusion image and a table (the loss curve needs train_loss)


def _sections(page: str) -> dict[str, str]:
    """section id -> its HTML."""
    return dict(re.findall(r'<section id="(\w+)">(.*?)</section>', page, flags=re.S))


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    out = tmp_path_factory.mktemp("runs")
    study = build_study(out)
    run_dir = out / study.study_name
    (run_dir / "best").mkdir()
    (run_dir / "best" / "metrics.json").write_text(json.dumps(METRICS_JSON))
    path = write_report(study, run_dir)
    return study, run_dir, path.read_text(encoding="utf-8")


def test_report_has_every_section_with_one_figure_and_the_synthetic_banner(full) -> None:  # noqa: ANN001
    study, run_dir, page = full
    assert (run_dir / "report.html").is_file()
    assert "SYNTHETIC TWIN — not real data" in page
    assert "CV (training labels) macro-F1 ceiling 0.892 (chance 0.333" in page  # the twin's known limit
    sections = _sections(page)
    assert list(sections) == list(SECTIONS)
    for sid, title in SECTIONS.items():
        assert f"<h2>{title}" in sections[sid]
        assert sections[sid].count('class="plotly-graph-div"') == (0 if sid in FIGURELESS else 1), sid
    # plotly.js once, inline: the report opens offline
    assert page.count("plotly.js v") == 1
    assert "<script src=" not in page and "cdn.plot.ly/plotly" not in page


def test_report_shows_seed_nets_pruning_and_test_intervals(full) -> None:  # noqa: ANN001
    study, _, page = full
    sections = _sections(page)
    for preset in ("baseline", "net0", "net3", "net6"):
        assert f"{preset} (#" in sections["presets"]
    assert "pruned" in sections["curves"]
    test = sections["test"]
    assert "0.610 [0.450, 0.750]" in test  # mean [ci95] of the model's macro_f1
    for system in ("model (mean of seeds)", "ensemble (exported model)", "baseline: train_majority",
                   "baseline: net6", "human annotators (bars: min–max)"):
        assert f"<th>{system}</th>" in test
    assert "net3" not in test  # a skipped baseline has no scores
    assert "test images: 49" in test


def test_trials_csv_has_a_row_per_trial_with_attrs_and_params(full) -> None:  # noqa: ANN001
    study, run_dir, _ = full
    with open(run_dir / "trials.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    trials = study.get_trials(deepcopy=False)
    assert [int(r["number"]) for r in rows] == [t.number for t in trials]
    assert list(rows[0])[: len(CSV_COLUMNS)] == list(CSV_COLUMNS)
    assert "params_n_blocks" in rows[0] and "params_lr" in rows[0]
    by_number = {int(r["number"]): r for r in rows}
    for t in trials:
        r = by_number[t.number]
        assert r["state"] == t.state.name
        assert r["preset"] == t.user_attrs.get("preset", "")
        assert int(r["params_count"]) == t.user_attrs["params_count"]
        assert r["params_n_blocks"] == str(t.params["n_blocks"])
        if t.state.name == "PRUNED":
            assert r["prune_reason"].startswith("pruned at epoch")
        if t.state.name == "COMPLETE":
            assert float(r["value"]) == pytest.approx(t.value)


def test_a_one_trial_study_on_real_data_still_reports(tmp_path: Path) -> None:
    study = build_study(tmp_path, n_trials=1)
    study.set_user_attr("data", {"kind": "imagefolder", "synthetic": False, "source": "/data/feet",
                                 "note": "real data"})
    page = write_report(study, tmp_path / study.study_name).read_text(encoding="utf-8")
    sections = _sections(page)
    assert "SYNTHETIC TWIN" not in page and "/data/feet" in sections["data"]
    assert "Too few complete trials (1)" in sections["importances"]
    assert "No test-set metrics yet" in sections["test"]
    assert sections["history"].count('class="plotly-graph-div"') == 1


@pytest.mark.parametrize("metrics, expect", [
    ({}, []),
    ({"test": "not a dict", "baselines": ["x"]}, []),
    ({"test": {"macro_f1": {"mean": 0.5}}}, [("model (mean of seeds)", {"macro_f1": (0.5, None, None)})]),
    ({"test": {"accuracy": {"mean": 0.8, "ci95": [0.7, 0.9]}, "n_images": 49},
      "baselines": {"constant": {"accuracy": 0.857}, "broken": "x", "skipped": {"skipped": "why"}}},
     [("model (mean of seeds)", {"accuracy": (0.8, 0.7, 0.9)}),
      ("baseline: constant", {"accuracy": (0.857, None, None)})]),
    ({"test": {"macro_f1": {"mean": 0.5}}, "annotators": {"per_annotator": {"A1": {"macro_f1": {"mean": 0.6}}}}},
     [("model (mean of seeds)", {"macro_f1": (0.5, None, None)}),
      ("human annotators / per_annotator / A1", {"macro_f1": (0.6, None, None)})]),
    ({"test": {"accuracy": {"mean": 0.8, "ci95": None}}, "annotators": {"accuracy": {"mean": 0.7, "min": 0.5,
                                                                                      "max": 0.9}}},
     [("model (mean of seeds)", {"accuracy": (0.8, None, None)}),
      ("human annotators (bars: min–max)", {"accuracy": (0.7, 0.5, 0.9)})]),
])
def test_metrics_json_is_read_tolerantly(metrics: dict, expect: list) -> None:
    rows, _ = metrics_rows(metrics)
    assert rows == expect


def test_cli_report_writes_both_files_and_prints_their_paths(full, capsys: pytest.CaptureFixture) -> None:  # noqa: ANN001
    _, run_dir, _ = full
    (run_dir / "report.html").unlink()
    assert main(["report", "--study", "anklealign", "--out", str(run_dir.parent)]) == 0
    out = capsys.readouterr().out
    assert str(run_dir / "report.html") in out and str(run_dir / "trials.csv") in out
    assert (run_dir / "report.html").is_file()


def test_the_report_opens_with_the_result_and_a_sortable_table_marking_the_exported_trial(full) -> None:  # noqa: ANN001
    study, _, page = full
    sections = _sections(page)
    summary = sections["summary"]
    assert "<b>exported</b>: trial 0" in summary and "macro-F1 0.630 [0.470, 0.770]" in summary
    assert "SYNTHETIC TWIN" in summary  # which data, right next to the score
    table = sections["trials"]
    assert table.count("<tr") == len(study.get_trials()) + 1 and 'onclick="sortBy(this)"' in table
    # the header counts trials that ran, by state; waiting ones are not "run"
    assert re.search(r"\d+ trials run \(\d+ complete", page)


def test_summary_and_loss_curve_of_a_real_final_step(finished_run: Path) -> None:
    from search.view.text import summary_lines

    run_dir = finished_run / "anklealign"
    m = json.loads((run_dir / "best" / "metrics.json").read_text())
    lines = summary_lines(m, run_dir=run_dir)
    assert len(lines) <= 9 and lines[0].startswith(f"exported: trial {m['trial']}")
    assert f"{m['ensemble']['macro_f1']['mean']:.3f}" in lines[1]
    assert (run_dir / "best" / "summary.txt").is_file()  # the full table, beside the model
    assert "human annotators" in (run_dir / "best" / "summary.txt").read_text()
    page = (run_dir / "report.html").read_text()
    summary = _sections(page)["summary"]
    assert 'alt="confusion matrix"' in summary and summary.count('class="plotly-graph-div"') == 1  # the loss curve
