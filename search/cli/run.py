"""``run`` and ``worker``: one straight line from the flags to the trainer, then the final step and the report.

The definition is resolved once, the data loaded once (they name the study, and every trial and the
final step reuse them), the storage opened once (:func:`search.run.session.open_session`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search.api import final_step
from search.cli.commands import publish_final, summary_rows
from search.cli.targets import resolve_definition, storage_arg, target_of
from search.run.parallel import JobPlan, check_parallel_storage, plan_jobs, recover_orphans, run_children
from search.run.queue import finished_count
from search.run.runner import RunOptions, RunOutcome, run_trials
from search.run.session import Session, check_writable, name_study, open_data, open_session
from search.study.errors import EXIT_INTERRUPTED, SearchError
from search.study.storage import redact
from search.view.report import write_report

__all__ = ["cmd_run", "cmd_worker"]


def cmd_run(args: argparse.Namespace) -> int:
    """``run``: create or resume the study, run until N finished trials, then the final step and the report."""
    return _run(args, worker=False)


def cmd_worker(args: argparse.Namespace) -> int:
    """``worker``: join a shared study and run trials until it has N; no final step."""
    return _run(args, worker=True)


def _run(args: argparse.Namespace, *, worker: bool) -> int:
    optuna.logging.set_verbosity(optuna.logging.DEBUG if args.debug else optuna.logging.WARNING)
    defn = resolve_definition(args)
    given = storage_arg(args)
    if worker and not given:
        raise SearchError("worker needs --storage URL (the shared study's database), or $SEARCH_STORAGE_URL")
    if defn.data.source == "":
        print("data: no --data given, using the built-in SYNTHETIC TWIN of AnkleAlign "
              "(generated images, not real photographs)", file=sys.stderr)
    plan = plan_jobs(device=defn.training.device, jobs=args.jobs, jobs_per_gpu=args.jobs_per_gpu)
    parallel = plan.jobs > 1 and not worker
    if parallel and given:
        check_parallel_storage(given)
    data = open_data(defn, device=defn.training.device)
    target = target_of(args, name_study(defn, data), parallel=parallel)
    check_writable(target.run_dir)
    print(f"study {target.defn.name}: run folder {target.run_dir}", file=sys.stderr)
    session = open_session(target.defn, storage_url=target.storage_url, run_dir=target.run_dir, data=data,
                           worker=worker)
    opts = RunOptions(trials=defn.study.trials, storage_url=target.storage_url, run_dir=target.run_dir,
                      device=defn.training.device, timeout=args.timeout, worker=worker, show_progress=not args.quiet)
    metrics_file = target.run_dir / "best" / "metrics.json"
    if (not worker and finished_count(session.study) >= defn.study.trials and metrics_file.is_file()
            and not args.final_again and not args.no_final):
        _already_done(session, metrics_file)
        return 0
    if parallel:
        outcome = _run_parallel(args, session, plan)
    else:
        outcome = run_trials(session, opts)
    _print_summary(session)
    if outcome.interrupted:
        cmd = " ".join(["python -m search", *sys.argv[1:]]) if sys.argv and "search" in sys.argv[0] else \
            f"python -m search {'worker' if worker else 'run'} --study {args.study} --trials {defn.study.trials}"
        print(f"\ninterrupted: {outcome.finished}/{defn.study.trials} trials finished; the running trial was "
              f"recorded and re-queued. Resume with:\n  {cmd}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if worker:
        return 0
    if not args.no_final:
        metrics = final_step(session.defn, session.study, session.run_dir, data=session.data, command="run")
        publish_final(session.study, session.run_dir, metrics)
    path = write_report(session.study, session.run_dir, defn=session.defn)
    print(f"report: {path}")
    print(f"trials: {session.run_dir / 'trials.csv'}")
    return 0


def _already_done(session: Session, metrics_file: Path) -> None:
    """A finished run asked to run again: where its results are, and how to redo the final step if wanted."""
    try:
        trial = json.loads(metrics_file.read_text(encoding="utf-8")).get("trial")
    except (OSError, ValueError):
        trial = None
    run_dir = session.run_dir
    if not (run_dir / "report.html").is_file():  # a run killed while it wrote the report: write it now
        write_report(session.study, run_dir, defn=session.defn)
    print(f"study {session.defn.name} already has {finished_count(session.study)} finished trials and its final "
          f"model (trial {trial}): nothing to do.\n  model and metrics: {run_dir / 'best'}\n  report: "
          f"{run_dir / 'report.html'}\nMore trials: --trials N with a larger N. The final step again (a second read "
          "of the test labels, logged): --final-again.")


def _run_parallel(args: argparse.Namespace, session: Session, plan: JobPlan) -> RunOutcome:
    """Run the opened study's trials in ``plan.jobs`` child processes, then recover what they left."""
    defn = session.defn
    print(f"running {plan.jobs} trial processes on {defn.name} (storage {redact(session.storage_url)})",
          file=sys.stderr)
    codes = run_children(plan, study_file=session.run_dir / "study.toml", storage_url=session.storage_url,
                         out=session.run_dir.parent, trials=defn.study.trials, device=defn.training.device,
                         quiet=args.quiet)
    orphans = recover_orphans(session.study)
    if orphans:
        print(f"{orphans} trial(s) left running by a dead process were failed and re-queued", file=sys.stderr)
    failed = [c for c in codes if c not in (0, EXIT_INTERRUPTED)]
    if failed:
        raise SearchError(f"{len(failed)} of {plan.jobs} trial processes failed (exit codes {failed}); "
                          f"finished trials are saved; run the same command again to continue")
    return RunOutcome(finished=finished_count(session.study), interrupted=EXIT_INTERRUPTED in codes,
                      study_name=defn.name)


def _print_summary(session: Session) -> None:
    defn, study = session.defn, session.study
    states = [t.state for t in study.get_trials(deepcopy=False)]
    counts = {s.name.lower(): states.count(s) for s in TrialState if states.count(s)}
    print(f"\nstudy {defn.name}: " + ", ".join(f"{n} {k}" for k, n in counts.items()), file=sys.stderr)
    for r in summary_rows(study, 3):
        tag = f" [{r['preset']}]" if r["preset"] else ""
        print(f"  trial {r['number']}{tag}: {defn.study.metric} {r['value']:.4f} ({defn.study.objective} cv mean)",
              file=sys.stderr)
    print(f"storage: {redact(session.storage_url)}", file=sys.stderr)
