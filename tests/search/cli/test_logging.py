"""--debug shows our debug lines, not third-party chatter (which once filled a 64 KiB pipe in a test)."""

from __future__ import annotations

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
