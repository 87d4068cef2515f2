"""Every seed of a study, derived from the study seed with :class:`numpy.random.SeedSequence`.

One function per random stream, each with its own spawn key, so that no two streams collide and a
seed never depends on Python's per-process salted ``hash()``. The same study seed gives the same
trial seeds, final seeds and sampler seed on every machine and in every run.
"""

from __future__ import annotations

import os
import socket
import zlib

import numpy as np

__all__ = ["derive", "trial_seed", "final_seed", "sampler_seed", "worker_id"]

# Spawn keys of the streams (never reuse or renumber one: saved studies record their seeds).
_TRIAL, _FINAL, _SAMPLER = 1, 2, 3


def derive(study_seed: int, *key: int) -> int:
    """A 31-bit seed for the stream ``key`` of ``study_seed`` (fits torch, numpy and Optuna)."""
    if study_seed < 0:
        raise ValueError(f"the study seed must be >= 0, got {study_seed}")
    state = np.random.SeedSequence(study_seed, spawn_key=tuple(int(k) for k in key)).generate_state(1)
    return int(state[0]) & 0x7FFF_FFFF


def trial_seed(study_seed: int, trial_number: int) -> int:
    """The seed of trial ``trial_number`` (a re-queued trial carries its first attempt's seed instead)."""
    return derive(study_seed, _TRIAL, trial_number)


def final_seed(study_seed: int, index: int) -> int:
    """The seed of the ``index``-th model of the final step (a stream apart from every trial seed)."""
    return derive(study_seed, _FINAL, index)


def worker_id() -> str:
    """``host:pid`` of this process: who ran a trial, and what makes a worker's sampler seed its own."""
    return f"{socket.gethostname()}:{os.getpid()}"


def sampler_seed(study_seed: int, *, worker: bool) -> int:
    """The sampler's seed: the study's own for ``run``; one per process for ``worker``.

    Parallel workers must not propose identical trials, so each mixes in a stable checksum of its
    host name and its process id (``zlib.crc32``, the same in every Python process).
    """
    if not worker:
        return derive(study_seed, _SAMPLER)
    return derive(study_seed, _SAMPLER, zlib.crc32(socket.gethostname().encode()), os.getpid())
