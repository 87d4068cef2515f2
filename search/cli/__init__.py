"""Command line of the search tool: ``python -m search <command>``.

The only package that sees argparse: :mod:`search.cli.parser` defines the flags,
:mod:`search.cli.targets` turns them into typed values (the study definition, the storage URL, the
run folder), and one handler per subcommand (:mod:`search.cli.run`, :mod:`search.cli.commands`)
calls library code with those values and prints. ``main(argv)`` returns the exit code so tests call
it directly. Errors the user can fix (:class:`search.study.errors.SearchError`, ``anklealign.DataError``,
bad values) become one line ``error: ...`` on stderr and a non-zero exit; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

from anklealign import DataError
from search.cli.parser import build_parser
from search.study.errors import EXIT_INTERRUPTED, SearchError

__all__ = ["main", "build_parser"]

# Each subcommand's handler, imported when it runs (``--help`` stays fast and imports no torch).
HANDLERS = {
    "run": "search.cli.run:cmd_run",
    "worker": "search.cli.run:cmd_worker",
    "finalize": "search.cli.commands:cmd_finalize",
    "best": "search.cli.commands:cmd_best",
    "score": "search.cli.commands:cmd_score",
    "report": "search.cli.commands:cmd_report",
    "export": "search.cli.commands:cmd_export",
    "predict": "search.cli.predict:cmd_predict",
    "dashboard": "search.cli.commands:cmd_dashboard",
}

_USER_ERRORS = (SearchError, DataError, ValueError, FileNotFoundError, PermissionError)


_CHATTY = ("matplotlib", "PIL")


def _setup_logging(*, debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s" if not debug else "%(levelname)s %(name)s: %(message)s")
    # Optuna's own per-trial INFO lines duplicate ours; keep its warnings.
    logging.getLogger("optuna").setLevel(logging.DEBUG if debug else logging.WARNING)
    # --debug is for our code: matplotlib's font scoring and PIL's PNG chunks (60 KiB a run) would bury it.
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(level, logging.INFO))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit code."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    _setup_logging(debug=args.debug, quiet=args.quiet)
    module, func = HANDLERS[args.command].split(":")
    try:
        return getattr(importlib.import_module(module), func)(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"error: {str(exc) or exc.__class__.__name__}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
