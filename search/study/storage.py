"""Optuna storages: URL checks, heartbeats, password redaction, the SQLite multi-process rule.

- ``sqlite:///path/study.db`` (default): one process. Several processes on one SQLite file end
  in "database is locked"; ``worker`` refuses it and names the alternatives.
- ``postgresql+psycopg://user@host/db``, ``mysql+pymysql://user@host/db``: many workers on many
  machines; heartbeats fail the trial of a dead worker and re-queue its parameters.
- ``journal:///path/journal.log``: Optuna's journal file storage, safe for several processes
  on one machine (file locks), no server needed.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import optuna
from optuna.storages import RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage

from search.study import optuna_api
from search.study.definition import StorageSection, StudyDef, study_def_from_dict
from search.study.errors import SearchError
from search.study.patient import PatientStorage
from search.study.records import StudyRecord

__all__ = ["StorageError", "load_existing", "ENV_STORAGE", "default_url", "redact", "hide_secret", "open_storage",
           "is_sqlite", "is_journal"]

_log = logging.getLogger(__name__)


class StorageError(SearchError):
    """A storage URL that is malformed or cannot be reached."""


def default_url(run_dir: Path) -> str:
    return f"sqlite:///{run_dir.resolve() / 'study.db'}"


ENV_STORAGE = "SEARCH_STORAGE_URL"  # how a parent hands the storage URL to its trial processes (never argv)


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (the only form of a URL ever displayed).

    SQLAlchemy parses the URL (a password may hold ``/ @ : % #``, percent-encoded or not) and renders
    it with the password hidden. A string it cannot parse is shown with everything between the
    scheme and the last ``@`` hidden, in case that part holds a secret.
    """
    if is_journal(url) or is_sqlite(url):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(://).*@", r"\1***@", url)


def hide_secret(text: str, url: str) -> str:
    """``text`` (e.g. a driver's error message) with the URL's password, raw or encoded, replaced by ``***``."""
    from urllib.parse import quote

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        password = make_url(url).password
    except (ArgumentError, ValueError):
        password = None
    text = text.replace(url, redact(url))
    if password:
        for form in {str(password), quote(str(password), safe=""), quote(str(password))}:
            text = text.replace(form, "***")
    return text


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def is_journal(url: str) -> bool:
    return url.startswith("journal:")


def open_storage(url: str, section: StorageSection, *, heartbeat: bool = True) -> optuna.storages.BaseStorage:
    """Open (and create the tables of) a storage, or raise a readable :class:`StorageError`."""
    if is_journal(url):
        path = Path(url.split("://", 1)[-1] if "://" in url else url.split(":", 1)[1])
        if not path.parent.is_dir():
            raise StorageError(f"journal storage folder does not exist: {path.parent}")
        return JournalStorage(JournalFileBackend(str(path)))
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StorageError(f"malformed storage URL {redact(url)!r}: expected e.g. sqlite:///runs/x/study.db or "
                           f"postgresql+psycopg://user@host/db") from exc
    if is_sqlite(url) and parsed.database and parsed.database != ":memory:":
        db = Path(parsed.database)
        if not db.parent.is_dir():
            raise StorageError(f"folder of the SQLite storage does not exist: {db.parent}")
    engine_kwargs = {} if is_sqlite(url) else {"pool_pre_ping": True, "connect_args": _connect_args(parsed)}
    beats = (dict(heartbeat_interval=section.heartbeat_interval, grace_period=section.grace_period,
                  max_retry=section.max_retry) if heartbeat else {})
    try:
        storage = _rdb_storage(url, engine_kwargs, beats, attempts=1 if is_sqlite(url) else 3)
        if is_sqlite(url):
            if parsed.database not in (None, "", ":memory:"):
                _sqlite_wal(storage)
            return storage
    except ModuleNotFoundError as exc:
        extra = "postgres" if "psycopg" in str(exc) else "mysql" if "mysql" in str(exc).lower() else None
        hint = f" (install the '{extra}' extra: pip install -e '.[{extra}]')" if extra else ""
        raise StorageError(f"no database driver for {redact(url)}: {hide_secret(str(exc), url)}{hint}") from exc
    except Exception as exc:  # sqlalchemy OperationalError & co: one readable line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise StorageError(f"cannot open storage {redact(url)}: {hide_secret(first, url)}") from exc
    # A server database may restart under a running study: its calls wait the outage out.
    return PatientStorage(optuna_api.cached(storage), label=redact(url), timeout=section.outage_timeout,
                          settle=section.grace_period + section.heartbeat_interval)


def _sqlite_wal(storage: RDBStorage) -> None:
    """Write-ahead log with ``synchronous=NORMAL`` on every connection to a SQLite study file.

    Each trial commits a few dozen small transactions (parameters, reports, attributes). In WAL
    mode a commit appends to ``study.db-wal`` instead of rewriting pages under a rollback journal
    with two fsyncs, which halves the storage's share of a search; and a reader (the dashboard,
    ``report``) no longer blocks the writer. A process that is killed loses no committed trial; only
    a power cut can lose the last commits, never corrupt the file.
    """
    from sqlalchemy import event

    def _pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001 - DB-API connection
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", _pragmas)
    storage.engine.dispose()  # the connections opened while creating the tables get the pragmas too


def _rdb_storage(url: str, engine_kwargs: dict, beats: dict, *, attempts: int) -> RDBStorage:
    """Open an RDB storage; several workers starting at once on an empty server database may race
    to create the tables, so a failed first attempt on a server is retried after a short pause.

    Two processes creating the same new SQLite file at once race too (``run`` and a dashboard or
    a reader opened a moment early): the loser's IntegrityError on Optuna's schema-version row is
    retried on any backend, as the tables exist by then.
    """
    from sqlalchemy.exc import IntegrityError

    failures = 0
    while True:
        try:
            return optuna_api.rdb_storage(url, engine_kwargs=engine_kwargs, **beats)
        except ModuleNotFoundError:
            raise
        except Exception as exc:
            failures += 1
            if failures >= (max(attempts, 3) if isinstance(exc, IntegrityError) else attempts):
                raise
            time.sleep(0.2 if isinstance(exc, IntegrityError) else 1.0 + failures - 1)


def _connect_args(parsed) -> dict:
    """A short connect timeout so an unreachable server is an error in seconds, not minutes."""
    backend = parsed.get_backend_name()
    return {"connect_timeout": 5} if backend in ("postgresql", "mysql") else {}


def load_existing(defn: StudyDef, url: str) -> tuple[StudyDef, optuna.Study]:
    """An existing study (for reading: no heartbeat) and the definition its trials ran with.

    The study's own recorded definition wins over today's TOML file, under ``defn``'s name.
    """
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        raise SearchError(f"no study storage at {url[len('sqlite:///'):]} (run 'python -m search run "
                          f"--study {defn.name}' first, or pass --storage/--out)")
    storage = open_storage(url, defn.storage, heartbeat=False)
    try:
        study = optuna.load_study(study_name=defn.name, storage=storage)
    except KeyError as exc:
        raise SearchError(f"no study named {defn.name!r} in {redact(url)}") from exc
    recorded = StudyRecord.of(study).definition
    return (study_def_from_dict(recorded).named(defn.name) if recorded else defn), study
