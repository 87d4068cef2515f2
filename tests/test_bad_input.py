"""Bad input, table-driven: one readable line, a non-zero exit, no traceback, the study intact.

Each case runs the real CLI in a subprocess (as a user would) against a copy of a finished run,
then checks that the study database still opens with the same trials.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import pickle
import shutil
import socket
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--set", "study.name=anklealign", "--set", "training.max_epochs=2", "--set", "space.image_size=[32]",
        "--set", "cv.folds=2",
        "--set", "final.seeds=2", "--set", "final.bootstrap=50", "--set", "final.baseline_presets=[\"net6\"]"]


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Path, Path], list[str]]  # (work dir, run root) -> argv after "python -m"
    needle: str  # a word the one-line message must contain (case-insensitive)


def _write(p: Path, data: bytes | str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


def _zip(p: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(p, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return p


def _run(w: Path, out: Path, *extra: str) -> list[str]:
    return ["search", "run", "--out", str(out), "--trials", "3", "--no-final", *FAST, *extra]


def _toml(w: Path, text: str) -> str:
    base = (ROOT / "studies" / "default.toml").read_text()
    return str(_write(w / "bad.toml", base + "\n" + text if not text.startswith("!") else text[1:]))


class _Evil:
    def __reduce__(self):  # noqa: ANN204 - pickled code that would write a file if executed
        return (os.system, ("touch /tmp/anklealign-search-pwned",))


def _tampered_model(w: Path, out: Path) -> str:
    model = w / "tampered"
    shutil.copytree(out / "anklealign" / "best", model)
    with open(model / "model.pt", "wb") as fh:
        pickle.dump({"state_dicts": [_Evil()]}, fh)
    return str(model)


def _corrupt_model(w: Path, out: Path) -> str:
    model = w / "corrupt"
    shutil.copytree(out / "anklealign" / "best", model)
    (model / "model.pt").write_bytes(b"\x00garbage" * 10)
    return str(model)


def _bomb(w: Path) -> str:
    from PIL import Image

    # A tiny PNG that claims 20000 x 20000 pixels: decoding it would need 400 Mpx.
    p = w / "bomb.png"
    Image.new("L", (20000, 20000)).save(p, optimize=True)
    return str(p)


def _busy_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    _busy_port.sock = s  # type: ignore[attr-defined] - keep it open for the test
    return s.getsockname()[1]


CASES = [
    # data sources
    Case("missing data path", lambda w, o: _run(w, o, "--data", str(w / "nope.zip")), "no such file"),
    Case("empty folder", lambda w, o: _run(w, o, "--data", str((w / "empty").mkdir() or w / "empty")), "empty"),
    Case("empty file", lambda w, o: _run(w, o, "--data", str(_write(w / "empty.zip", b""))), "zip"),
    Case("corrupt zip", lambda w, o: _run(w, o, "--data", str(_write(w / "c.zip", b"PK\x03\x04garbage" * 50))),
         "zip"),
    Case("zip that is not AnkleAlign", lambda w, o: _run(w, o, "--data", str(_zip(w / "x.zip", {"a.txt": b"hi"}))),
         "anklealign"),
    Case("zip escaping with ../", lambda w, o: _run(
        w, o, "--data", str(_zip(w / "evil.zip", {"anklealign/../../evil.jpg": b"x", "anklealign/A.json": b"[]"}))),
        ".."),
    Case("inspect missing path", lambda w, o: ["anklealign", "inspect", str(w / "missing")], "no such file"),
    # study definitions
    Case("TOML syntax error", lambda w, o: _run(w, o, "--study", _toml(w, "![study\nname=")), "toml"),
    Case("TOML unknown key",
         lambda w, o: _run(w, o, "--study", _toml(w, "![study]\nname = 'anklealign'\n[cv]\nshuffle = true")),
         "cv.shuffle"),
    Case("TOML wrong type", lambda w, o: _run(w, o, "--set", "cv.folds=\"three\""), "cv.folds"),
    Case("empty range", lambda w, o: _run(w, o, "--set", "space.lr=[0.1, 0.001]"), "lr"),
    Case("empty choices", lambda w, o: _run(w, o, "--set", "space.batch_size=[]"), "batch_size"),
    Case("unknown preset", lambda w, o: _run(w, o, "--set", "study.enqueue_presets=[\"net9\"]"), "net9"),
    Case("unknown sampler", lambda w, o: _run(w, o, "--set", "sampler.name=cmaes2"), "sampler.name"),
    Case("unknown pruner", lambda w, o: _run(w, o, "--set", "pruner.name=bogus"), "pruner.name"),
    # (run --study NEWNAME starts a new study; the commands that read one say what exists)
    Case("unknown study name", lambda w, o: ["search", "best", "--out", str(o), "--study", "no-such-study"],
         "no study definition"),
    Case("malformed --set", lambda w, o: _run(w, o, "--set", "folds"), "section.key=value"),
    Case("--trials 0", lambda w, o: _run(w, o, "--trials", "0"), "trials"),
    Case("--trials negative", lambda w, o: _run(w, o, "--trials", "-3"), "trials"),
    Case("--trials not a number", lambda w, o: _run(w, o, "--trials", "many"), "trials"),
    # storage and run folder
    Case("malformed storage URL", lambda w, o: _run(w, o, "--storage", "not a url"), "storage url"),
    Case("unknown storage dialect", lambda w, o: _run(w, o, "--storage", "nosuchdb://x@y/z"), "storage"),
    Case("unreachable storage", lambda w, o: _run(w, o, "--storage", "postgresql+psycopg://u:pw@127.0.0.1:1/x"),
         "cannot open storage"),
    Case("same study name, other definition", lambda w, o: _run(w, o, "--set", "cv.folds=3"),
         "another definition"),
    Case("unwritable output folder", lambda w, o: [*_run(w, o)[:3], str(_write(w / "file", b"x") / "sub"),
                                                   *_run(w, o)[4:]], "output folder"),
    Case("cuda without a GPU", lambda w, o: _run(w, o, "--device", "cuda"), "cuda"),
    Case("best on a missing study", lambda w, o: ["search", "best", "--out", str(w / "nothing")], "no study"),
    Case("report on a missing study", lambda w, o: ["search", "report", "--study", "gone", "--out", str(o)],
         "no study"),
    Case("finalize on a missing study", lambda w, o: ["search", "finalize", "--out", str(w / "nothing")], "no study"),
    Case("export of a missing trial", lambda w, o: ["search", "export", "--study", "anklealign", "--out", str(o),
                                                    "--trial", "999", "--to", str(w / "exported")], "no trial 999"),
    Case("worker without a storage", lambda w, o: ["search", "worker", "--out", str(o), *FAST], "--storage"),
    Case("worker on SQLite", lambda w, o: ["search", "worker", "--out", str(o), "--storage",
                                           f"sqlite:///{o / 'anklealign' / 'study.db'}", *FAST], "sqlite"),
    Case("synth over an existing folder", lambda w, o: ["anklealign", "synth", "--out", str(o)],  # o/anklealign
         "already exists"),
    Case("synth with a bad scale", lambda w, o: ["anklealign", "synth", "--out", str(w / "t"), "--scale", "0"],
         "scale"),
    Case("dashboard port in use", lambda w, o: ["search", "dashboard", "--study", "anklealign", "--out", str(o),
                                                "--port", str(_busy_port())], "in use"),
    # models and images
    Case("predict: missing model", lambda w, o: ["search", "predict", "--model", str(w / "none"), str(w)], "model"),
    Case("predict: corrupt model", lambda w, o: ["search", "predict", "--model", _corrupt_model(w, o),
                                                 str(_write(w / "i.txt", "x"))], "model"),
    Case("predict: pickled code in model", lambda w, o: ["search", "predict", "--model", _tampered_model(w, o),
                                                         str(_write(w / "i.txt", "x"))], "model"),
    Case("predict: non-image", lambda w, o: ["search", "predict", "--model", str(o / "anklealign" / "best"),
                                             str(_write(w / "notes.txt", "not an image"))], "notes.txt"),
    Case("predict: decompression bomb", lambda w, o: ["search", "predict", "--model",
                                                      str(o / "anklealign" / "best"), _bomb(w)], "bomb.png"),
    Case("score: run without a final model", lambda w, o: ["search", "score", str(w), str(w)], "no final model"),
    Case("score: folder without class folders", lambda w, o: ["search", "score", str(o / "anklealign"),
                                                              str((w / "flat").mkdir() or w / "flat")],
         "one subfolder per class"),
]


def _db_state(out: Path) -> list[tuple]:
    study = optuna.load_study(study_name="anklealign", storage=f"sqlite:///{out / 'anklealign' / 'study.db'}")
    return [(t.number, t.state, t.value, t.params) for t in study.trials]


def _invoke(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``python -m <argv>`` in this process (the same ``main`` the module entry points call).

    In-process keeps the 30-odd cases fast; an exception escaping ``main`` fails the test, so
    a traceback cannot hide. ``test_cli_subprocess_smoke`` checks the real entry points.
    """
    import anklealign.cli
    import search.cli

    mains = {"search": search.cli.main, "anklealign": anklealign.cli.main}
    capfd.readouterr()
    try:
        code = mains[argv[0]](argv[1:])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capfd.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def run_copy_root(finished_run: Path, small_twin: Path) -> tuple[Path, Path]:
    return finished_run, small_twin


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, run_copy_root: tuple[Path, Path],
                   capfd: pytest.CaptureFixture[str]) -> None:
    finished, twin = run_copy_root
    out = tmp_path / "runs"
    shutil.copytree(finished, out)
    before = _db_state(out)
    # The study file is in WAL mode: fold the copied log into the file first, so that any later
    # change of its bytes is a write by the command under test.
    with contextlib.closing(sqlite3.connect(out / "anklealign" / "study.db")) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    digest = hashlib.sha256((out / "anklealign" / "study.db").read_bytes()).hexdigest()
    argv = case.make(tmp_path, out)
    if argv[:2] == ["search", "run"] and "--data" not in argv:
        argv += ["--data", str(twin)]
    pwned = Path("/tmp/anklealign-search-pwned")
    pwned.unlink(missing_ok=True)
    code, stdout, err = _invoke(argv, capfd)
    assert code != 0, f"exit 0 for bad input; stderr: {err}"
    assert "Traceback" not in err and "Traceback" not in stdout, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error")]
    assert len(errors) >= 1 and len(errors[0]) < 400, err
    assert case.needle.lower() in err.lower(), f"{case.needle!r} not in: {err}"
    assert not pwned.exists(), "pickled code in a model file was executed"
    assert _db_state(out) == before
    if case.name != "same study name, other definition":
        # Nothing wrote to the study at all (the refused run only read it).
        assert hashlib.sha256((out / "anklealign" / "study.db").read_bytes()).hexdigest() == digest
        wal = out / "anklealign" / "study.db-wal"
        assert not wal.exists() or wal.stat().st_size == 0, "the command wrote to the study's log"


@pytest.mark.parametrize("argv", [["search", "run", "--trials", "0"],
                                  ["anklealign", "inspect", "/nonexistent/anklealign.zip"]])
def test_cli_subprocess_smoke(argv: list[str], tmp_path: Path) -> None:
    """The real entry points (python -m ...) behave like the in-process calls above."""
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2, proc.stderr


def _subcommands(parser: argparse.ArgumentParser) -> set[str]:
    return {name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices}


def test_the_table_covers_every_command(tmp_path: Path, run_copy_root: tuple[Path, Path]) -> None:
    """Every subcommand of both command lines meets bad input in the table above: both lists are read
    from the parsers, so a command added to either CLI without a bad-input case fails here."""
    from anklealign.cli import _parser as anklealign_parser
    from search.cli import build_parser

    commands = {("search", c) for c in _subcommands(build_parser())}
    commands |= {("anklealign", c) for c in _subcommands(anklealign_parser())}
    assert {("search", "run"), ("search", "dashboard"), ("anklealign", "synth")} <= commands  # parsers read
    covered = set()
    for i, case in enumerate(CASES):
        (tmp_path / f"case{i}").mkdir()
        covered.add(tuple(case.make(tmp_path / f"case{i}", run_copy_root[0])[:2]))
    assert commands - covered == set()
    print(f"\nbad-input table: {len(CASES)} cases over {len(commands)} commands")
