"""From parsed flags to typed values: the study definition, its storage URL and its run folder.

Only the command line sees an ``argparse.Namespace``: each handler calls these once and hands the
library a :class:`Target` (or the definition alone), never the namespace.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna

import anklealign
from search.run.parallel import journal_url
from search.study.definition import StudyDef, StudyDefError, find_study_file, load_study_def, name_from_data
from search.study.errors import SearchError
from search.study.storage import ENV_STORAGE, default_url, load_existing

DEFAULT_DEFINITION = "default"  # the definition that ships with the package and a new --study NAME starts from

__all__ = ["Target", "resolve_definition", "named_definition", "storage_arg", "target_of", "load_target"]


@dataclass(frozen=True)
class Target:
    """Which study a command works on: its definition (named), storage URL and run folder."""

    defn: StudyDef
    storage_url: str
    run_dir: Path


def resolve_definition(args: argparse.Namespace) -> StudyDef:
    """The study definition with ``--set`` and the convenience flags applied (not yet named)."""
    overrides = list(getattr(args, "overrides", []) or [])
    if getattr(args, "data", None):
        overrides.append(f"data.source={json.dumps(str(Path(args.data).expanduser().resolve()))}")
    if getattr(args, "seed", None) is not None:
        overrides.append(f"study.seed={args.seed}")
    if getattr(args, "device", None):
        overrides.append(f"training.device={json.dumps(args.device)}")
    if getattr(args, "deterministic", False):
        overrides.append("training.deterministic=true")
    if getattr(args, "trials", None) is not None:
        if args.trials < 1:
            raise SearchError(f"--trials must be a positive number of finished trials, got {args.trials}")
        overrides.append(f"study.trials={args.trials}")
    path = _definition_path(args)
    try:
        return load_study_def(path, overrides)
    except StudyDefError as exc:
        if path != args.study or not _plain_name(args.study) or "no study definition named" not in str(exc):
            raise
        if getattr(args, "command", None) in ("run", "worker"):  # a new name: a new study of the default definition
            print(f"study {args.study}: no definition or run folder of that name, so a new study from the default "
                  f"definition ({DEFAULT_DEFINITION})", file=sys.stderr)
            return load_study_def(DEFAULT_DEFINITION, [f"study.name={json.dumps(args.study)}", *overrides])
        out = Path(getattr(args, "out", "runs")).expanduser()
        runs = sorted(p.name for p in out.glob("*") if (p / "study.toml").is_file()) if out.is_dir() else []
        raise StudyDefError(f"{exc}; run folders in {out}/: {', '.join(runs) or 'none'}") from None


def _definition_path(args: argparse.Namespace) -> str:
    """``--study``: a definition by name or path; failing that, the name of a run folder under ``--out``."""
    run_toml = Path(getattr(args, "out", "runs")).expanduser() / args.study / "study.toml"
    if not _plain_name(args.study) or not run_toml.is_file():
        return args.study
    try:
        find_study_file(args.study)
    except StudyDefError:
        return str(run_toml)
    return args.study


def _plain_name(text: str) -> bool:
    return bool(text) and not any(c in text for c in "/\\") and not text.endswith(".toml")


def named_definition(args: argparse.Namespace, defn: StudyDef) -> StudyDef:
    """The definition under its study name: its own, the run folder named by ``--study``, or the data's.

    ``--study NAME`` may name a run folder (``<out>/NAME/``) as well as a definition, so
    ``python -m search report --study anklealign-1f3a9c0e`` finds a run by the name ``run`` printed.
    Otherwise an unnamed definition is named after its data (:func:`search.study.definition.name_from_data`).
    """
    if defn.name:
        return defn
    folder = Path(args.out).expanduser() / args.study
    if _plain_name(args.study) and any((folder / f).is_file() for f in ("study.toml", "study.db", "journal.log")):
        return defn.named(args.study)
    source = defn.data.source or None
    return defn.named(name_from_data(source, anklealign.inspect(source).fingerprint))


def storage_arg(args: argparse.Namespace) -> str | None:
    """``--storage``, else the URL a parent process handed over in the environment (never on argv)."""
    return getattr(args, "storage", None) or os.environ.get(ENV_STORAGE) or None


def target_of(args: argparse.Namespace, defn: StudyDef, *, parallel: bool = False) -> Target:
    """``defn`` (named) with its storage: ``--storage``, else the run folder's own — ``study.db``, or
    ``journal.log`` for a ``--jobs`` run or after one."""
    run_dir = Path(args.out).expanduser() / defn.name
    url = storage_arg(args)
    if not url:
        journal = parallel or ((run_dir / "journal.log").is_file() and not (run_dir / "study.db").is_file())
        url = journal_url(run_dir) if journal else default_url(run_dir)
    return Target(defn=defn, storage_url=url, run_dir=run_dir)


def load_target(args: argparse.Namespace) -> tuple[Target, optuna.Study]:
    """The existing study named by ``--study``/``--data``/``--storage``/``--out``, under its recorded definition."""
    target = target_of(args, named_definition(args, resolve_definition(args)))
    defn, study = load_existing(target.defn, target.storage_url)
    return Target(defn=defn, storage_url=target.storage_url, run_dir=target.run_dir), study
