"""A server storage that waits out a lost database connection instead of ending the worker.

A database restart, a failover or a network blip cuts every worker's connection at once. Optuna's
``RDBStorage`` turns the failed commit into ``StorageInternalError: ... invalid data in the commit, e.g.
exceeding max length`` (which is not what happened) and the worker dies with its trial left RUNNING.
:class:`PatientStorage` wraps the storage: every call (sampling, reports, attributes, the heartbeat, the
tell) that fails because the connection is gone is retried with a growing pause, for up to
``storage.outage_timeout`` seconds. One line says the connection was lost and one that it is back; past the
limit one line says which database and for how long, and the process ends with exit code 3. Training goes
on meanwhile: a trial blocks only at its next storage call and its figures are written when the database
returns.

A call is repeated only when the connection failed; a lost connection during a commit may repeat a write
that the server took (Optuna's writes of values and attributes are idempotent; a repeated trial creation
would leave one extra RUNNING trial, which the heartbeat fails and re-queues).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from optuna.storages import BaseStorage

from search.study import optuna_api
from search.study.errors import SearchError

__all__ = ["PatientStorage", "StorageOutage", "EXIT_STORAGE_OUTAGE", "is_connection_error"]

_log = logging.getLogger(__name__)

EXIT_STORAGE_OUTAGE = 3


class StorageOutage(SearchError):
    """The database stayed unreachable for longer than ``storage.outage_timeout``."""

    exit_code = EXIT_STORAGE_OUTAGE


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a lost or refused database connection, not a bad query."""
    from sqlalchemy import exc as sa

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, sa.DBAPIError) and (e.connection_invalidated or isinstance(e, sa.OperationalError
                                                                                    | sa.InterfaceError)):
            return True
        if isinstance(e, sa.OperationalError | sa.InterfaceError | ConnectionError):
            return True
        if type(e).__name__ in ("OperationalError", "InterfaceError") and type(e).__module__.split(".")[0] in (
                "psycopg", "psycopg2", "pymysql", "MySQLdb"):
            return True
        e = e.__cause__ or e.__context__
    return False


@optuna_api.register_storage_wrapper
class PatientStorage:
    """Delegates to a storage; connection failures are retried with backoff for up to ``timeout`` seconds."""

    def __init__(self, inner: BaseStorage, *, label: str, timeout: float, settle: float = 0.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._inner = inner
        self._settle = float(settle)
        self._label = label
        self._timeout = float(timeout)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self.last_recovery: float | None = None  # time.monotonic() when the connection last came back

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name.startswith("__") or not callable(value):
            return value
        return lambda *args, **kwargs: self._call(value, args, kwargs)

    def _call(self, method: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        pause = 0.5
        while True:
            try:
                result = method(*args, **kwargs)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                waited = self._lost(exc)
                if waited > self._timeout:
                    raise StorageOutage(
                        f"the study's database {self._label} has been unreachable for {waited:.0f} s, longer than "
                        f"storage.outage_timeout = {self._timeout:.0f} s; finished trials are saved there, and a "
                        "trial left running is re-queued by the other workers' heartbeat check or by the next "
                        "run. Start the same command again once the database is back.") from None
                self._sleep(min(pause, max(0.05, self._timeout - waited)))
                pause = min(pause * 2, 10.0)
                continue
            self._back()
            return result

    def _lost(self, exc: BaseException) -> float:
        """Note the outage (one line when it starts); seconds since it started."""
        with self._lock:
            now = time.monotonic()
            if self._down_since is None:
                self._down_since = now
                first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
                _log.warning("storage %s: connection lost (%s); waiting up to %.0f s for it to come back",
                             self._label, first, self._timeout)
            return now - self._down_since

    def _back(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is not None:
                now = time.monotonic()
                _log.warning("storage %s: connection back after %.0f s", self._label, now - self._down_since)
                self._down_since, self.last_recovery = None, now

    # The heartbeat thread must not die with a traceback: past the limit it stops quietly, and the main
    # thread's next call says why the process ends.
    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self._call(self._inner.record_heartbeat, (trial_id,), {})
        except StorageOutage:
            pass

    def recently_recovered(self) -> bool:
        """Whether the connection came back less than ``settle`` seconds ago (grace period + heartbeat interval):
        other workers' heartbeats may not be written again yet, so failing their trials as stale would fail live
        ones."""
        return self.last_recovery is not None and time.monotonic() - self.last_recovery < self._settle

