"""The argument parser of ``python -m search``: every subcommand and flag, nothing else."""

from __future__ import annotations

import argparse

__all__ = ["build_parser"]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see '{self.prog} --help')\n")


def _add_study_args(p: argparse.ArgumentParser, *, data: bool = True) -> None:
    p.add_argument("--study", default="anklealign",
                   help="a study definition (studies/<name>.toml or a path to a TOML file) or the name of a "
                        "run folder under --out (default: anklealign)")
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
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    p.add_argument("--set", action="append", default=[], metavar="final.KEY=VALUE", dest="overrides",
                   help="override a [final] key for this step, e.g. --set final.seeds=3")

    p = sub.add_parser("score", help="score a finished run's models and baselines on another labelled folder")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (runs/<study>/, holding best/)")
    p.add_argument("folder", metavar="FOLDER", help="a labelled folder: FOLDER/<class>/ images (e.g. a twin's eval/)")
    p.add_argument("--json", action="store_true", help="one JSON object shaped like best/metrics.json")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")

    p = sub.add_parser("best", help="print the top trials with their configs")
    _add_study_args(p)
    p.add_argument("--top", type=int, default=5, help="how many trials (default 5)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("report", help="write report.html (plotly) and trials.csv for a study")
    _add_study_args(p)

    p = sub.add_parser("export", help="copy the final step's model to a folder, or retrain and export a given trial")
    p.add_argument("--study", default="anklealign",
                   help="a study definition or the name of a run folder under --runs (default: anklealign)")
    p.add_argument("--storage", default=None, help="SQLAlchemy URL of the storage (default: the run folder's)")
    p.add_argument("--runs", dest="out", default="runs", help="root folder of run outputs (default: runs/)")
    p.add_argument("--trial", type=int, default=None,
                   help="retrain and export this trial like the final step (reads the test labels again, logged); "
                        "default: copy the model the final step exported, without retraining")
    p.add_argument("--data", default=None, help="the data the study ran on (default: the one recorded in it)")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"],
                   help="where --trial retrains (default: the study's training.device)")
    p.add_argument("--out", dest="out_dir", required=True, help="folder to write the model to")

    p = sub.add_parser("predict", help="classify images with an exported model")
    p.add_argument("--model", required=True, help="folder with model.pt / model.onnx and model_card.json")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--onnx", action="store_true", help="use model.onnx with onnxruntime instead of PyTorch")

    p = sub.add_parser("dashboard", help="start optuna-dashboard on the study's storage and artifacts")
    _add_study_args(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; others warn)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    return parser
