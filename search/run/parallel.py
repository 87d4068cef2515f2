"""Several trial processes on one machine: ``--jobs N`` on the CPU, ``--jobs-per-gpu K`` on GPUs.

The parent creates the study (and enqueues the seed nets), then starts one ``worker`` process
per job — on CUDA each pinned to its GPU with ``CUDA_VISIBLE_DEVICES``, K of them per GPU so that
small trials share a device — waits for them, fails and re-queues any trial a crashed child left
RUNNING, and returns. SQLite cannot take several writers, so the default storage of a parallel
run is Optuna's journal file (``runs/<study>/journal.log``), which is safe across processes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from search.run.queue import requeue_trial
from search.study import optuna_api, records
from search.study.errors import SearchError
from search.study.storage import ENV_STORAGE, is_sqlite

__all__ = ["JobPlan", "plan_jobs", "journal_url", "run_children", "recover_orphans"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobPlan:
    """How many trial processes to start and which GPU each one sees (None = CPU)."""

    gpus: tuple[int | None, ...]

    @property
    def jobs(self) -> int:
        return len(self.gpus)


def plan_jobs(*, device: str, jobs: int | None, jobs_per_gpu: int | None) -> JobPlan:
    """One process per GPU by default (K per GPU with ``jobs_per_gpu``); ``jobs`` processes on the CPU."""
    for name, v in (("--jobs", jobs), ("--jobs-per-gpu", jobs_per_gpu)):
        if v is not None and v < 1:
            raise SearchError(f"{name} must be >= 1, got {v}")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and torch.cuda.is_available():
        per_gpu = jobs_per_gpu or 1
        return JobPlan(gpus=tuple(g for g in range(torch.cuda.device_count()) for _ in range(per_gpu)))
    if jobs_per_gpu not in (None, 1):
        _log.warning("--jobs-per-gpu %s ignored: no CUDA device (use --jobs N for CPU processes)", jobs_per_gpu)
    return JobPlan(gpus=(None,) * (jobs or 1))


def journal_url(run_dir: Path) -> str:
    return f"journal:///{(run_dir / 'journal.log').resolve()}"


def check_parallel_storage(url: str) -> None:
    if is_sqlite(url):
        raise SearchError("several trial processes cannot share one SQLite file ('database is locked'); "
                          "leave --storage out (a journal file is used) or give a PostgreSQL/MySQL URL")


def run_children(plan: JobPlan, *, study_file: Path, storage_url: str, out: Path, trials: int,
                 device: str, quiet: bool) -> list[int]:
    """Start one ``python -m search worker`` per job and wait for all; returns their exit codes.

    Ctrl-C reaches the children through the terminal's process group; each ends its trial
    cleanly and re-queues it, and the parent waits for them to finish doing so.
    """
    procs = []
    for i, gpu in enumerate(plan.gpus):
        # The URL may hold a password: children get it in their environment, never on their command
        # line (which every user of the machine can read in /proc/<pid>/cmdline).
        env = {**os.environ, ENV_STORAGE: storage_url}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        # A CPU job gets its share of the cores rather than every job using all of them.
        if gpu is None and plan.jobs > 1:
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // plan.jobs)))
        argv = [sys.executable, "-m", "search", *(["-q"] if quiet or plan.jobs > 1 else []), "worker",
                "--study", str(study_file), "--out", str(out),
                "--trials", str(trials), "--device", "cuda" if gpu is not None else device if device != "auto"
                else "cpu"]
        _log.info("starting trial process %d/%d%s", i + 1, plan.jobs, f" on GPU {gpu}" if gpu is not None else "")
        procs.append(subprocess.Popen(argv, env=env))
    codes = []
    for p in procs:
        while True:
            try:
                codes.append(p.wait())
                break
            except KeyboardInterrupt:  # keep waiting: the children are finishing their trials
                continue
    return codes


def recover_orphans(study: optuna.Study) -> int:
    """After every child has exited, a RUNNING trial belongs to a crashed child: fail and re-queue it."""
    orphans = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in orphans:
        optuna_api.fail_running(study, t, user_attrs=records.attrs(fail_reason="its trial process died; re-queued"))
        requeue_trial(study, t)
    return len(orphans)
