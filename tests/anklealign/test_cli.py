"""``python -m anklealign``: exit codes, one-line errors, JSON keys, the synth subcommand."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

import anklealign
from anklealign.cli import main

from .conftest import MINI_EXPECTED, write_zip

REQUIRED_KEYS = ["kind", "synthetic", "images_found", "train", "test", "duplicate_groups", "leakage_removed",
                 "skipped"]


def test_inspect_json(mini_tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(mini_tree), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report)[:8] == REQUIRED_KEYS
    assert {k: report[k] for k in MINI_EXPECTED} == MINI_EXPECTED
    assert set(report["train"]) == {"images", "class_counts"}
    assert set(report["test"]) == {"listed", "images", "majority_counts", "ties", "annotators"}
    assert all(set(entry) == {"path", "reason"} for entry in report["skipped"])


def test_inspect_human_summary(mini_tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(mini_tree)]) == 0
    out = capsys.readouterr().out
    assert "train              4 images (pronation 2, neutral 1, supination 1)" in out
    assert "no label (2)\n    anklealign/A1B2C3/p4.jpg" in out
    assert "anklealign/sample/s.jpg" in out


@pytest.mark.parametrize(("argv", "needle"), [
    (["inspect", "{tmp}/missing"], "no such file or folder"),
    (["inspect", "{tmp}/escape.zip"], "points outside the archive"),
])
def test_data_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                          needle: str) -> None:
    write_zip(tmp_path / "escape.zip", {"../x.jpg": b"x"})
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert main([*argv, "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bogus"])
    assert info.value.code == 2


def test_synth_calls_the_generator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    calls = []

    def fake(out: Path, **kwargs: object) -> SimpleNamespace:
        calls.append((out, kwargs))
        return SimpleNamespace(root=out, difficulty=SimpleNamespace(name="hard"), twin={})

    monkeypatch.setattr(anklealign, "synth", fake)
    assert main(["synth", "--out", str(tmp_path / "t.zip"), "--zip", "--seed", "3", "--scale", "0.5"]) == 0
    assert calls == [(tmp_path / "t.zip", {"seed": 3, "scale": 0.5, "as_zip": True, "full_size": False,
                                           "difficulty": "realistic", "eval_n": 0, "eval_prior": "train"})]
    assert "wrote the synthetic twin" in capsys.readouterr().out
    assert main(["synth", "--out", str(tmp_path / "u"), "--difficulty", "0.8", "--eval", "12", "--eval-prior",
                 "test"]) == 0
    assert calls[-1][1] | {"seed": 0} == {"seed": 0, "scale": 1.0, "as_zip": False, "full_size": False,
                                          "difficulty": "0.8", "eval_n": 12, "eval_prior": "test"}


def test_synth_writes_the_twin_its_figures_and_the_eval_draw(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--out", str(tmp_path), "--scale", "0.2", "--difficulty", "hard", "--eval", "9"]) == 0
    out = capsys.readouterr().out
    assert "difficulty hard" in out and "ceiling macro-F1" in out and "eval draw: 9 images" in out
    twin = json.loads((tmp_path / "twin.json").read_text())
    assert twin["difficulty"]["name"] == "hard" and twin["eval"]["images"] == 9
    assert sum(len(list((tmp_path / "eval" / c).glob("*.png"))) for c in anklealign.CLASSES) == 9


def test_synth_sheet_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--sheet", str(tmp_path / "levels.png")]) == 0
    with Image.open(tmp_path / "levels.png") as sheet:
        assert sheet.size[1] > 3 * 100   # one row per named level
    assert main(["synth", "--sheet", str(tmp_path / "levels.jpg")]) == 2
    assert main(["synth"]) == 2
    assert "--out DIR" in capsys.readouterr().err
    # Twin options without a twin are refused, and a refused twin writes no sheet either.
    assert main(["synth", "--sheet", str(tmp_path / "a.png"), "--difficulty", "bogus", "--eval", "4"]) == 2
    assert "--difficulty, --eval describe the twin" in capsys.readouterr().err
    (tmp_path / "taken" / "anklealign").mkdir(parents=True)
    assert main(["synth", "--sheet", str(tmp_path / "b.png"), "--out", str(tmp_path / "taken")]) == 2
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "b.png").exists()


@pytest.mark.parametrize(("extra", "needle"), [(["--scale", "9"], "scale must be"), ([], "already exists"),
                                               (["--difficulty", "medium"], "difficulty must be easy"),
                                               (["--difficulty", "1.5"], "difficulty must be easy"),
                                               (["--eval", "-1"], "eval must be")])
def test_synth_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                                    needle: str) -> None:
    (tmp_path / "anklealign").mkdir()
    assert main(["synth", "--out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1


def test_public_synth_is_the_function_after_importing_every_module() -> None:
    for module in pkgutil.walk_packages(anklealign.__path__, "anklealign."):
        if module.name != "anklealign.__main__":   # that one runs the CLI
            importlib.import_module(module.name)   # a submodule named like a public name would rebind it
    assert callable(anklealign.synth) and not isinstance(anklealign.synth, types.ModuleType)


def test_module_entry_point(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "anklealign", "inspect", str(tmp_path / "nothing")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
