"""optuna-dashboard on a finished study: notes, final artifacts, the JSON API, and the CLI's guards."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import IO

import optuna
import pytest

from search.cli import main
from search.study.notes import artifact_store, attach_final, trial_note, write_trial_note
from search.view.dashboard import is_loopback, make_dashboard_server, serve_until_signal

ROOT = Path(__file__).resolve().parents[3]
# The suite imports test files by path (--import-mode=importlib): load the sibling helper the same way.
_spec = importlib.util.spec_from_file_location("finished_study", Path(__file__).with_name("finished_study.py"))
finished_study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(finished_study)

FINAL_NOTE = "## Final model\n\n| metric | test |\n|---|---|\n| macro_f1 | 0.61 [0.45, 0.75] |\n"


@pytest.fixture(scope="module")
def noted(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A finished study with a note on every trial and two files attached to the best trial."""
    out = tmp_path_factory.mktemp("runs")
    study = finished_study.build_study(out)
    run_dir = out / study.study_name
    for t in study.get_trials(deepcopy=False):
        write_trial_note(study, t)
    files = [run_dir / "model_card.json", run_dir / "confusion.png"]
    files[0].write_text(json.dumps({"data": finished_study.DATA}))
    files[1].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    attach_final(study, study.best_trial.number, run_dir, files, FINAL_NOTE)
    return out, study, files


@pytest.fixture(scope="module")
def server(noted):  # noqa: ANN001, ANN201
    out, study, _ = noted
    srv = make_dashboard_server(study._storage, host="127.0.0.1", port=0,
                                store=artifact_store(out / study.study_name))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=20) as resp:
        assert resp.status == 200
        return resp.read()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_trial_notes_say_preset_config_and_outcome(noted) -> None:  # noqa: ANN001
    _, study, _ = noted
    trials = study.get_trials(deepcopy=False)
    preset = next(t for t in trials if t.user_attrs.get("preset") == "net6")
    note = trial_note(preset, metric="macro_f1")
    assert "seed net `net6`" in note and "4 blocks" in note and "maxpool" in note and "batchnorm on" in note
    assert "rotate ±15°" in note and "adam lr 0.0005" in note and "macro_f1" in note
    pruned = next(t for t in trials if t.state.name == "PRUNED")
    note = trial_note(pruned)
    assert "**pruned**" in note and "Pruned: pruned at epoch 3" in note and "3 of 6 epochs run" in note
    failed = next(t for t in trials if t.state.name == "FAIL")
    assert "made-up failure" in trial_note(failed)


def test_write_trial_note_never_raises(noted, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    _, study, _ = noted
    with caplog.at_level(logging.WARNING, logger="search.study.notes"):
        write_trial_note(object(), study.trials[0])  # type: ignore[arg-type]
    assert "could not write the dashboard note of trial 0" in caplog.text


def test_attach_final_checks_its_inputs(noted, tmp_path: Path) -> None:  # noqa: ANN001
    _, study, files = noted
    with pytest.raises(ValueError, match="no trial 999"):
        attach_final(study, 999, tmp_path, files, "x")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        attach_final(study, 0, tmp_path, [tmp_path / "missing.onnx"], "x")


def test_api_serves_study_trials_notes_and_artifacts(noted, server: str) -> None:  # noqa: ANN001
    _, study, files = noted
    summaries = json.loads(_get(f"{server}/api/studies"))["study_summaries"]
    sid = next(s["study_id"] for s in summaries if s["study_name"] == study.study_name)
    detail = json.loads(_get(f"{server}/api/studies/{sid}?after=0"))
    trials = {t["number"]: t for t in detail["trials"]}
    assert sorted(trials) == [t.number for t in study.trials]
    assert detail["has_intermediate_values"]
    pruned = next(t for t in study.trials if t.state.name == "PRUNED")
    served = [v["value"] for v in trials[pruned.number]["intermediate_values"]]
    assert served == pytest.approx([pruned.intermediate_values[s] for s in sorted(pruned.intermediate_values)])
    # notes: the study's (final table under the data line) and every trial's
    assert "SYNTHETIC TWIN" in detail["note"]["body"] and "| macro_f1 | 0.61" in detail["note"]["body"]
    for n, t in trials.items():
        assert t["note"]["body"].startswith(f"### Trial {n}")
    # the final files: linked from the best trial, listed for the study, downloadable both ways
    best = trials[study.best_trial.number]
    assert sorted(a["filename"] for a in best["artifacts"]) == sorted(f.name for f in files)
    assert sorted(a["filename"] for a in detail["artifacts"]) == sorted(f.name for f in files)
    for art in best["artifacts"]:
        content = (files[0] if art["filename"] == files[0].name else files[1]).read_bytes()
        assert _get(f"{server}/artifacts/{sid}/{best['trial_id']}/{art['artifact_id']}") == content
        assert _get(f"{server}/artifacts/{sid}/{art['artifact_id']}") == content
        assert f"/artifacts/{sid}/{art['artifact_id']}" in detail["note"]["body"]
    assert b"<html" in _get(f"{server}/dashboard/studies/{sid}").lower()


def test_port_in_use_is_one_line_error(noted, capsys: pytest.CaptureFixture) -> None:  # noqa: ANN001
    out, _, _ = noted
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc = main(["dashboard", "--study", "anklealign", "--out", str(out), "--port", str(port)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == f"error: port {port} is in use; pick another with --port\n"


def test_non_loopback_host_warns_and_ctrl_c_exits_0(noted, capsys: pytest.CaptureFixture,  # noqa: ANN001
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out, _, _ = noted

    def interrupted(self, poll_interval: float = 0.5) -> None:  # noqa: ANN001, ARG001
        raise KeyboardInterrupt

    monkeypatch.setattr("search.view.dashboard._ThreadingServer.serve_forever", interrupted)
    port = _free_port()
    assert main(["dashboard", "--study", "anklealign", "--out", str(out), "--host", "0.0.0.0",
                 "--port", str(port)]) == 0
    cap = capsys.readouterr()
    assert "no authentication" in cap.err and "interrupted" not in cap.err
    assert f":{port}/dashboard/studies/" in cap.out and "Ctrl-C to stop" in cap.out


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                            ("127.0.0.2", True), ("0.0.0.0", False), ("10.1.2.3", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# The dashboard must be gone this soon after Ctrl-C (SIGINT) or SIGTERM.
STOP_WITHIN_S = 2.0


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored in this process, so a child started meanwhile inherits it ignored: what a
    non-interactive shell does to a background job (``make test &``, CI runners, nohup)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_serve_until_signal_stops_on_sigint_even_when_inherited_ignored() -> None:
    """In-process: SIGINT stops the server although its disposition was SIG_IGN, and the handlers in
    place before are put back. Fails if the command relies on Python's default KeyboardInterrupt."""
    srv = make_dashboard_server(optuna.storages.InMemoryStorage(), host="127.0.0.1", port=0, store=None)
    with _sigint_ignored():
        before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        sent: list[float] = []

        def interrupt() -> None:
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)

        timer = threading.Timer(0.3, interrupt)
        rescue = threading.Timer(10, srv.shutdown)  # without the fix: fail below instead of hanging
        timer.start()
        rescue.start()
        try:
            serve_until_signal(srv)
        finally:
            timer.cancel()
            rescue.cancel()
        stopped = time.monotonic()
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert sent and stopped - sent[0] < STOP_WITHIN_S
    assert srv.socket.fileno() == -1  # the listening socket is closed


def _read_lines(stream: IO[str], lines: list[str], banner: threading.Event) -> None:
    for line in stream:
        lines.append(line)
        if line.startswith("Ctrl-C to stop"):
            banner.set()
    banner.set()  # EOF: the child is gone; the test reports what it printed


@pytest.mark.parametrize("sig, inherited", [
    pytest.param(signal.SIGINT, "default", id="SIGINT"),
    pytest.param(signal.SIGINT, "ignored", id="SIGINT-inherited-ignored"),
    pytest.param(signal.SIGTERM, "default", id="SIGTERM"),
])
def test_cli_serves_until_ctrl_c(noted, tmp_path: Path, sig: signal.Signals,  # noqa: ANN001
                                 inherited: str) -> None:
    """The real command in a child process: it serves the page, and exits 0 within STOP_WITHIN_S of
    SIGINT (also when SIGINT was inherited ignored, the cause of the old flake) or SIGTERM.

    stdout is read by a thread, so a child that never prints cannot hang the test past its deadline;
    stderr goes to a file, so a chatty child can never block on a full pipe nobody reads."""
    out, _, _ = noted
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "search", "dashboard", "--study", "anklealign", "--out", str(out),
            "--port", str(port)]
    err_path = tmp_path / "stderr.txt"
    with err_path.open("w") as err, (_sigint_ignored() if inherited == "ignored" else nullcontext()):
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=err)
    lines: list[str] = []
    banner = threading.Event()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines, banner), daemon=True)
    reader.start()
    try:
        assert banner.wait(60), f"no 'Ctrl-C to stop' within 60 s: {lines}"
        url = next((ln.strip() for ln in lines if ln.strip().startswith("http://")), None)
        assert url is not None, f"no URL printed: {lines}; stderr: {err_path.read_text()}"
        assert url.startswith(f"http://127.0.0.1:{port}/dashboard/studies/")
        assert b"<html" in _get(url).lower()
        proc.send_signal(sig)
        sent = time.monotonic()
        try:
            rc = proc.wait(timeout=STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the dashboard did not exit within {STOP_WITHIN_S} s of {sig.name} "
                        f"(SIGINT inherited {inherited}); stderr: {err_path.read_text()[-2000:]}")
        waited = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
    stderr = err_path.read_text()
    assert rc == 0, f"exit {rc}; stderr: {stderr[-2000:]}"
    assert waited < STOP_WITHIN_S
    assert "Traceback" not in stderr
