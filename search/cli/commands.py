"""The handlers of ``best``, ``finalize``, ``export``, ``score``, ``report`` and ``dashboard``.

Each turns its flags into typed values (:mod:`search.cli.targets`), calls the library and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from search.api import final_step
from search.cli.targets import load_target
from search.final.finalize import finalize_trial
from search.final.retrain import pick_trial, with_final_overrides
from search.final.score import score_folder
from search.study import atomic, optuna_api
from search.study.errors import SearchError
from search.study.notes import ARTIFACTS_DIR, artifact_store, attach_final
from search.study.records import StudyRecord, TrialRecord
from search.study.storage import redact
from search.view.dashboard import dashboard_url, is_loopback, make_dashboard_server, release, serve_until_signal
from search.view.report import write_report
from search.view.text import format_table, gain_lines, metric_rows, summary_lines, trust_lines

__all__ = ["cmd_best", "cmd_finalize", "cmd_export", "cmd_score", "cmd_report", "cmd_dashboard", "summary_rows",
           "publish_final"]


def summary_rows(study: optuna.Study, top: int) -> list[dict[str, Any]]:
    """The ``top`` complete trials, best first, with their recorded scores and config."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    done.sort(key=lambda t: t.value, reverse=True)
    exported = (StudyRecord.of(study).exported or {}).get("trial")
    rows = []
    for t in done[:top]:
        r = TrialRecord.of(t)
        rows.append({"number": t.number, "exported": t.number == exported, "value": t.value, "cv_best": r.cv_best,
                     "best_epoch": r.best_epoch,
                     "cv_last": r.cv_last, "epochs_run": r.epochs_run, "preset": r.preset,
                     "params_count": r.params_count, "config": r.config})
    return rows


def cmd_best(args: argparse.Namespace) -> int:
    """``best``: the top trials with their configs."""
    target, study = load_target(args)
    defn = target.defn
    rows = summary_rows(study, args.top)
    data = StudyRecord.of(study).data
    if getattr(args, "toml", False):
        print(_toml_block(study, defn.name))
        return 0
    if args.json:
        print(json.dumps({"study": defn.name, "metric": defn.study.metric, "objective": defn.study.objective,
                          "data": data, "exported": StudyRecord.of(study).exported, "trials": rows}, indent=2))
        return 0
    if not rows:
        print(f"study {defn.name}: no complete trial yet")
        return 0
    data = data or {}
    print(f"study {defn.name} — data: {data.get('note', '?')} ({data.get('source', '?')})")
    print(f"top {len(rows)} by cross-validated {defn.study.metric} ({defn.study.objective.replace('_', ' ')} "
          "value; best-epoch and last-epoch values both shown):")
    exported = StudyRecord.of(study).exported
    if exported:
        print(f"exported by the final step: trial {exported['trial']} ({exported.get('why')})")
    for r in rows:
        tag = (f" [{r['preset']}]" if r["preset"] else "") + (" EXPORTED" if r["exported"] else "")
        cfg = r["config"] or {}
        model = cfg.get("model", {})
        chans = [b.get("channels") for b in model.get("blocks", [])]
        print(f"  #{r['number']}{tag}: {r['value']:.4f}  best epoch {r['best_epoch']}: {r['cv_best']:.4f}  "
              f"last epoch {r['epochs_run']}: {r['cv_last']:.4f}  "
              f"params={r['params_count']}  channels={chans} head={model.get('head_hidden')}  "
              f"input={cfg.get('input')}  train={cfg.get('train')}")
    return 0


def publish_final(study: optuna.Study, run_dir: Path, metrics: dict[str, Any]) -> None:
    """Print the summary (the final step wrote the full table to ``best/summary.txt``) and attach the files to the
    dashboard (a failure there only warns)."""
    table = format_table(metrics)
    best = run_dir / "best"
    print("\n".join(summary_lines(metrics, run_dir=run_dir)))
    try:
        attach_final(study, metrics["trial"], run_dir, [best / f for f in metrics["files"]], f"```\n{table}\n```")
    except Exception as exc:  # the files are written; a dashboard problem must not undo that
        print(f"warning: could not attach the final files to the dashboard: {exc}", file=sys.stderr)


def _toml_block(study: optuna.Study, name: str) -> str:
    """The exported (else the best) trial's settings as a ``[space]`` table to paste into a study file."""
    from space import TrialCfg
    from space.projection import space_of

    exported = (StudyRecord.of(study).exported or {}).get("trial")
    rows = summary_rows(study, 1)
    number = exported if exported is not None else (rows[0]["number"] if rows else None)
    if number is None:
        raise SearchError(f"study {name} has no complete trial yet: no settings to print")
    config = TrialRecord.of(study.trials[number]).config
    if not config:
        raise SearchError(f"trial {number} of study {name} records no config")
    cfg = TrialCfg.from_dict(config)
    widths = ", ".join(f"conv{i}_channels={b.channels}" for i, b in enumerate(cfg.model.blocks))
    how = "exported by the final step" if number == exported else "the best cross-validated value (none exported yet)"
    return (f"# trial {number} of study {name}, {how}: [space] fixed to its settings.\n"
            f"# Per-block widths {widths}; head {list(cfg.model.head_hidden)}: the space holds one width list for all "
            "blocks,\n# so a search in it still chooses which of these widths each block gets.\n"
            + "[space]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in space_of(cfg).items()))


def cmd_finalize(args: argparse.Namespace) -> int:
    """``finalize``: retrain the best trial, score it on the test set, export it; print the table."""
    target, study = load_target(args)
    defn = with_final_overrides(target.defn, args.overrides)
    metrics = final_step(defn, study, target.run_dir, device=args.device, data_source=args.data, command="finalize")
    publish_final(study, target.run_dir, metrics)
    return 0


def _export_folders(args: argparse.Namespace) -> Path:
    """``--to`` (the model folder) and ``--out`` (the runs folder, as in every command); the older spelling
    ``--runs RUNS --out MODEL`` (or ``--out MODEL`` alone) still works, with a note."""
    if args.to_dir is not None:
        if args.runs_old is not None:
            print("note: export --runs is now --out (the runs folder, as in every command)", file=sys.stderr)
            args.out = args.runs_old
        return Path(args.to_dir).expanduser()
    if args.runs_old is None and (args.out == "runs" or (Path(args.out).expanduser() / args.study).is_dir()):
        raise SearchError("export needs --to DIR, the folder to write the model to (e.g. --to exported/)")
    print("note: export now takes --to DIR for the model folder and --out for the runs folder, as every command "
          f"does; read as --to {args.out}" + (f" --out {args.runs_old}" if args.runs_old else ""), file=sys.stderr)
    to_dir, args.out = Path(args.out).expanduser(), args.runs_old or "runs"
    return to_dir


def cmd_export(args: argparse.Namespace) -> int:
    """``export --study NAME [--trial N] --to DIR [--out runs/]``: the final step's model, or a given trial.

    Without ``--trial`` it copies what the final step exported (the same model ``run`` made: no retraining, no
    read of the test labels). With ``--trial N`` it retrains that trial like the final step (a logged read of
    the test labels) and writes the same files into ``--to``.
    """
    to_dir = _export_folders(args)
    target, study = load_target(args)
    if args.trial is None:
        return _copy_final(target.run_dir, to_dir, study.study_name)
    defn = with_final_overrides(target.defn, getattr(args, "overrides", None) or ())
    trial = pick_trial(study, args.trial)
    metrics = finalize_trial(defn, study, trial, out_dir=to_dir, run_dir=target.run_dir,
                             command="export", device=args.device or defn.training.device, data_source=args.data)
    print(format_table(metrics))
    return 0


def _copy_final(run_dir: Path, out_dir: Path, study: str) -> int:
    """Copy the final step's exported model and its reports (not the kept baselines) to ``out_dir``."""
    best = run_dir / "best"
    metrics_file = best / "metrics.json"
    if not metrics_file.is_file():
        raise SearchError(f"study {study!r} has no final model yet ({metrics_file} is missing): run "
                          f"'python -m search finalize --study {study}' first, or retrain one trial with --trial N")
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [f for f in metrics.get("files", []) if (best / f).is_file()]
    for name in files:
        atomic.write_bytes(out_dir / name, (best / name).read_bytes())
    print(f"exported trial {metrics.get('trial')} of study {study}, the final step's model, to {out_dir} "
          f"({', '.join(files)}): copied, not retrained; the test labels were not read again.\n"
          f"how it was chosen: {metrics.get('exported', '?')}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """``score FOLDER --study NAME``: the final models and baselines on an extra labelled folder (the older
    ``score RUN_DIR FOLDER`` still works)."""
    if args.bootstrap < 0:
        raise SearchError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if len(args.paths) == 2:
        run_dir, folder = (Path(p).expanduser() for p in args.paths)
    elif len(args.paths) == 1:
        run_dir, folder = load_target(args)[0].run_dir, Path(args.paths[0]).expanduser()
    else:
        raise SearchError(f"score takes one labelled FOLDER (and --study), got {len(args.paths)} paths")
    m = score_folder(run_dir, folder, n_boot=args.bootstrap, seed=args.seed)
    if args.json:
        print(json.dumps(m, indent=1))
        return 0
    data = m["data"]
    counts = ", ".join(f"{c} {n}" for c, n in data["class_counts"].items())
    trained = (data.get("trained_on") or {}).get("note", "?")
    print(f"study {m['study']}: models trained on {trained}; scored on {data['folder']} "
          f"({data['images']} images: {counts}; {len(data['skipped'])} undecodable left out)")
    print(f"exported: {m.get('exported') or 'the ensemble of best/'}")
    copies = data.get("test_copies") or 0
    read = (f"{copies} of these images are the study's test images: this was a logged read of its test labels"
            if copies else "this folder is not a test-set read")
    print(f"mean [95 % bootstrap interval over the images]; ± = std over seeds; {read}\n")
    print("\n".join([*metric_rows(m), "", *gain_lines(m), "", *trust_lines(m)]))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``report``: write report.html and trials.csv into the study's run folder and print their paths."""
    target, study = load_target(args)
    path = write_report(study, target.run_dir, defn=target.defn)
    print(f"report: {path}")
    print(f"trials: {target.run_dir / 'trials.csv'}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """``dashboard``: serve optuna-dashboard for the study until Ctrl-C (exit 0)."""
    target, study = load_target(args)
    host, port = args.host, args.port
    if not 0 < port < 65536:
        raise SearchError(f"--port must be in 1..65535, got {port}")
    try:
        store = artifact_store(target.run_dir)
    except OSError as exc:
        store = None
        print(f"warning: no artifact store ({target.run_dir / ARTIFACTS_DIR}: {exc.strerror or exc}); "
              f"the final model's files will not open", file=sys.stderr)
    storage = optuna_api.storage_of(study)
    server = make_dashboard_server(storage, host=host, port=port, store=store)
    if not is_loopback(host):
        print(f"warning: the dashboard has no authentication: anyone who can reach {host}:{port} can read "
              f"this study, edit its notes and delete studies. Prefer the default --host 127.0.0.1 and an "
              f"SSH tunnel (ssh -L {port}:127.0.0.1:{port} <this machine>).", file=sys.stderr)
    data = StudyRecord.of(study).data or {}
    n = len(study.get_trials(deepcopy=False))

    def announce() -> None:  # printed once Ctrl-C is sure to stop the server
        print(f"optuna-dashboard: study {study.study_name} ({n} trials) on {redact(target.storage_url)}")
        if data:
            print(f"data: {data.get('note', '?')} ({data.get('source', '?')})")
        print(f"  {dashboard_url(host, port, optuna_api.study_id(study))}")
        print("Ctrl-C to stop", flush=True)

    serve_until_signal(server, ready=announce)
    release(storage)
    return 0
