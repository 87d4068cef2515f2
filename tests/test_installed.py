"""The installed package works from any folder: the study definitions ship inside it.

A wheel of the project is built and installed (without its dependencies, which the test's interpreter has)
into a temporary folder that goes first on ``PYTHONPATH``; every command runs from another, empty folder, so
nothing of the repository can be found by accident.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "training.max_epochs=1", "--set", "space.image_size=[16]", "--set", "cv.folds=2",
        "--set", 'study.enqueue_presets=["net0"]', "--set", "final.seeds=1", "--set", "final.bootstrap=20",
        "--set", 'final.baseline_presets=["net0"]', "--set", "study.name=anywhere"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel installed into a folder of its own (returned; put it first on PYTHONPATH)."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "dist"), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    [wheel] = (tmp / "dist").glob("*.whl")
    site = tmp / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                           str(wheel)], capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stderr[-2000:]
    assert (site / "search" / "studies" / "default.toml").is_file()  # the definitions are package data
    return site


def _cli(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_every_command_works_from_any_folder(installed: Path, small_twin: Path, tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _cli(installed, work, "search", "--help")
    assert where.returncode == 0
    origin = subprocess.run([sys.executable, "-c", "import search; print(search.__file__)"], cwd=work,
                            env={**os.environ, "PYTHONPATH": str(installed)}, capture_output=True, text=True)
    assert origin.stdout.strip().startswith(str(installed))  # the installed copy, not the repository's
    run = _cli(installed, work, "search", "-q", "run", "--data", str(small_twin), "--trials", "1", *TINY)
    assert run.returncode == 0, run.stderr[-2000:]
    best_dir = work / "runs" / "anywhere" / "best"
    assert (best_dir / "model.pt").is_file()
    for args in (("best", "--study", "anywhere"), ("report", "--study", "anywhere"),
                 ("export", "--study", "anywhere", "--to", str(tmp_path / "exported"))):
        done = _cli(installed, work, "search", *args)
        assert done.returncode == 0, (args, done.stderr[-2000:])
    image = next(small_twin.rglob("*.jpg"))
    predicted = _cli(installed, work, "search", "predict", "--model", str(tmp_path / "exported"), str(image))
    assert predicted.returncode == 0 and image.name in predicted.stdout, predicted.stderr[-2000:]
    journal = tmp_path / "journal.log"
    worker = _cli(installed, work, "search", "-q", "worker", "--data", str(small_twin), "--storage",
                  f"journal:///{journal}", "--trials", "1", *TINY[:-2], "--set", "study.name=anywhere-workers")
    assert worker.returncode == 0, worker.stderr[-2000:]


@pytest.mark.slow
def test_a_studies_folder_in_the_working_folder_wins(installed: Path, tmp_path: Path) -> None:
    work = tmp_path / "mine"
    (work / "studies").mkdir(parents=True)
    text = (ROOT / "search" / "studies" / "default.toml").read_text(encoding="utf-8")
    (work / "studies" / "default.toml").write_text(text.replace('name = ""', 'name = "my-own"', 1))
    shown = _cli(installed, work, "search", "best", "--study", "default")
    assert "my-own" in shown.stdout + shown.stderr
