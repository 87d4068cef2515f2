"""optuna-dashboard for a study: trial notes, final files as artifacts, ``python -m search dashboard``.

- :func:`write_trial_note` puts a short Markdown note on each finished trial (the runner calls it).
- :func:`attach_final` uploads the final step's files to the run's artifact store, links them from
  the best trial and writes the final table as the study's note (finalize calls it).
- :func:`cli_dashboard` serves optuna-dashboard on the study's storage and artifact store,
  on 127.0.0.1 unless told otherwise: the dashboard has no authentication.
"""

from __future__ import annotations

import argparse
import atexit
import errno
import gc
import ipaddress
import json
import logging
import signal
import socket
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial

from search.errors import SearchError
from search.notes import data_line, trial_note

__all__ = ["artifact_store", "trial_note", "write_trial_note", "attach_final", "make_dashboard_server",
           "dashboard_url", "is_loopback", "serve_until_signal", "cli_dashboard"]

_log = logging.getLogger(__name__)

ARTIFACTS_DIR = "artifacts"
# optuna-dashboard lists a trial's artifacts from this study system-attr prefix too (its own upload
# format). Optuna refuses trial attributes once a trial has finished, and the best trial always has,
# so the final files are study artifacts (public API) that this key links to the best trial.
_DASHBOARD_TRIAL_ARTIFACT_KEY = "dashboard:artifacts:{trial_id}:{artifact_id}"


def artifact_store(run_dir: Path) -> FileSystemArtifactStore:
    """The run's artifact store, ``<run_dir>/artifacts`` (created)."""
    path = Path(run_dir) / ARTIFACTS_DIR
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


@dataclass(frozen=True)
class _TrialRef:
    """What ``optuna_dashboard.save_note`` reads from a trial, for a trial that has already finished.

    ``save_note`` takes a live ``optuna.Trial``; building one for a finished trial would run the
    sampler. The note lives in study system attributes, so study + trial id is all it needs.
    """

    study: optuna.Study
    _trial_id: int

    @property
    def storage(self) -> optuna.storages.BaseStorage:
        return self.study._storage


def _metric_of(study: optuna.Study, key: str = "metric") -> str | None:
    """``[study] metric`` (or another key of that section) of the study's recorded definition."""
    definition = study.user_attrs.get("definition") or {}
    return (definition.get("study") or {}).get(key)


def write_trial_note(study: optuna.Study, trial: FrozenTrial, *, metric: str | None = None) -> None:
    """Save :func:`trial_note` as the trial's dashboard note. Never raises (logs a warning).

    Args:
        study: the study the trial belongs to.
        trial: the finished trial (e.g. the one a ``study.optimize`` callback receives).
        metric: the objective's name; read from the study's recorded definition when ``None``.
    """
    try:
        from optuna_dashboard import save_note

        body = trial_note(trial, metric=metric or _metric_of(study), objective=_metric_of(study, "objective"))
        save_note(_TrialRef(study, trial._trial_id), body)  # type: ignore[arg-type]
    except Exception as exc:  # a note is a convenience: it must never stop a search
        _log.warning("could not write the dashboard note of trial %s: %s: %s",
                     getattr(trial, "number", "?"), exc.__class__.__name__, exc)


def attach_final(study: optuna.Study, trial_number: int, run_dir: Path, files: Sequence[Path],
                 note_markdown: str) -> None:
    """Upload the final step's files and write the study's note.

    Each file goes to ``<run_dir>/artifacts`` as a study artifact (``optuna.artifacts``) and is linked
    from trial ``trial_number`` on the dashboard. The study note is ``note_markdown`` under a line
    saying which data the study ran on, followed by links to the files.

    Raises:
        ValueError: the study has no trial ``trial_number``.
        FileNotFoundError: a file does not exist.
    """
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == trial_number), None)
    if trial is None:
        raise ValueError(f"study {study.study_name!r} has no trial {trial_number}")
    paths = [Path(f) for f in files]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"cannot attach {p}: no such file")
    store = artifact_store(run_dir)
    storage, study_id = study._storage, study._study_id
    links = []
    for p in paths:
        artifact_id = optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(p),
                                                       study_or_trial=study)
        meta = next(m for m in optuna.artifacts.get_all_artifact_meta(study) if m.artifact_id == artifact_id)
        key = _DASHBOARD_TRIAL_ARTIFACT_KEY.format(trial_id=trial._trial_id, artifact_id=artifact_id)
        storage.set_study_system_attr(study_id, key, json.dumps(asdict(meta)))
        links.append(f"[{p.name}](/artifacts/{study_id}/{artifact_id})")
        _log.debug("attached %s as artifact %s of trial %d", p, artifact_id, trial_number)
    metric = _metric_of(study)
    if metric and not study.metric_names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([metric])  # the dashboard's axis says "macro_f1", not "Objective 0"
    from optuna_dashboard import save_note

    body = f"{data_line(study.user_attrs.get('data'))}\n\n{note_markdown.rstrip()}\n"
    if links:
        body += f"\n**Files of the final model (trial {trial_number}):** " + " · ".join(links) + "\n"
    save_note(study, body)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        _log.debug("dashboard: " + format, *args)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """The dashboard's page loads several API routes at once; serve them in parallel."""

    daemon_threads = True
    block_on_close = False


def _server_class(host: str) -> type[WSGIServer]:
    if ":" not in host:
        return _ThreadingServer
    return type("_ThreadingServer6", (_ThreadingServer,), {"address_family": socket.AF_INET6})


def make_dashboard_server(storage: optuna.storages.BaseStorage, *, host: str, port: int,
                          store: FileSystemArtifactStore | None) -> WSGIServer:
    """optuna-dashboard's WSGI app on a bound (not yet serving) threaded wsgiref server.

    Raises:
        SearchError: the port is in use, or the address cannot be bound (one line).
    """
    import optuna_dashboard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. ExperimentalWarning of the artifact API
        app = optuna_dashboard.wsgi(storage, artifact_store=store)
    try:
        return make_server(host, port, app, server_class=_server_class(host), handler_class=_QuietHandler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise SearchError(f"port {port} is in use; pick another with --port") from exc
        raise SearchError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def dashboard_url(host: str, port: int, study_id: int) -> str:
    """The study's page; a wildcard bind address is shown as this machine's name."""
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/dashboard/studies/{study_id}"


def cli_dashboard(args: argparse.Namespace) -> int:
    """``dashboard``: serve optuna-dashboard for the study until Ctrl-C (exit 0)."""
    from search.commands import load_study, run_dir_of, storage_of
    from search.storage import redact

    defn, study = load_study(args)
    host, port = getattr(args, "host", "127.0.0.1"), getattr(args, "port", 8080)
    if not 0 < port < 65536:
        raise SearchError(f"--port must be in 1..65535, got {port}")
    run_dir = run_dir_of(args, defn)
    try:
        store: FileSystemArtifactStore | None = artifact_store(run_dir)
    except OSError as exc:
        store = None
        print(f"warning: no artifact store ({run_dir / ARTIFACTS_DIR}: {exc.strerror or exc}); "
              f"the final model's files will not open", file=sys.stderr)
    server = make_dashboard_server(study._storage, host=host, port=port, store=store)
    if not is_loopback(host):
        print(f"warning: the dashboard has no authentication: anyone who can reach {host}:{port} can read "
              f"this study, edit its notes and delete studies. Prefer the default --host 127.0.0.1 and an "
              f"SSH tunnel (ssh -L {port}:127.0.0.1:{port} <this machine>).", file=sys.stderr)
    data = study.user_attrs.get("data") or {}
    n = len(study.get_trials(deepcopy=False))

    def announce() -> None:  # printed once Ctrl-C is sure to stop the server
        print(f"optuna-dashboard: study {study.study_name} ({n} trials) on {redact(storage_of(args, defn))}")
        if data:
            print(f"data: {data.get('note', '?')} ({data.get('source', '?')})")
        print(f"  {dashboard_url(host, port, study._study_id)}")
        print("Ctrl-C to stop", flush=True)

    serve_until_signal(server, ready=announce)
    _release(study._storage)
    _fast_exit()
    return 0


def _release(storage: optuna.storages.BaseStorage) -> None:
    """Close the storage's database connections now (SQLite folds its WAL back into study.db)."""
    backend = getattr(storage, "_backend", storage)  # optuna wraps an RDBStorage in a cache
    if hasattr(backend, "remove_session"):
        backend.remove_session()
    engine = getattr(backend, "engine", None)
    if engine is not None:
        engine.dispose()


_fast_exit_registered = False


def _fast_exit() -> None:
    """At interpreter exit, spare the teardown its garbage-collector walks.

    optuna-dashboard imports scipy and scikit-learn: ~300,000 objects that the teardown walks several
    times, 0.5 s of CPU that became more than 2 s between Ctrl-C and the exit on a busy machine.
    ``gc.freeze()`` as an exit handler (exit handlers run before the teardown) skips those walks; the
    storage is closed already, other exit handlers still run, and the OS takes back the memory.
    """
    global _fast_exit_registered
    if not _fast_exit_registered:
        _fast_exit_registered = True
        atexit.register(gc.freeze)


# How often serve_forever looks at its shutdown flag: the upper bound on the delay of a stop.
_POLL_S = 0.1


@contextmanager
def _stop_on_signals(server: WSGIServer) -> Iterator[None]:
    """SIGINT and SIGTERM shut ``server`` down, whatever the signals' inherited disposition.

    Python installs its KeyboardInterrupt handler only when SIGINT is at its default at startup. A
    command started in the background by a non-interactive shell (``make test &``, a CI step, nohup)
    inherits SIGINT *ignored*, and Ctrl-C / ``kill -INT`` then did nothing: the server served on. So
    the handlers are installed explicitly. ``server.shutdown()`` waits for ``serve_forever`` to leave
    its loop and the handler runs in the very thread that loops, so it asks from a helper thread.
    Outside the main thread (no signal handlers possible) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    asked = threading.Event()

    def handler(signum: int, frame: object) -> None:  # noqa: ARG001
        if not asked.is_set():
            asked.set()
            threading.Thread(target=server.shutdown, name="dashboard-shutdown", daemon=True).start()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)


def serve_until_signal(server: WSGIServer, *, ready: Callable[[], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM (or KeyboardInterrupt), then close the listening socket.

    ``ready`` runs once the handlers are in place: a signal from then on stops the server, even one
    that arrives before ``serve_forever`` has started (socketserver keeps the request).
    """
    try:
        with _stop_on_signals(server):
            if ready is not None:
                ready()
            server.serve_forever(poll_interval=_POLL_S)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
