"""Shared fixtures: a small synthetic twin built once per session, and a private data cache.

``REQUIRE_SERVICES=1`` (set by .ci/run) means: PostgreSQL, MariaDB and Chromium must be there. A test
that needs one calls :func:`require_or_skip` (the fixture of that name), which then fails instead of
skipping; and any other skip of a test not marked ``cuda`` fails too, so CI cannot pass by skipping
what it must test. Without the variable (a laptop), such tests skip with the reason.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES", "") not in ("", "0")


def require_or_skip(reason: str) -> NoReturn:
    """A service or program the test needs is missing: fail under REQUIRE_SERVICES=1, else skip."""
    if REQUIRE_SERVICES:
        pytest.fail(f"REQUIRE_SERVICES=1, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(name="require_or_skip")
def _require_or_skip() -> Callable[[str], NoReturn]:
    """:func:`require_or_skip` for test files (imported by path, they cannot import this conftest)."""
    return require_or_skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: needs (or checks the absence of) a CUDA device; the only "
                                       "tests that may skip under REQUIRE_SERVICES=1")


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """Under REQUIRE_SERVICES=1 a skip (skipif, pytest.skip, importorskip) fails unless marked cuda."""
    report = yield
    if (REQUIRE_SERVICES and report.skipped and not hasattr(report, "wasxfail")
            and item.get_closest_marker("cuda") is None):
        report.outcome = "failed"
        report.longrepr = f"REQUIRE_SERVICES=1: only tests marked cuda may skip; skipped: {_skip_reason(report)}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> pytest.CollectReport:
    """The same for a whole file skipped at import (pytest.skip(allow_module_level=True), importorskip)."""
    report = yield
    if REQUIRE_SERVICES and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"REQUIRE_SERVICES=1: a test file may not skip; skipped: {_skip_reason(report)}"
    return report


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
        "--set", "final.seeds=2", "--set", "final.bootstrap=50", "--set", "final.baseline_presets=[\"net6\"]",
        "--set", "final.top_k=3"]  # the default is 1; 3 keeps the top-k path under test


@pytest.fixture
def fast_args() -> list[str]:
    return list(FAST)


class Child:
    """A child process whose stdout and stderr go to files, never to pipes.

    A pipe holds 64 KiB; a chatty child (``--debug``, warnings under load, trial processes that
    inherit the stream) blocks on a full pipe that a polling test does not read, and the test then
    waits for ever. That hung CI once (tests/search/study/test_secrets.py). Files cannot fill up.
    """

    def __init__(self, args: Sequence[str], folder: Path, env: dict[str, str] | None = None) -> None:
        self.out_path, self.err_path = folder / "stdout.txt", folder / "stderr.txt"
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.proc = subprocess.Popen(list(args), cwd=ROOT, env=env, stdout=out, stderr=err, text=True)
        self.pid = self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def poll(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        self.proc.kill()

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def communicate(self, timeout: float) -> tuple[str, str]:
        """Wait up to ``timeout`` s; a child still running then is killed and the test fails with its stderr."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"child still running after {timeout:.0f} s, killed; stderr tail:\n{self.stderr()[-3000:]}")
        return self.stdout(), self.stderr()


@pytest.fixture
def spawn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Child]]:
    """``spawn(args, env=None)`` starts a :class:`Child` in the repository root; any left running are killed."""
    children: list[Child] = []
    counter = itertools.count()

    def start(args: Sequence[str], env: dict[str, str] | None = None) -> Child:
        child = Child(args, tmp_path_factory.mktemp(f"child{next(counter)}"), env)
        children.append(child)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
            child.proc.wait()



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
