"""No password in any output: displays, logs, files, study attributes, child processes' command lines."""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest

from search.study.definition import StorageSection
from search.study.storage import ENV_STORAGE, StorageError, hide_secret, open_storage, redact

PASSWORD = "p/w@d:%#x"  # every character that broke the old regex or URL parsing
PG = "postgresql+psycopg://postgres:{}@127.0.0.1:5432/test"  # trust auth: any password is accepted


@pytest.mark.parametrize("password", [PASSWORD, "s3cr/et", "a:b", "x#y", "50%off", "@home"])
def test_redact_hides_any_password(password: str) -> None:
    url = PG.format(quote(password, safe=""))
    shown = redact(url)
    assert shown == "postgresql+psycopg://postgres:***@127.0.0.1:5432/test"
    message = hide_secret(f"connection to {url} failed for password {password} ({quote(password, safe='')})", url)
    assert password not in message and quote(password, safe="") not in message and "***" in message


@pytest.mark.parametrize("url", ["sqlite:////tmp/x/study.db", "journal:///tmp/j.log",
                                 "mysql+pymysql://root@127.0.0.1:3306/test"])
def test_urls_without_a_password_are_shown_as_they_are(url: str) -> None:
    assert redact(url) == url


def test_an_unreachable_server_error_names_no_password() -> None:
    url = f"postgresql+psycopg://someone:{quote(PASSWORD, safe='')}@127.0.0.1:1/nodb"
    with pytest.raises(StorageError) as info:
        open_storage(url, StorageSection(), heartbeat=False)
    assert "***" in str(info.value) and PASSWORD not in str(info.value)
    assert quote(PASSWORD, safe="") not in str(info.value)


def _pg_reachable() -> str | None:
    import sqlalchemy

    try:
        with sqlalchemy.create_engine(PG.format("x"), connect_args={"connect_timeout": 3}).connect():
            return None
    except Exception as exc:  # noqa: BLE001 - any failure: the reason
        return str(exc).splitlines()[0]


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
@pytest.mark.postgres
def test_a_parallel_run_on_a_password_url_leaks_it_nowhere(tmp_path: Path, small_twin: Path, data_cache: Path,
                                                           fast_args: list[str], require_or_skip,  # noqa: ANN001
                                                           spawn) -> None:  # noqa: ANN001
    reason = _pg_reachable()
    if reason:
        require_or_skip(f"PostgreSQL not reachable: {reason}")
    name = f"secret-{uuid.uuid4().hex[:8]}"
    url = PG.format(quote(PASSWORD, safe=""))
    forms = {PASSWORD, quote(PASSWORD, safe=""), quote(PASSWORD)}
    out = tmp_path / "runs"
    # The URL reaches the parent the way the README recommends for secrets, in the environment, so that
    # no command line of the run (the parent's, its forked decoders', its trial processes') holds it.
    args = [sys.executable, "-m", "search", "--debug", "run", "--data", str(small_twin), "--out", str(out),
            "--jobs", "2", "--trials", "4", *fast_args, "--set", f"study.name={name}"]
    env = {**os.environ, "ANKLEALIGN_CACHE": str(data_cache), ENV_STORAGE: url}
    proc = spawn(args, env=env)  # output to files: --debug from three processes overflows a pipe
    cmdlines: dict[int, str] = {}
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:  # every child's command line, while it runs
        for child in _children(proc.pid):
            try:
                line = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if line:  # a child that has exited (a zombie) reads empty
                cmdlines[child] = line
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=60)
    try:
        assert proc.returncode == 0, stderr[-3000:]
        workers = [c for c in cmdlines.values() if " worker " in c]
        assert len(workers) == 2, cmdlines  # the run really started its trial processes...
        for line in [*cmdlines.values(), stdout, stderr]:  # ...and none of them, nor any output, holds it
            assert not any(f in line for f in forms), line[:500]
        assert "postgres:***@127.0.0.1" in stderr  # the URL is shown, redacted
        files = [p for p in out.rglob("*") if p.is_file()]
        assert {"study.toml", "metrics.json", "model_card.json", "report.html", "trials.csv"} <= {p.name for p in files}
        for path in files:
            data = path.read_bytes()
            assert not any(f.encode() in data for f in forms), path
        storage = open_storage(url, StorageSection(), heartbeat=False)
        study = optuna.load_study(study_name=name, storage=storage)
        attrs = [study.user_attrs, storage.get_study_system_attrs(storage.get_study_id_from_name(name))]
        attrs += [t.user_attrs for t in study.trials] + [t.system_attrs for t in study.trials]
        assert len(study.trials) >= 4
        for a in attrs:
            assert not any(f in repr(a) for f in forms)
    finally:
        try:
            optuna.delete_study(study_name=name, storage=url)
        except KeyError:
            pass
