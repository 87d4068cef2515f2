"""Shared fixtures: a small synthetic twin built once per session, and a private data cache."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("anklealign-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(data_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cache stays inside pytest's temporary area, never in the user's ~/.cache."""
    monkeypatch.setenv("ANKLEALIGN_CACHE", str(data_cache))


@pytest.fixture(scope="session")
def small_twin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic twin (scale 0.2) as an unzipped folder; every quirk class is present."""
    import anklealign

    out = tmp_path_factory.mktemp("twin")
    anklealign.synth(out, seed=0, scale=0.2)
    return out


# Settings that make a study tiny enough for the CPU test suite.
# The study name is fixed ("anklealign") so that tests find the run folder; tests/search/test_any_dataset.py
# checks the default, a name derived from the data.
FAST = ["--set", "study.name=anklealign", "--set", "training.max_epochs=2", "--set", "space.image_size=[32]",
        "--set", "cv.folds=2",
        "--set", "final.seeds=2", "--set", "final.bootstrap=50", "--set", "final.baseline_presets=[\"net6\"]"]


@pytest.fixture
def fast_args() -> list[str]:
    return list(FAST)



@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory, small_twin: Path, data_cache: Path) -> Path:
    """A complete tiny run (trials + final step) on the small twin; returns the ``--out`` root.

    Shared by the tests that read what a run writes (finalize, export, predict, report, bad input),
    so the suite trains it once.
    """
    import os

    from search.cli import main

    out = tmp_path_factory.mktemp("finished-run")
    old = os.environ.get("ANKLEALIGN_CACHE")
    os.environ["ANKLEALIGN_CACHE"] = str(data_cache)
    try:
        rc = main(["-q", "run", "--data", str(small_twin), "--out", str(out), "--trials", "3", *FAST])
    finally:
        if old is None:
            os.environ.pop("ANKLEALIGN_CACHE", None)
        else:
            os.environ["ANKLEALIGN_CACHE"] = old
    assert rc == 0
    return out
