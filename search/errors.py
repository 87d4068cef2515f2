"""Errors the CLI turns into one readable line and a non-zero exit (no traceback)."""

from __future__ import annotations

__all__ = ["SearchError", "NotBuiltError"]


class SearchError(Exception):
    """A problem the user can fix: bad study definition, storage URL, model file, ...

    The message is shown as ``error: <message>`` and the process exits with ``exit_code``.
    """

    exit_code: int = 2


class NotBuiltError(SearchError):
    """A subcommand that exists in the design but is not implemented yet."""
