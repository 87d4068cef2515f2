"""Faults on real server databases: a worker killed with SIGKILL, four workers on one study.

PostgreSQL (127.0.0.1:5432) and MariaDB (127.0.0.1:3306, the ``mysql`` extra) are the local
servers; a test is skipped with the reason when its server is not reachable (it fails instead
under REQUIRE_SERVICES=1, as on CI).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from search.run.queue import finished_count
from search.study.optuna_api import retried_numbers as optuna_api_retried

ROOT = Path(__file__).resolve().parents[3]
SERVERS = {
    "postgres": os.environ.get("SEARCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get("SEARCH_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
# Heartbeats every second, a trial is stale after 3 s without one: the test need not wait long.
FAST_HEARTBEAT = ["--set", "storage.heartbeat_interval=1", "--set", "storage.grace_period=3"]


def _require_reachable(url: str, require_or_skip) -> None:  # noqa: ANN001 - the conftest fixture
    import sqlalchemy

    try:
        with sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3}).connect():
            pass
    except Exception as exc:  # noqa: BLE001 - any failure means: skip (or fail), saying why
        require_or_skip(f"{url} not reachable: {str(exc).splitlines()[0]}")


# Runs ``python -m search`` with every fold's epoch made slower by a sleep, so that a test can see
# a finished trial and a running one before the worker is done however fast the machine is.
_SLOW_MAIN = """
import runpy, time
import search.run.train as t
_orig = t._train_epoch
def _slow(*a, **k):
    time.sleep({delay})
    return _orig(*a, **k)
t._train_epoch = _slow
runpy.run_module("search", run_name="__main__", alter_sys=True)
"""


def _worker(spawn, url: str, name: str, tmp: Path, data: Path, cache: Path, trials: int, epochs: int,  # noqa: ANN001
            extra: list[str] = (), slow_epoch_s: float = 0.0):  # noqa: ANN202 - conftest's Child

    study_file = tmp / f"{name}.toml"
    if not study_file.exists():
        text = (ROOT / "studies" / "default.toml").read_text().replace('name = ""', f'name = "{name}"')
        study_file.write_text(text)
    main = ["-c", _SLOW_MAIN.format(delay=slow_epoch_s)] if slow_epoch_s else ["-m", "search"]
    args = [sys.executable, *main, "-q", "worker", "--study", str(study_file), "--storage", url,
            "--data", str(data), "--out", str(tmp / "runs"), "--trials", str(trials),
            "--set", f"training.max_epochs={epochs}", "--set", "space.image_size=[32]", "--set", "cv.folds=2",
            "--set", "pruner.name=none", *FAST_HEARTBEAT, *extra]
    return spawn(args, env={**os.environ, "ANKLEALIGN_CACHE": str(cache)})


@pytest.fixture(params=["postgres", "mariadb"])
def server_study(request: pytest.FixtureRequest, require_or_skip):  # noqa: ANN001, ANN201
    url = SERVERS[request.param]
    _require_reachable(url, require_or_skip)
    name = f"test-faults-{uuid.uuid4().hex[:8]}"
    yield url, name
    try:
        optuna.delete_study(study_name=name, storage=url)
    except KeyError:
        pass


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def test_sigkilled_worker_trial_is_retried_and_study_reaches_n(server_study: tuple[str, str], tmp_path: Path,
                                                               small_twin: Path, data_cache: Path,
                                                               spawn) -> None:  # noqa: ANN001
    url, name = server_study
    n = 3
    # 12 epochs x 2 folds x 0.25 s: each of the victim's trials lasts at least 6 s.
    victim = _worker(spawn, url, name, tmp_path, small_twin, data_cache, n, epochs=12, slow_epoch_s=0.25)
    deadline = time.monotonic() + 180
    killed_number = None
    while time.monotonic() < deadline:
        try:
            trials = _trials(url, name)
        except (KeyError, SQLAlchemyError):  # no study yet, or the worker is creating the tables right now
            trials = []
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        running = [t for t in trials if t.state == TrialState.RUNNING and len(t.intermediate_values) >= 2]
        if done and running:
            killed_number = running[0].number
            before = {t.number: t.value for t in done}
            os.kill(victim.pid, signal.SIGKILL)
            break
        if victim.poll() is not None:
            pytest.fail(f"worker ended before it could be killed: {victim.stderr()[-3000:]}")
        time.sleep(0.2)
    else:
        victim.kill()
        pytest.fail("never saw a finished trial and a running one")
    victim.communicate(timeout=30)
    assert killed_number is not None
    # The survivor arrives once the dead trial's heartbeat is older than the grace period (3 s);
    # the first thing it does is fail that trial and take its re-queued copy.
    time.sleep(4)

    survivor = _worker(spawn, url, name, tmp_path, small_twin, data_cache, n, epochs=12)
    _, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err

    trials = _trials(url, name)
    study = optuna.load_study(study_name=name, storage=url)
    by_number = {t.number: t for t in trials}
    killed = by_number[killed_number]
    assert killed.state == TrialState.FAIL  # failed by the heartbeat, not left RUNNING
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed_number]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert finished_count(study) == n
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    for number, value in before.items():  # every trial finished before the kill is intact
        assert by_number[number].state == TrialState.COMPLETE and by_number[number].value == value


@pytest.mark.postgres
def test_four_workers_no_duplicates_no_losses(tmp_path: Path, small_twin: Path, data_cache: Path,
                                              require_or_skip, spawn) -> None:  # noqa: ANN001
    """Four workers, 40 short trials; one worker is killed with SIGKILL mid-run and started again."""
    url = SERVERS["postgres"]
    _require_reachable(url, require_or_skip)
    name = f"test-four-{uuid.uuid4().hex[:8]}"
    n = 40
    try:
        # No presets: the sampler's own first proposals must differ between workers.
        start = lambda: _worker(spawn, url, name, tmp_path, small_twin, data_cache, n, epochs=1,  # noqa: E731
                                extra=["--set", "study.enqueue_presets=[]"], slow_epoch_s=0.2)
        procs = [start() for _ in range(4)]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # kill one while it runs a trial, once some trials are done
            try:
                trials = _trials(url, name)
            except (KeyError, SQLAlchemyError):
                trials = []
            if sum(t.state == TrialState.COMPLETE for t in trials) >= 8:
                break
            time.sleep(0.2)
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].proc.wait(timeout=30)
        procs.append(start())  # the same worker, started again
        for p in procs[1:]:
            _, err = p.communicate(timeout=400)
            assert p.returncode == 0, err
        trials = _trials(url, name)
        numbers = [t.number for t in trials]
        assert len(numbers) == len(set(numbers)), "a trial number appears twice"
        study = optuna.load_study(study_name=name, storage=url)
        assert finished_count(study) >= n
        assert not [t for t in trials if t.state == TrialState.RUNNING], "a trial was left running"
        retried = optuna_api_retried(trials)
        assert not [t for t in trials if t.state == TrialState.FAIL and t.number not in retried], "a trial was lost"
        # (a retry repeats its failed trial's parameters on purpose)
        params = [json.dumps(t.params, sort_keys=True) for t in trials if t.state != TrialState.FAIL]
        assert len(params) == len(set(params)), "two workers proposed identical parameter sets"
        assert len({t.user_attrs.get("worker") for t in trials} - {None}) >= 2  # (a trial killed at its start has none)
    finally:
        try:
            optuna.delete_study(study_name=name, storage=url)
        except KeyError:
            pass


def _proxy_class() -> type:
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from outage_proxy import OutageProxy
    finally:
        sys.path.remove(str(ROOT / "tests"))
    return OutageProxy


@pytest.mark.postgres
@pytest.mark.mysql
def test_workers_wait_out_a_database_outage(tmp_path: Path, small_twin: Path, data_cache: Path, require_or_skip,
                                            spawn) -> None:  # noqa: ANN001
    """On PostgreSQL and on MariaDB at once, two workers each reach the database through a proxy; after a few
    trials both proxies refuse and cut every connection for 20 s, as a server restart does. Every worker waits
    it out and the studies finish: every trial number once, no trial left RUNNING, the finished count reached."""
    from sqlalchemy.engine import make_url

    outage = ["--set", "storage.outage_timeout=120"]
    n, setups = 10, []
    try:
        for server, url in SERVERS.items():
            _require_reachable(url, require_or_skip)
            name, parsed = f"test-outage-{server}-{uuid.uuid4().hex[:8]}", make_url(url)
            proxy = _proxy_class()(parsed.port)
            (tmp_path / server).mkdir()
            via = parsed.set(port=proxy.port).render_as_string(hide_password=False)
            workers = [_worker(spawn, via, name, tmp_path / server, small_twin, data_cache, n, epochs=3,
                               extra=outage, slow_epoch_s=0.3) for _ in range(2)]
            setups.append((url, name, proxy, workers))
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # a few trials done and others running on both: then the outage
            ready = 0
            for url, name, _, workers in setups:
                try:
                    trials = _trials(url, name)
                except (KeyError, SQLAlchemyError):
                    trials = []
                ready += (sum(t.state == TrialState.COMPLETE for t in trials) >= 2
                          and any(t.state == TrialState.RUNNING for t in trials))
                assert all(w.poll() is None for w in workers), [w.stderr()[-2000:] for w in workers]
            if ready == len(setups):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the workers never got going")
        for _, _, proxy, _ in setups:
            proxy.cut()
        time.sleep(20)
        for _, _, proxy, workers in setups:
            assert all(w.poll() is None for w in workers), [w.stderr()[-2000:] for w in workers]  # still waiting
            proxy.restore()
        for _, _, _, workers in setups:
            for w in workers:
                w.communicate(timeout=300)
        for url, name, _, workers in setups:
            for w in workers:
                assert w.returncode == 0, w.stderr()[-3000:]
                assert "Traceback" not in w.stderr()
            lost = [w for w in workers if "connection lost" in w.stderr()]
            assert lost and all("connection back after" in w.stderr() for w in lost), url
            trials = _trials(url, name)
            numbers = [t.number for t in trials]
            assert len(numbers) == len(set(numbers)), url
            assert not [t for t in trials if t.state == TrialState.RUNNING], url
            assert finished_count(optuna.load_study(study_name=name, storage=url)) >= n, url
            assert not [t for t in trials if t.state == TrialState.FAIL and "heartbeat" in str(t.user_attrs)], \
                f"{url}: a live worker's trial was failed as stale after the outage"
    finally:
        for url, name, proxy, _ in setups:
            proxy.close()
            try:
                optuna.delete_study(study_name=name, storage=url)
            except (KeyError, SQLAlchemyError):
                pass


@pytest.mark.parametrize("server_study", ["postgres"], indirect=True)  # the rule is the same on MariaDB
def test_a_worker_gives_up_after_the_outage_timeout_with_exit_code_3(server_study: tuple[str, str],
                                                                      tmp_path: Path, small_twin: Path,
                                                                      data_cache: Path, spawn) -> None:  # noqa: ANN001
    from sqlalchemy.engine import make_url

    url, name = server_study
    parsed = make_url(url)
    proxy = _proxy_class()(parsed.port)
    via_proxy = parsed.set(port=proxy.port).render_as_string(hide_password=False)
    worker = _worker(spawn, via_proxy, name, tmp_path, small_twin, data_cache, 50, epochs=3,
                     extra=["--set", "storage.outage_timeout=5"], slow_epoch_s=0.3)
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            try:
                if any(t.state == TrialState.COMPLETE for t in _trials(url, name)):
                    break
            except (KeyError, SQLAlchemyError):
                pass
            assert worker.poll() is None, worker.stderr()[-2000:]
            time.sleep(0.2)
        proxy.cut()
        worker.communicate(timeout=120)
    finally:
        proxy.close()
    err = worker.stderr()
    assert worker.returncode == 3, err[-3000:]
    assert "unreachable for" in err and "storage.outage_timeout = 5 s" in err and "Traceback" not in err
    assert "127.0.0.1" in err  # which database
