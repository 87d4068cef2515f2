"""Several worker processes on one study in the local PostgreSQL (a real server, no mock)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.run.queue import finished_count

ROOT = Path(__file__).resolve().parents[3]
PG_URL = os.environ.get("SEARCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _reachable(url: str) -> str | None:
    try:
        import sqlalchemy

        with sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3}).connect():
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means: skip with the reason
        return str(exc).splitlines()[0]


def _study_file(tmp_path: Path, name: str, extra: str = "") -> Path:
    text = (ROOT / "studies" / "default.toml").read_text().replace('name = ""', f'name = "{name}"')
    p = tmp_path / f"{name}.toml"
    p.write_text(text + extra)
    return p


@pytest.fixture
def pg_study(tmp_path: Path, require_or_skip):  # noqa: ANN001, ANN201
    reason = _reachable(PG_URL)
    if reason:
        require_or_skip(f"PostgreSQL not reachable at {PG_URL}: {reason}")
    name = f"test-workers-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=PG_URL)
    except KeyError:
        pass


def _worker(spawn, study_file: Path, tmp_path: Path, data: Path, cache: Path, trials: int):  # noqa: ANN001, ANN202
    args = [sys.executable, "-m", "search", "-q", "worker", "--study", str(study_file), "--storage", PG_URL,
            "--data", str(data), "--out", str(tmp_path / "runs"), "--trials", str(trials),
            "--set", "training.max_epochs=2", "--set", "space.image_size=[32]", "--set", "cv.folds=2"]
    return spawn(args, env={**os.environ, "ANKLEALIGN_CACHE": str(cache)})  # output to files, never a full pipe


@pytest.mark.postgres
def test_two_workers_share_one_study(pg_study: str, tmp_path: Path, small_twin: Path, data_cache: Path,
                                     spawn) -> None:  # noqa: ANN001
    study_file = _study_file(tmp_path, pg_study)
    procs = [_worker(spawn, study_file, tmp_path, small_twin, data_cache, 6) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    study = optuna.load_study(study_name=pg_study, storage=PG_URL)
    assert finished_count(study) >= 6
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    workers = {t.user_attrs.get("worker") for t in study.trials if t.state != TrialState.WAITING}
    assert len(workers - {None}) == 2, workers
    # The default configuration and the seed nets were enqueued once, not once per worker.
    presets = [t.user_attrs.get("preset") for t in study.trials if t.user_attrs.get("preset")]
    assert len(presets) == len(set(presets)) == 9


@pytest.mark.postgres
def test_worker_with_other_definition_refuses_to_join(pg_study: str, tmp_path: Path, small_twin: Path,
                                                      data_cache: Path, spawn) -> None:  # noqa: ANN001
    first = _worker(spawn, _study_file(tmp_path, pg_study), tmp_path, small_twin, data_cache, 1)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    p = subprocess.run(
        [sys.executable, "-m", "search", "worker", "--study", str(_study_file(tmp_path, pg_study)),
         "--storage", PG_URL, "--data", str(small_twin), "--out", str(tmp_path / "runs"), "--trials", "2",
         "--set", "training.max_epochs=3", "--set", "space.image_size=[32]", "--set", "cv.folds=2"],
        cwd=ROOT, env={**os.environ, "ANKLEALIGN_CACHE": str(data_cache)}, capture_output=True, text=True,
        timeout=300)
    assert p.returncode == 2
    assert "exists with another definition" in p.stderr and "training.max_epochs" in p.stderr
    assert "Traceback" not in p.stderr


def test_worker_refuses_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from search.cli import main

    rc = main(["worker", "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--trials", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "database is locked" in err and "journal" in err and "postgresql" in err



def test_the_loser_of_the_sqlite_schema_race_opens_the_storage(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes creating one new SQLite study at once: the loser's IntegrityError is retried."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    import search.study.optuna_api as optuna_api
    import search.study.storage as storage
    from search.study.definition import load_study_def

    real, calls = optuna_api.RDBStorage, []

    def racing(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:  # what the loser of the race sees (sqlite3, on Optuna's version row)
            raise IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed"))
        return real(*args, **kwargs)

    monkeypatch.setattr(optuna_api, "RDBStorage", racing)
    section = load_study_def("anklealign", []).storage
    assert storage.open_storage(f"sqlite:///{tmp_path / 'study.db'}", section) is not None
    assert len(calls) == 2

    def broken(*args: object, **kwargs: object) -> object:  # any other error on SQLite: at once, not retried
        calls.append(1)
        raise OperationalError("connect", {}, Exception("unable to open database file"))

    calls.clear()
    monkeypatch.setattr(optuna_api, "RDBStorage", broken)
    with pytest.raises(storage.StorageError, match="unable to open database file"):
        storage.open_storage(f"sqlite:///{tmp_path / 'other.db'}", section)
    assert len(calls) == 1


def test_workers_checking_one_run_folder_at_once_do_not_trip_each_other(tmp_path: Path) -> None:
    """Workers started together probe the same run folder; a shared probe file name made one fail."""
    import threading

    from search.run.session import check_writable as _check_writable

    errors: list[Exception] = []

    def probe() -> None:
        for _ in range(300):
            try:
                _check_writable(tmp_path / "runs" / "study")
            except Exception as exc:  # noqa: BLE001 - any failure is the bug
                errors.append(exc)

    threads = [threading.Thread(target=probe) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert list((tmp_path / "runs" / "study").iterdir()) == []   # no probe left behind
