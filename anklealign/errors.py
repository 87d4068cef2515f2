"""The one exception type for a source that cannot be read as a dataset."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(Exception):
    """A bad data source: missing, empty, corrupt, unsafe or not a known layout.

    The message is one readable line that names the path and what is wrong with it; the CLI
    prints it as ``error: <message>`` without a traceback.
    """
