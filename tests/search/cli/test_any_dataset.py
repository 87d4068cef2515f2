"""Any ``train/<class>/`` + ``test/<class>/`` folder works through every step, whatever its class count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import anklealign
from search.cli import main
from search.study.definition import name_from_data

TINY = ["--set", "training.max_epochs=2", "--set", "space.image_size=[16]", "--set", "cv.folds=2",
        "--set", "final.seeds=2", "--set", "final.bootstrap=30", "--set", 'study.enqueue_presets=["net6"]',
        "--set", 'final.baseline_presets=["net6", "net3"]', "--set", "sampler.name=random"]


def _image_folder(root: Path, classes: list[str], *, train: int, test: int, seed: int) -> Path:
    """Noise pictures whose brightness says the class (distinct pictures: no duplicate groups)."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                level = 20 + 200 * k / max(len(classes) - 1, 1)
                pixels = np.clip(rng.normal(level, 25, (24, 24, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{i}.png")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("classes", [["cat", "dog"], [f"c{i}" for i in range(10)]], ids=["2-class", "10-class"])
def test_run_final_export_predict_on_any_class_count(tmp_path: Path, classes: list[str],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    k = len(classes)
    data = _image_folder(tmp_path / f"shapes{k}", classes, train=8, test=3, seed=k)
    out = tmp_path / "runs"
    capsys.readouterr()
    assert main(["run", "--data", str(data), "--out", str(out), "--trials", "2", *TINY]) == 0
    printed = capsys.readouterr()
    # Results first: after the trial lines, a short summary (exported trial, test score, paths); no progress-bar
    # debris when the output is not a terminal; no AnkleAlign wording for a folder of other pictures.
    lines = printed.out.splitlines()
    last_trial = max(i for i, line in enumerate(lines) if line.startswith("trial "))
    assert 4 <= len(lines) - last_trial - 1 <= 12, lines[last_trial:]
    assert lines[last_trial + 1].startswith("exported: trial ") and "real data" in lines[last_trial + 2]
    assert "\r" not in printed.err and "\r" not in printed.out
    assert "seed net" not in printed.out and "reference net" in printed.out

    # The study is named after the data: the folder's stem and its fingerprint.
    name = name_from_data(str(data), anklealign.inspect(data).fingerprint)
    assert [p.name for p in out.iterdir()] == [name] and name.startswith(f"shapes{k}-")
    best = out / name / "best"
    metrics = json.loads((best / "metrics.json").read_text())
    assert metrics["classes"] == classes and metrics["classes_absent"] == []
    for block in (metrics["test"], metrics["ensemble"], metrics["baselines"]["net6"], metrics["baselines"]["net3"]):
        assert np.asarray(block["confusion"]).shape == (k, k)
        assert np.asarray(block["confusion"]).sum() == pytest.approx(3 * k)  # every test image, once
        assert list(block["per_class"]) == classes
    assert metrics["baselines"]["net6"]["config"]["model"]["num_classes"] == k
    assert metrics["annotators"]["available"] is False  # one label per image: no human baseline
    card = json.loads((best / "model_card.json").read_text())
    assert card["classes"] == classes and card["config"]["model"]["num_classes"] == k
    assert card["onnx"]["exported"] is True
    assert (out / name / "report.html").is_file() and (out / name / "trials.csv").is_file()

    assert main(["-q", "export", "--study", name, "--out", str(out), "--trial", "1",
                 "--to", str(tmp_path / "exported")]) == 0
    exported = json.loads((tmp_path / "exported" / "metrics.json").read_text())
    assert exported["trial"] == 1 and exported["classes"] == classes
    capsys.readouterr()

    for extra in ([], ["--onnx"]):
        assert main(["predict", "--model", str(best), "--json", *extra, str(data / "test")]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert len(rows) == 3 * k
        assert all(r["class"] in classes and list(r["probabilities"]) == classes for r in rows)
        assert all(sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-4) for r in rows)
