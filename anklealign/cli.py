"""``python -m anklealign``: inspect a data source, or write the synthetic twin."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from anklealign.errors import DataError

__all__ = ["main"]


def _inspect(args: argparse.Namespace) -> int:
    from anklealign.dataset import inspect

    report = inspect(args.path, cache_dir=args.cache_dir)
    print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) if args.json else report.summary())
    return 0


class _UsageError(Exception):
    """A bad argument found after parsing (exit 2, like argparse's own errors)."""


def _synth(args: argparse.Namespace) -> int:
    import anklealign
    from anklealign.report import twin_lines
    from anklealign.twin.eval_draw import write_sheet

    if args.out is None and args.sheet is None:
        raise _UsageError("synth needs --out DIR (the twin) or --sheet FILE.png (example pictures), or both")
    if args.sheet is not None and args.sheet.suffix.lower() != ".png":
        raise _UsageError(f"--sheet must name a .png file, got {args.sheet}")
    if args.out is None:
        twin_only = [flag for flag, used in (("--difficulty", args.difficulty != "realistic"), ("--eval", args.eval),
                                             ("--zip", args.zip), ("--full-size", args.full_size)) if used]
        if twin_only:
            raise _UsageError(f"{', '.join(twin_only)} describe the twin: give --out DIR too "
                              "(the sheet always shows every named level)")
    else:
        try:   # the twin first: a bad value or an existing --out writes nothing at all
            manifest = anklealign.synth(args.out, seed=args.seed, scale=args.scale, as_zip=args.zip,
                                        full_size=args.full_size, difficulty=args.difficulty, eval_n=args.eval,
                                        eval_prior=args.eval_prior)
        except (ValueError, FileExistsError) as exc:   # bad --seed/--scale/--difficulty, or --out exists
            raise _UsageError(str(exc)) from exc
        print(f"wrote the synthetic twin (seed {args.seed}, scale {args.scale}, difficulty "
              f"{manifest.difficulty.name}{', full size' if args.full_size else ''}) to {manifest.root}")
        for line in twin_lines(manifest.twin):
            print(line)
    if args.sheet is not None:
        print(f"wrote the difficulty contact sheet to {write_sheet(args.sheet, seed=args.seed)}")
    return 0


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log progress (INFO)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks")
    parser = argparse.ArgumentParser(prog="python -m anklealign", parents=[common],
                                     description="AnkleAlign data: inspect a source or write the synthetic twin.")
    sub = parser.add_subparsers(dest="command", required=True)
    inspect = sub.add_parser("inspect", parents=[common], help="what a source holds and why files are skipped",
                             description="Scan anklealign.zip, its folder, or a train/<class>/ test/<class>/ "
                                         "folder and report counts and every skipped file with its reason.")
    inspect.add_argument("path", nargs="?", type=Path, default=None,
                         help="zip or folder (default: the synthetic twin)")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    inspect.add_argument("--cache-dir", type=Path, default=None,
                         help="cache folder (default: $ANKLEALIGN_CACHE or ~/.cache/anklealign)")
    inspect.set_defaults(handler=_inspect)
    synth = sub.add_parser("synth", parents=[common], help="write the synthetic twin of the archive",
                           description="Write the synthetic twin: the archive's layout, JSON and quirks, "
                                       "with generated pictures.")
    synth.add_argument("--out", type=Path, default=None, help="output folder (or .zip with --zip)")
    synth.add_argument("--zip", action="store_true", help="write a zip, like the distributed archive")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--scale", type=float, default=1.0, help="size relative to the real data (default 1.0)")
    synth.add_argument("--full-size", action="store_true", help="photo-sized images (median 1280x960)")
    synth.add_argument("--difficulty", default="realistic", metavar="LEVEL",
                       help="easy, realistic (default), hard, or a number in [0, 1]: how strongly the class "
                            "shows against pose/light/background variation, and how noisy the labels are")
    synth.add_argument("--eval", type=int, default=0, metavar="N",
                       help="also write N evaluation images to eval/<class>/ beside the archive, labelled "
                            "with their true class (never part of the archive)")
    synth.add_argument("--eval-prior", choices=("train", "test"), default="train",
                       help="class prior of the evaluation draw: the training pool's (default) or the "
                            "consensus set's")
    synth.add_argument("--sheet", type=Path, default=None, metavar="FILE.png",
                       help="write a contact sheet of example pictures at each named difficulty")
    synth.set_defaults(handler=_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad data or usage, 1 other failure)."""
    args = _parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (DataError, _UsageError) as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
