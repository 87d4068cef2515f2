"""Errors the CLI turns into one readable line and a non-zero exit (no traceback)."""

from __future__ import annotations

__all__ = ["SearchError", "EXIT_INTERRUPTED"]


class SearchError(Exception):
    """A problem the user can fix: bad study definition, storage URL, model file, ...

    The message is shown as ``error: <message>`` and the process exits with ``exit_code``.
    """

    exit_code: int = 2


# Exit code of a command stopped with Ctrl-C (the shell's convention: 128 + SIGINT).
EXIT_INTERRUPTED = 130
