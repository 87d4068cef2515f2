"""The dashboard as a user sees it: headless Chromium renders the study, its trials and notes.

Skipped when Chromium is not installed (``apt-get install chromium``); under REQUIRE_SERVICES=1
(.ci/run, which installs it) a missing Chromium fails instead.
Leaves a screenshot of the study page at ``<run_dir>/dashboard.png``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from search.study.notes import artifact_store, attach_final, write_trial_note
from search.view.dashboard import make_dashboard_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    # The page asks the server for importances of a 12-trial study; optuna says they are rough.
    pytest.mark.filterwarnings("ignore:Some regimes:UserWarning"),
]

# The suite imports test files by path (--import-mode=importlib): load the sibling helper the same way.
_spec = importlib.util.spec_from_file_location("finished_study", Path(__file__).with_name("finished_study.py"))
finished_study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(finished_study)

# The single-page app fetches the study after it loads; virtual time lets it finish without sleeping.
VIRTUAL_TIME_MS = 10_000


def _chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           f"--virtual-time-budget={VIRTUAL_TIME_MS}", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(autouse=True)
def _needs_chromium(require_or_skip) -> None:  # noqa: ANN001
    if CHROMIUM is None:
        require_or_skip("chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    out = tmp_path_factory.mktemp("runs")
    study = finished_study.build_study(out)
    run_dir = out / study.study_name
    for t in study.get_trials(deepcopy=False):
        write_trial_note(study, t)
    card = run_dir / "model_card.json"
    card.write_text(json.dumps({"data": finished_study.DATA}))
    attach_final(study, study.best_trial.number, run_dir, [card], "## Final model\n\nmacro_f1 0.61\n")
    srv = make_dashboard_server(study._storage, host="127.0.0.1", port=0, store=artifact_store(run_dir))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/dashboard/studies/{study._study_id}", study, run_dir
    srv.shutdown()
    srv.server_close()


def test_study_page_renders_and_is_screenshotted(site, tmp_path: Path) -> None:  # noqa: ANN001
    url, study, run_dir = site
    dom = _chromium(url, tmp_path / "p1", "--dump-dom").stdout
    assert f"{study.study_name} (id={study._study_id})" in dom  # the app bar: the study was fetched
    assert f"Trial (number={study.best_trial.number})" in dom  # the best-trial card
    assert "macro_f1" in dom  # the objective is named after the metric, not "Objective 0"

    shot = run_dir / "dashboard.png"
    done = _chromium(url, tmp_path / "p2", f"--screenshot={shot}", "--window-size=1400,900")
    assert shot.is_file(), done.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1400, 900)
        colours = img.convert("RGB").getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 200  # a rendered page with plots, not a blank or error page


def test_trial_list_shows_every_trial_with_its_note(site, tmp_path: Path) -> None:  # noqa: ANN001
    url, study, _ = site
    dom = _chromium(f"{url}/trials", tmp_path / "p3", "--dump-dom").stdout
    listed = {int(n) for n in re.findall(r">Trial (\d+)<", dom)}
    assert listed == {t.number for t in study.trials}
    first = study.trials[0]
    assert f"Trial {first.number} (trial_id={first._trial_id})" in dom
    assert "seed net" in dom and "trunk" in dom  # the first trial's note (a seed net) is rendered
