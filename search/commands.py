"""One handler per subcommand of ``python -m search``; each returns the exit code.

Handlers turn the argparse namespace into explicit objects (a :class:`StudyDef`, a
:class:`RunOptions`) and call library code with them; only this module and :mod:`search.cli` print.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from search.errors import NotBuiltError, SearchError
from search.studydef import StudyDef, load_study_def, name_from_data

__all__ = [
    "cmd_run",
    "cmd_worker",
    "cmd_best",
    "cmd_finalize",
    "cmd_export",
    "cmd_predict",
    "cmd_report",
    "cmd_dashboard",
    "resolve_definition",
    "named_definition",
    "run_dir_of",
    "storage_arg",
    "storage_of",
    "load_study",
]

EXIT_INTERRUPTED = 130


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
    return load_study_def(_definition_path(args), overrides)


def _definition_path(args: argparse.Namespace) -> str:
    """``--study``: a definition by name or path; failing that, the name of a run folder under ``--out``."""
    from search.studydef import StudyDefError, find_study_file

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
    Otherwise an unnamed definition is named after its data (:func:`search.studydef.name_from_data`).
    """
    if defn.name:
        return defn
    folder = Path(args.out).expanduser() / args.study
    if _plain_name(args.study) and any((folder / f).is_file() for f in ("study.toml", "study.db", "journal.log")):
        return defn.named(args.study)
    import anklealign

    source = defn.data.source or None
    return defn.named(name_from_data(source, anklealign.inspect(source).fingerprint))


def run_dir_of(args: argparse.Namespace, defn: StudyDef) -> Path:
    return Path(args.out).expanduser() / defn.name


def storage_arg(args: argparse.Namespace) -> str | None:
    """``--storage``, else the URL a parent process handed over in the environment (never on argv)."""
    from search.storage import ENV_STORAGE

    return getattr(args, "storage", None) or os.environ.get(ENV_STORAGE) or None


def storage_of(args: argparse.Namespace, defn: StudyDef) -> str:
    """``--storage``, else the run folder's own: ``study.db``, or ``journal.log`` after a ``--jobs`` run."""
    from search.parallel import journal_url
    from search.storage import default_url

    given = storage_arg(args)
    if given:
        return given
    run_dir = run_dir_of(args, defn)
    if (run_dir / "journal.log").is_file() and not (run_dir / "study.db").is_file():
        return journal_url(run_dir)
    return default_url(run_dir)


def _run(args: argparse.Namespace, *, worker: bool) -> int:
    import optuna

    from search.parallel import check_parallel_storage, journal_url, plan_jobs
    from search.runner import RunOptions, name_study, open_data, run_study

    optuna.logging.set_verbosity(optuna.logging.DEBUG if args.debug else optuna.logging.WARNING)
    defn = resolve_definition(args)
    if worker and not storage_arg(args):
        raise SearchError("worker needs --storage URL (the shared study's database), or $SEARCH_STORAGE_URL")
    if defn.data.source == "":
        print("data: no --data given, using the built-in SYNTHETIC TWIN of AnkleAlign "
              "(generated images, not real photographs)", file=sys.stderr)
    plan = plan_jobs(device=defn.training.device, jobs=getattr(args, "jobs", None),
                     jobs_per_gpu=getattr(args, "jobs_per_gpu", None))
    parallel = plan.jobs > 1 and not worker
    given = storage_arg(args)
    if parallel and given:
        check_parallel_storage(given)
    # The data are loaded once, here: they name the study, and every trial of this process reuses them.
    data = open_data(defn, device=defn.training.device)
    defn = name_study(defn, data)
    run_dir = run_dir_of(args, defn)
    _check_writable(run_dir)
    url = given or (journal_url(run_dir) if parallel else storage_of(args, defn))
    opts = RunOptions(trials=defn.study.trials, storage_url=url, run_dir=run_dir,
                      device=defn.training.device, timeout=args.timeout, worker=worker,
                      show_progress=not args.quiet)
    print(f"study {defn.name}: run folder {run_dir}", file=sys.stderr)
    if parallel:
        outcome = _run_parallel(args, defn, opts, plan, data)
    else:
        outcome = run_study(defn, opts, data=data)
    _print_summary(defn, opts.storage_url)
    if outcome.interrupted:
        cmd = " ".join(["python -m search", *sys.argv[1:]]) if sys.argv and "search" in sys.argv[0] else \
            f"python -m search {'worker' if worker else 'run'} --study {args.study} --trials {defn.study.trials}"
        print(f"\ninterrupted: {outcome.finished}/{defn.study.trials} trials finished; the running trial was "
              f"recorded and re-queued. Resume with:\n  {cmd}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if worker:
        return 0
    if not getattr(args, "no_final", False):
        _finalize_after_run(defn, url, run_dir)
    _write_report(defn, url, run_dir)
    return 0


def _run_parallel(args: argparse.Namespace, defn: StudyDef, opts, plan, data):  # noqa: ANN001, ANN202
    """Create the study here, run its trials in ``plan.jobs`` child processes, recover what they left."""
    from search.parallel import recover_orphans, run_children
    from search.runner import RunOutcome, finished_count, prepare_study
    from search.storage import redact

    prep = prepare_study(defn, opts, data)
    print(f"running {plan.jobs} trial processes on {defn.name} (storage {redact(opts.storage_url)})",
          file=sys.stderr)
    codes = run_children(plan, study_file=opts.run_dir / "study.toml", storage_url=opts.storage_url,
                         out=Path(args.out), trials=defn.study.trials, device=defn.training.device,
                         quiet=args.quiet)
    orphans = recover_orphans(prep.study)
    if orphans:
        print(f"{orphans} trial(s) left running by a dead process were failed and re-queued", file=sys.stderr)
    failed = [c for c in codes if c not in (0, EXIT_INTERRUPTED)]
    if failed:
        raise SearchError(f"{len(failed)} of {plan.jobs} trial processes failed (exit codes {failed}); "
                          f"finished trials are saved; run the same command again to continue")
    return RunOutcome(finished=finished_count(prep.study), interrupted=EXIT_INTERRUPTED in codes,
                      study_name=defn.name)


def _check_writable(run_dir: Path) -> None:
    import tempfile

    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        # A probe of its own: workers started together share the folder, and one fixed probe name let
        # one worker delete the other's probe before its unlink ("No such file or directory").
        with tempfile.TemporaryFile(dir=run_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise SearchError(f"cannot write to the output folder {run_dir}: {exc.strerror or exc}") from exc


def _open(defn: StudyDef, url: str):  # noqa: ANN202 - optuna.Study, imported lazily
    import optuna

    from search.storage import open_storage

    return optuna.load_study(study_name=defn.name, storage=open_storage(url, defn.storage, heartbeat=False))


def _finalize_after_run(defn: StudyDef, url: str, run_dir: Path) -> None:
    from search.finalize import finalize, format_table

    metrics = finalize(defn, _open(defn, url), run_dir=run_dir, device=defn.training.device, command="run")
    print(format_table(metrics))
    print(f"files: {run_dir / 'best'}: {', '.join(metrics['files'])}")


def _write_report(defn: StudyDef, url: str, run_dir: Path) -> None:
    """report.html and trials.csv, as ``search report`` writes them; their paths are the last lines printed."""
    from search.report import write_report

    path = write_report(_open(defn, url), run_dir, defn=defn)
    print(f"report: {path}")
    print(f"trials: {run_dir / 'trials.csv'}")


def cmd_run(args: argparse.Namespace) -> int:
    """``run``: create or resume the study, run until N finished trials, then the final step and the report."""
    return _run(args, worker=False)


def cmd_worker(args: argparse.Namespace) -> int:
    """``worker``: join a shared study and run trials until it has N; no final step."""
    return _run(args, worker=True)


def load_study(args: argparse.Namespace):  # noqa: ANN202 - (StudyDef, optuna.Study), imported lazily
    """The study named by ``--study``/``--data``/``--storage``/``--out`` and its recorded definition."""
    import optuna

    from search.storage import open_storage, redact
    from search.studydef import study_def_from_dict

    defn = named_definition(args, resolve_definition(args))
    url = storage_of(args, defn)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        raise SearchError(f"no study storage at {url[len('sqlite:///'):]} (run 'python -m search run "
                          f"--study {args.study}' first, or pass --storage/--out)")
    storage = open_storage(url, defn.storage, heartbeat=False)
    try:
        study = optuna.load_study(study_name=defn.name, storage=storage)
    except KeyError as exc:
        raise SearchError(f"no study named {defn.name!r} in {redact(url)}") from exc
    recorded = study.user_attrs.get("definition")
    # The study's own recorded definition wins over today's TOML file: it is what the trials ran with.
    return (study_def_from_dict(recorded).named(defn.name) if recorded else defn), study


def _summary_rows(study, top: int) -> list[dict[str, Any]]:  # noqa: ANN001
    from optuna.trial import TrialState

    from search.records import TrialRecord

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    done.sort(key=lambda t: t.value, reverse=True)
    rows = []
    for t in done[:top]:
        r = TrialRecord.of(t)
        rows.append({"number": t.number, "value": t.value, "cv_best": r.cv_best, "best_epoch": r.best_epoch,
                     "cv_last": r.cv_last, "epochs_run": r.epochs_run, "preset": r.preset,
                     "params_count": r.params_count, "config": r.config})
    return rows


def _print_summary(defn: StudyDef, url: str) -> None:
    from optuna.trial import TrialState

    from search.storage import redact

    study = _open(defn, url)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    counts = {s.name.lower(): states.count(s) for s in TrialState if states.count(s)}
    print(f"\nstudy {defn.name}: " + ", ".join(f"{n} {k}" for k, n in counts.items()), file=sys.stderr)
    for r in _summary_rows(study, 3):
        tag = f" [{r['preset']}]" if r["preset"] else ""
        print(f"  trial {r['number']}{tag}: {defn.study.metric} {r['value']:.4f} ({defn.study.objective} cv mean)",
              file=sys.stderr)
    print(f"storage: {redact(url)}", file=sys.stderr)


def cmd_best(args: argparse.Namespace) -> int:
    """``best``: the top trials with their configs."""
    defn, study = load_study(args)
    rows = _summary_rows(study, args.top)
    if args.json:
        print(json.dumps({"study": defn.name, "metric": defn.study.metric, "objective": defn.study.objective,
                          "data": study.user_attrs.get("data"), "trials": rows}, indent=2))
        return 0
    if not rows:
        print(f"study {defn.name}: no complete trial yet")
        return 0
    data = study.user_attrs.get("data") or {}
    print(f"study {defn.name} — data: {data.get('note', '?')} ({data.get('source', '?')})")
    print(f"top {len(rows)} by cross-validated {defn.study.metric} ({defn.study.objective.replace('_', ' ')} "
          "value; best-epoch and last-epoch values both shown):")
    for r in rows:
        tag = f" [{r['preset']}]" if r["preset"] else ""
        cfg = r["config"] or {}
        model = cfg.get("model", {})
        chans = [b.get("channels") for b in model.get("blocks", [])]
        print(f"  #{r['number']}{tag}: {r['value']:.4f}  best epoch {r['best_epoch']}: {r['cv_best']:.4f}  "
              f"last epoch {r['epochs_run']}: {r['cv_last']:.4f}  "
              f"params={r['params_count']}  channels={chans} head={model.get('head_hidden')}  "
              f"input={cfg.get('input')}  train={cfg.get('train')}")
    return 0


def _delegate(module: str, func: str, args: argparse.Namespace) -> int:
    """Call ``search.<module>.<func>(args)``; a module that does not exist yet says so."""
    import importlib

    try:
        mod = importlib.import_module(f"search.{module}")
    except ModuleNotFoundError as exc:
        if exc.name == f"search.{module}":
            raise NotBuiltError(f"'{args.command}' is not built yet") from exc
        raise
    return getattr(mod, func)(args)


def cmd_finalize(args: argparse.Namespace) -> int:
    """``finalize``: retrain the best trial with several seeds, score on the test set, export."""
    return _delegate("finalize", "cli_finalize", args)


def cmd_export(args: argparse.Namespace) -> int:
    """``export``: export any trial's model like the final step does."""
    return _delegate("export", "cli_export", args)


def cmd_predict(args: argparse.Namespace) -> int:
    """``predict``: classify images with an exported model."""
    return _delegate("predict", "cli_predict", args)


def cmd_report(args: argparse.Namespace) -> int:
    """``report``: report.html and trials.csv."""
    return _delegate("report", "cli_report", args)


def cmd_dashboard(args: argparse.Namespace) -> int:
    """``dashboard``: optuna-dashboard on the study's storage and artifact store."""
    return _delegate("dashboard", "cli_dashboard", args)
