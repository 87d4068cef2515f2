"""PatientStorage: lost connections are waited out, other errors are not, and the limit ends the process."""

from __future__ import annotations

import logging

import optuna
import pytest
from optuna.storages import BaseStorage
from sqlalchemy.exc import IntegrityError, OperationalError

from search.study import optuna_api
from search.study.patient import EXIT_STORAGE_OUTAGE, PatientStorage, StorageOutage, is_connection_error


class _Flaky:
    """A storage whose calls fail with a lost connection ``fails`` times, then answer."""

    def __init__(self, fails: int, error: Exception | None = None) -> None:
        self.fails, self.calls = fails, 0
        self.error = error or OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    def get_all_studies(self) -> list:
        self.calls += 1
        if self.calls <= self.fails:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from self.error
        return ["ok"]

    def record_heartbeat(self, trial_id: int) -> None:
        raise self.error

    def get_heartbeat_interval(self) -> int:
        return 1


def test_a_lost_connection_is_retried_with_growing_pauses_and_said_twice(caplog: pytest.LogCaptureFixture) -> None:
    pauses: list[float] = []
    storage = PatientStorage(_Flaky(4), label="postgresql://db/test", timeout=60, sleep=pauses.append)
    with caplog.at_level(logging.WARNING):
        assert storage.get_all_studies() == ["ok"]
    assert pauses == [0.5, 1.0, 2.0, 4.0]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "connection lost" in lines[0] and "connection back after" in lines[1]
    assert storage.last_recovery is not None


def test_other_errors_are_not_retried() -> None:
    bad = _Flaky(1, IntegrityError("INSERT", {}, Exception("duplicate key")))
    storage = PatientStorage(bad, label="x", timeout=60, sleep=lambda s: pytest.fail("must not wait"))
    with pytest.raises(optuna.exceptions.StorageInternalError):
        storage.get_all_studies()
    assert bad.calls == 1
    assert not is_connection_error(ValueError("a bad value"))
    assert is_connection_error(OperationalError("x", {}, Exception("server closed the connection")))


def test_past_the_limit_one_clear_error_with_exit_code_3() -> None:
    storage = PatientStorage(_Flaky(10**9), label="postgresql://db/test", timeout=0.3)
    with pytest.raises(StorageOutage, match=r"postgresql://db/test has been unreachable for .* storage.outage_timeout"):
        storage.get_all_studies()
    assert StorageOutage.exit_code == EXIT_STORAGE_OUTAGE == 3
    storage.record_heartbeat(1)  # the heartbeat thread stops quietly; the main thread says why


def test_it_is_a_storage_with_heartbeats_for_optuna() -> None:
    storage = PatientStorage(_Flaky(0), label="x", timeout=1, settle=30)
    assert isinstance(storage, BaseStorage) and optuna_api.heartbeat_enabled(storage)
    assert not storage.recently_recovered()
    storage.last_recovery = __import__("time").monotonic()
    assert storage.recently_recovered()  # fail_stale_trials waits: live workers' heartbeats may still be stale
