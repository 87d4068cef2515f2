"""optuna-dashboard on a study's storage and artifact store (``python -m search dashboard``).

Served on 127.0.0.1 unless told otherwise: the dashboard has no authentication. The notes and
artifacts it shows are written by :mod:`search.study.notes` during the run and the final step.
"""

from __future__ import annotations

import atexit
import errno
import gc
import ipaddress
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from optuna.artifacts import FileSystemArtifactStore

from search.study import optuna_api
from search.study.errors import SearchError

__all__ = ["make_dashboard_server", "dashboard_url", "is_loopback", "serve_until_signal", "release"]

_log = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
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

    with optuna_api.experimental():  # the artifact store API is experimental
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


def release(storage: optuna.storages.BaseStorage) -> None:
    """Close the storage's connections now and make the interpreter's exit quick (:func:`_fast_exit`)."""
    optuna_api.close_storage(storage)
    _fast_exit()


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

    def handler(signum: int, frame: object) -> None:
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
