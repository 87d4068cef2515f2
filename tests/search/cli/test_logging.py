"""--debug shows our debug lines, not third-party chatter (which once filled a 64 KiB pipe in a test)."""

from __future__ import annotations

import argparse
import logging

import pytest

from search.cli import _CHATTY, _setup_logging


@pytest.fixture
def _restore_levels():  # noqa: ANN202
    names = ["optuna", *_CHATTY]
    saved = {n: logging.getLogger(n).level for n in names}
    yield
    for n, level in saved.items():
        logging.getLogger(n).setLevel(level)


@pytest.mark.usefixtures("_restore_levels")
@pytest.mark.parametrize(("debug", "quiet", "floor"), [(True, False, logging.INFO), (False, False, logging.INFO),
                                                       (False, True, logging.WARNING)])
def test_matplotlib_and_pil_never_log_below_info(debug: bool, quiet: bool, floor: int) -> None:
    _setup_logging(debug=debug, quiet=quiet)
    for name in ("matplotlib.font_manager", "PIL.PngImagePlugin", "PIL.TiffImagePlugin"):
        assert logging.getLogger(name).getEffectiveLevel() == floor
    assert logging.getLogger("optuna").getEffectiveLevel() == (logging.DEBUG if debug else logging.WARNING)


def test_every_subcommand_has_a_description_an_example_and_help_for_every_option() -> None:
    from search.cli.parser import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, cmd in sub.choices.items():
        assert cmd.description and len(cmd.description) > 40, name
        assert cmd.epilog and f"python -m search {name}" in cmd.epilog, name
        for action in cmd._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"{name} {action.option_strings or action.dest} has no help text"
    # One meaning per option: --out is the runs folder wherever a study is named.
    for name, cmd in sub.choices.items():
        out = next((a for a in cmd._actions if "--out" in a.option_strings), None)
        if out is not None:
            assert out.dest == "out" and out.default == "runs", name


def test_a_terminal_sees_the_running_trials_epoch_and_score(small_twin, data_cache, tmp_path) -> None:  # noqa: ANN001
    """On a terminal (a pseudo-terminal here, 140 columns) the bar shows the running trial's epoch and score."""
    import fcntl
    import os
    import pty
    import struct
    import sys
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: a run whose stderr is a terminal; it never returns into pytest
        try:
            fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
            os.environ["ANKLEALIGN_CACHE"] = str(data_cache)
            os.execv(sys.executable, [sys.executable, "-m", "search", "run", "--out", str(tmp_path), "--data",
                                      str(small_twin), "--set", "training.max_epochs=3", "--set",
                                      "space.image_size=[16]", "--set", "cv.folds=2", "--trials", "1", "--set",
                                      'study.enqueue_presets=["net0"]', "--no-final"])
        finally:
            os._exit(127)
    out = b""
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        out += data
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text[-2000:]
    assert "trial 0 epoch 1/3 macro_f1" in text and "\r" in text  # the bar, redrawn in place
