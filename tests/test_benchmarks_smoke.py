"""The benchmark scripts still run: one tiny pipeline case and the GPU script's no-GPU exit.

Benchmarks are not tests: this checks that they start, run and report the agreed keys, never speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CASE_KEYS = {"model", "image_size", "ours_images_per_s", "compute_only_images_per_s", "pil_loader_images_per_s",
             "pil_loader_w0_images_per_s", "ratio_vs_compute", "ratio_vs_pil_loader", "pass_vs_compute",
             "pass_vs_pil_loader"}


def test_pipeline_quick_json_reports_every_case_key(small_twin: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "pipeline.py"), "--json", "--quick", "--twin", str(small_twin),
         "--cases", "net6@32", "--rounds", "1"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["benchmark"] == "pipeline"
    assert out["goals"] == {"ratio_vs_compute": 0.9, "ratio_vs_pil_loader": 3.0}
    [case] = out["cases"]
    assert CASE_KEYS <= set(case), CASE_KEYS - set(case)
    assert (case["model"], case["image_size"]) == ("net6", 32)
    assert all(case[k] > 0 for k in CASE_KEYS if k.endswith("_per_s"))
    assert case["ratio_vs_compute"] == pytest.approx(
        case["ours_images_per_s"] / case["compute_only_images_per_s"], rel=0.01)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the exit without a GPU")
def test_gpu_jobs_exits_cleanly_without_a_gpu() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_jobs.py")], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no CUDA device" in proc.stdout


def test_twin_learnability_quick_json_reports_chance_ceiling_and_recipes() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "twin_learnability.py"), "--quick", "--json"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    [level] = out["results"]
    assert level["difficulty"] == "realistic" and level["eval_images"] == 30
    assert 0 < level["chance"]["value"] < level["ceiling_eval"]["value"] <= 1
    [(name, recipe)] = level["recipes"].items()
    assert name.startswith("net6") and 0 <= recipe["eval_macro_f1"]["value"] <= 1
    lo, hi = recipe["eval_macro_f1"]["ci95"]
    assert lo <= recipe["eval_macro_f1"]["value"] <= hi
    assert set(level["goals"]) == {"best closes >= 60 % of chance->ceiling", "under 10 min"}  # one recipe only


def test_search_quality_quick_json_reports_both_configs(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search_quality.py"), "--quick", "--json",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["benchmark"] == "search_quality" and out["quick"] is True
    assert [r["config"] for r in out["rows"]] == ["new", "old"]
    for row in out["rows"]:
        assert {"model", "ensemble", "baselines"} <= set(row["eval"])
        assert {"default", "net6", "stratified_random"} <= set(row["eval"]["baselines"])
        assert row["cpu_minutes"] > 0 and 0 < row["ceiling"] <= 1
        assert row["winner"]["optimism"] == pytest.approx(row["winner"]["cv_value"]
                                                          - row["eval"]["ensemble"]["macro_f1"]["mean"])
        # the winner's out-of-fold predictions scored against the noisy labels and the twin's true classes
        w = row["winner"]
        assert 0 <= w["oof_vs_noisy"] <= 1 and 0 <= w["oof_vs_true"] <= 1 and 0 < w["label_noise"] < 0.5
        assert w["images"] > 0
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2  # each row kept as it ends


def test_task_suite_quick_runs_its_arms_resumes_and_tabulates(tmp_path: Path) -> None:
    """A tiny flip task through the default command and a greedy refit; a second call runs nothing. (The oracle arm
    is the default command with a narrowed space: the projection's own tests cover it.)"""
    results = tmp_path / "suite.jsonl"
    argv = [sys.executable, str(ROOT / "benchmarks" / "task_suite.py"), "--quick", "--tasks", "flip", "--seeds", "3",
            "--arms", "tpe,greedy", "--work", str(tmp_path / "work"), "--results", str(results), "--json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["arm"] for r in rows] == ["tpe", "greedy"]
    assert all(len(r["truth"]) == 60 and all(len(p) == 60 for p in r["models"].values()) for r in rows)
    assert {"exported", "default", "net0"} <= set(rows[0]["models"])
    assert 'final.ensemble="greedy"' in rows[1]["settings"]
    [summary] = json.loads(proc.stdout)
    assert {"exported", "default", "greedy"} <= set(summary["scores"])
    for name, gain in summary["exported_minus"].items():  # paired: exported minus each arm, inside its interval
        lo, hi = gain["ci95"]
        assert lo - 1e-9 <= gain["diff"] <= hi + 1e-9, name
        assert gain["diff"] == pytest.approx(summary["scores"]["exported"]["macro_f1"]
                                             - summary["scores"][name]["macro_f1"], abs=2e-4)
    again = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert again.returncode == 0 and "task suite:" not in again.stderr  # every arm is on record: nothing re-run
    assert len(results.read_text().splitlines()) == 2


def test_task_suite_refuses_twin_seeds_that_earlier_decisions_used(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "task_suite.py"), "--tasks", "twin", "--seeds",
                           "1,201", "--work", str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2 and "[1]" in proc.stderr and "development" in proc.stderr


def test_suite_tasks_are_made_from_their_seed_alone(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import suite_tasks
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from PIL import Image

    a, held = suite_tasks.make_task("colour", 5, tmp_path / "a", quick=True)
    b, _ = suite_tasks.make_task("colour", 5, tmp_path / "b", quick=True)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 150 and {p.parts[0] for p in files} == {"train", "test", "heldout"}
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert held == a / "heldout" and sorted(d.name for d in held.iterdir()) == ["a", "b", "c"]
    # The hue carries the class, luma does not: in gray the classes' blobs have one distribution.
    means = {c: np.mean([np.asarray(Image.open(f).convert("L"), float).mean() for f in (a / "train" / c).iterdir()])
             for c in ("a", "b", "c")}
    assert max(means.values()) - min(means.values()) < 4
