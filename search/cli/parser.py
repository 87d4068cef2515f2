"""The argument parser of ``python -m search``: every subcommand and flag, nothing else."""

from __future__ import annotations

import argparse
import textwrap

__all__ = ["build_parser"]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see '{self.prog} --help')\n")


def _add_study_args(p: argparse.ArgumentParser, *, data: bool = True) -> None:
    p.add_argument("--study", default="default",
                   help="a study definition (studies/<name>.toml or a path to a TOML file) or the name of a "
                        "run folder under --out (default: default, the definition that ships with the tool)")
    p.add_argument("--storage", default=None,
                   help="SQLAlchemy URL of the Optuna storage (default: sqlite:///<out>/<study>/study.db)")
    p.add_argument("--out", default="runs", help="root folder of run outputs (default: runs/)")
    if data:
        p.add_argument("--data", default=None,
                       help="the data the study ran on, which names it (default: the definition's, else the "
                            "synthetic twin)")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None,
                   help="anklealign.zip, its unzipped folder, or a train/<class>/ test/<class>/ folder "
                        "(default: the built-in synthetic twin); it names the study unless study.name is set")
    p.add_argument("--deterministic", action="store_true",
                   help="torch.use_deterministic_algorithms: bit-for-bit repeatable training (may be slower)")
    p.add_argument("--trials", type=int, default=None,
                   help="run until the study has N finished trials (complete, pruned or failed)")
    p.add_argument("--timeout", type=float, default=None, help="stop starting new trials after this many seconds")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"], help="training device (default: auto)")
    p.add_argument("--seed", type=int, default=None, help="study seed (sampler, folds, trial seeds)")
    p.add_argument("--jobs-per-gpu", type=int, default=None, dest="jobs_per_gpu",
                   help="trial processes sharing each GPU (default 1; one process per GPU)")
    p.add_argument("--jobs", type=int, default=None,
                   help="trial processes on the CPU (default 1; with more, the storage defaults to a journal file)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                   help="override any key of the study definition (repeatable), e.g. --set cv.folds=5")


# What each command does, beyond its one-line help, and a command line to start from.
_ABOUT = {
    "run": ("Run a study until it has --trials finished trials (resuming one that exists), then the final step: "
            "retrain the chosen trial with several seeds, score it once on the test set, export it and write "
            "the report.",
            ["python -m search run --trials 30", "python -m search run --data my_photos/ --trials 50",
             "python -m search run --data anklealign.zip --set cv.folds=5 --storage postgresql://host/db"]),
    "worker": ("Join a study on a shared database and run trials until it has --trials finished ones; no final "
               "step (run 'finalize' once all workers are done).",
               ["python -m search worker --data my_photos/ --storage postgresql://user@host/db --trials 100"]),
    "finalize": ("Retrain the trial the final step chooses, score it on the test set (a logged read of the test "
                 "labels) and export it into <out>/<study>/best/.",
                 ["python -m search finalize --study my_photos-1f3a9c0e",
                  "python -m search finalize --study my_photos-1f3a9c0e --set final.seeds=5"]),
    "score": ("Score a finished run's exported model, its reference models and the guessers on another labelled "
              "folder (FOLDER/<class>/ images) with 95 % intervals; copies of training images are left out.",
              ["python -m search score twin/eval --study twin-6e07b255",
               "python -m search score labelled/ --study my_photos-1f3a9c0e --json"]),
    "best": ("Print the best trials and their settings, the exported trial marked.",
             ["python -m search best --study my_photos-1f3a9c0e --top 3"]),
    "report": ("Write report.html (the result first, then the trials and the search's figures) and trials.csv.",
               ["python -m search report --study my_photos-1f3a9c0e"]),
    "export": ("Copy the model the final step exported to --to (no retraining, no read of the test labels), or "
               "retrain a given --trial like the final step and export that.",
               ["python -m search export --study my_photos-1f3a9c0e --to exported/",
                "python -m search export --study my_photos-1f3a9c0e --trial 12 --to trial12/"]),
    "predict": ("Classify image files or folders with an exported model (PyTorch, or ONNX with --onnx).",
                ["python -m search predict --model runs/my_photos-1f3a9c0e/best photo1.jpg photos/"]),
    "dashboard": ("Serve optuna-dashboard for the study, with the final model's files attached.",
                  ["python -m search dashboard --study my_photos-1f3a9c0e --port 8080"]),
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by tests to check the Dockerfile's command)."""
    parser = _Parser(prog="python -m search",
                     description="Optuna architecture and hyperparameter search for small CNN classifiers.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("run", help="run (or resume) a study, then retrain, score and export the best model")
    _add_study_args(p, data=False)
    _add_run_args(p)
    p.add_argument("--no-final", action="store_true", help="skip the final retrain/score/export step")
    p.add_argument("--final-again", action="store_true",
                   help="on a finished run that has its final model, run the final step again (it reads the test "
                        "labels again, and that read is logged); without it such a run only says where its results are")

    p = sub.add_parser("worker", help="join a shared study and run trials (no final step)")
    _add_study_args(p, data=False)
    _add_run_args(p)

    p = sub.add_parser("finalize", help="retrain the best trial with several seeds, score on the test set, export")
    _add_study_args(p)
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"],
                   help="where the final models train (default: the study's training.device)")
    p.add_argument("--set", action="append", default=[], metavar="final.KEY=VALUE", dest="overrides",
                   help="override a [final] key for this step, e.g. --set final.seeds=3")

    p = sub.add_parser("score", help="score a finished run's models and baselines on another labelled folder")
    _add_study_args(p)
    p.add_argument("paths", nargs="+", metavar="FOLDER",
                   help="a labelled folder: FOLDER/<class>/ images (e.g. a twin's eval/); the study comes from "
                        "--study/--out like every command (the older 'score RUN_DIR FOLDER' still works)")
    p.add_argument("--json", action="store_true", help="one JSON object shaped like best/metrics.json")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")

    p = sub.add_parser("best", help="print the top trials with their configs")
    _add_study_args(p)
    p.add_argument("--top", type=int, default=5, help="how many trials (default 5)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--toml", action="store_true",
                   help="print the exported trial's settings (else the best trial's) as a [space] block for a study "
                        "file: every setting fixed to its value")

    p = sub.add_parser("report", help="write report.html (plotly) and trials.csv for a study")
    _add_study_args(p)

    p = sub.add_parser("export", help="copy the final step's model to a folder, or retrain and export a given trial")
    _add_study_args(p)
    p.add_argument("--to", dest="to_dir", default=None, help="the folder to write the model to (required)")
    p.add_argument("--runs", dest="runs_old", default=None, metavar="RUNS",
                   help="deprecated spelling of --out (then --out is the model folder, as it used to be)")
    p.add_argument("--trial", type=int, default=None,
                   help="retrain and export this trial like the final step (reads the test labels again, logged); "
                        "default: copy the model the final step exported, without retraining")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"],
                   help="where --trial retrains (default: the study's training.device)")

    p = sub.add_parser("predict", help="classify images with an exported model")
    p.add_argument("--model", required=True, help="folder with model.pt / model.onnx and model_card.json")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--onnx", action="store_true", help="use model.onnx with onnxruntime instead of PyTorch")

    p = sub.add_parser("dashboard", help="start optuna-dashboard on the study's storage and artifacts")
    _add_study_args(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; others warn)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    for name, (about, examples) in _ABOUT.items():
        cmd = sub.choices[name]
        cmd.description, cmd.formatter_class = textwrap.fill(about, 100), argparse.RawDescriptionHelpFormatter
        cmd.epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    return parser
