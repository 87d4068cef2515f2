"""The final step under faults: SIGKILL mid-way, a full disk; a damaged study folder gives one clear message."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch

from search.cli import main
from search.final import testset

ROOT = Path(__file__).resolve().parents[3]
SMALL = ["--set", "final.seeds=1", "--set", "final.bootstrap=20", "--set", "final.baseline_presets=[]"]

# Runs ``python -m search`` with one function replaced by a SIGKILL of the process itself: the crash lands at
# a known point (while retraining, or while writing the ONNX file), however fast the machine is.
_KILL_AT = """
import os, signal, importlib, runpy
module, name = {target!r}
m = importlib.import_module(module)
def _die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
setattr(m, name, _die)
runpy.run_module("search", run_name="__main__", alter_sys=True)
"""


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "runs"
    shutil.copytree(finished_run, out)
    return out


def test_a_full_disk_during_the_final_step_is_one_error_and_leaves_the_outputs(run_copy: Path,
                                                                               monkeypatch: pytest.MonkeyPatch,
                                                                               capsys: pytest.CaptureFixture[str]
                                                                               ) -> None:
    import search.final.export as export

    best = run_copy / "anklealign" / "best"
    before = _digest(best)

    def full(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export.torch, "save", full)
    assert main(["finalize", "--study", "anklealign", "--out", str(run_copy), *SMALL]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "the disk is full" in errors[0] and "unchanged" in errors[0], err
    assert "Traceback" not in err
    assert _digest(best) == before  # the previous model, metrics and figures, byte for byte
    assert not list(best.parent.glob(".best.*"))  # no staging folder left behind
    reads = testset.test_reads(run_copy / "anklealign")
    assert reads[-1]["interrupted"] is True  # the labels were read; no outputs came of it


@pytest.mark.parametrize("target", [("search.final.retrain", "train_model"), ("search.final.export", "_export_onnx")],
                         ids=["retraining", "export"])
def test_a_final_step_killed_midway_completes_when_run_again(run_copy: Path, target: tuple[str, str], spawn,  # noqa: ANN001
                                                            data_cache: Path) -> None:
    best = run_copy / "anklealign" / "best"
    before = _digest(best)
    args = ["finalize", "--study", "anklealign", "--out", str(run_copy), *SMALL]
    env = {**os.environ, "ANKLEALIGN_CACHE": str(data_cache)}
    killed = spawn([sys.executable, "-c", _KILL_AT.format(target=target), *args], env=env)
    killed.proc.wait(timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr()[-2000:]
    assert _digest(best) == before  # nothing half-written: the old outputs are whole and unchanged
    again = spawn([sys.executable, "-m", "search", *args], env=env)
    again.proc.wait(timeout=300)
    assert again.returncode == 0, again.stderr()[-2000:]
    metrics = json.loads((best / "metrics.json").read_text())
    assert metrics["seeds"] and len(metrics["seeds"]) == 1  # the new final step's, whole
    torch.load(best / "model.pt", weights_only=True)
    assert not list(best.parent.glob(".best.*"))
    reads = testset.test_reads(run_copy / "anklealign")
    assert reads[-1]["interrupted"] is False
    if target[1] == "_export_onnx":  # killed after the test labels were read: that read is on record, interrupted
        assert reads[-2]["interrupted"] is True


def test_test_reads_tell_an_interrupted_read_from_a_complete_one(tmp_path: Path) -> None:
    testset.log_test_read(tmp_path, {"command": "run", "read_id": "a"})
    testset.log_test_read(tmp_path, {"command": "finalize", "read_id": "b"})
    testset.complete_test_read(tmp_path, "b")
    testset.log_test_read(tmp_path, {"command": "score"})  # a score's read has no outputs to wait for
    reads = testset.test_reads(tmp_path)
    assert [(r["command"], r.get("interrupted")) for r in reads] == [("run", True), ("finalize", False),
                                                                    ("score", None)]


@pytest.mark.parametrize("damage", ["study.toml", "study.db"])
def test_a_damaged_study_folder_is_one_clear_message(run_copy: Path, damage: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    target = run_copy / "anklealign" / damage
    if damage == "study.toml":
        target.write_text(target.read_text()[:40])  # half written
    else:
        target.write_bytes(b"this is not a database" * 100)
        for extra in ("study.db-wal", "study.db-shm"):
            (run_copy / "anklealign" / extra).unlink(missing_ok=True)
    study = str(target) if damage == "study.toml" else "anklealign"  # the run's own definition, read as a file
    code = main(["best", "--study", study, "--out", str(run_copy)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and str(target.name) in errors[0], err


def test_a_run_killed_while_writing_its_report_gets_it_when_run_again(run_copy: Path, spawn,  # noqa: ANN001
                                                                      data_cache: Path, small_twin: Path) -> None:
    run_dir = run_copy / "anklealign"
    (run_dir / "report.html").unlink()
    args = ["run", "--data", str(small_twin), "--out", str(run_copy), "--set", "study.name=anklealign",
            "--set", "training.max_epochs=2", "--set", "space.image_size=[32]", "--set", "cv.folds=2",
            "--set", "final.seeds=1", "--set", "final.bootstrap=20", "--trials", "1", *SMALL]
    env = {**os.environ, "ANKLEALIGN_CACHE": str(data_cache)}
    # --no-final: the finished run goes straight to its report, where the kill lands
    killed = spawn([sys.executable, "-c", _KILL_AT.format(target=("search.cli.run", "write_report")), *args,
                    "--no-final"], env=env)
    killed.proc.wait(timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr()[-2000:]
    assert not (run_dir / "report.html").exists() and (run_dir / "best" / "metrics.json").is_file()
    again = spawn([sys.executable, "-m", "search", *args], env=env)
    again.proc.wait(timeout=300)
    assert again.returncode == 0, again.stderr()[-2000:]
    assert "nothing to do" in again.stdout() and (run_dir / "report.html").is_file()
    assert "</html>" in (run_dir / "report.html").read_text()  # whole
