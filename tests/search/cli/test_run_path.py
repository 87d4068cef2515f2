"""``run`` is a straight line: definition resolved once, storage opened once, each input size decoded
once (trials and the final step share it), and no module is entered again below itself on the way
from the command line to the trainer."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import anklealign
import search.cli.targets
import search.run.session
from search.cli import main

# Functions a lower module calls back by design, handed down as arguments: the objective's per-epoch
# report (Optuna's pruning hook), the runner's Ctrl-C handler, the statistics handed to the bootstrap of
# search.final.scoring (each named ``statistic``), and the writers handed to search.study.atomic (lambdas).
CALLBACKS = {("search.run.objective", "on_epoch"), ("search.run.runner", "handler")}


def _callback(module: str, func: str) -> bool:
    return (module, func) in CALLBACKS or func in ("<lambda>", "statistic")


def _count(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, calls: list) -> None:
    real = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("image_size", args[0] if args else None))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)


def test_run_resolves_opens_and_decodes_once(small_twin: Path, tmp_path: Path, fast_args: list[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    definitions: list = []
    storages: list = []
    loads: list = []
    _count(monkeypatch, search.cli.targets, "load_study_def", definitions)
    _count(monkeypatch, search.run.session, "open_storage", storages)
    _count(monkeypatch, anklealign, "load", loads)

    stacks: set[tuple[str, ...]] = set()

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event != "call" or not frame.f_globals.get("__name__", "").startswith("search."):
            return
        chain: list[tuple[str, str]] = []
        f: FrameType | None = frame
        while f is not None:
            mod = f.f_globals.get("__name__", "")
            if mod.startswith("search."):
                chain.append((mod, f.f_code.co_name))
            f = f.f_back
        chain.reverse()
        mods: list[str] = []
        for mod, func in chain:
            if _callback(mod, func):
                mods = []  # a callback starts a path of its own
            if not mods or mods[-1] != mod:
                mods.append(mod)
        stacks.add(tuple(mods))

    sys.setprofile(profile)
    try:
        rc = main(["run", "--data", str(small_twin), "--out", str(tmp_path), "--trials", "2", *fast_args,
                   "--set", "final.seeds=1", "--set", "final.bootstrap=20",
                   "--set", 'final.baseline_presets=["net6"]'])
    finally:
        sys.setprofile(None)
    assert rc == 0
    assert len(definitions) == 1  # the definition is resolved once
    assert len(storages) == 1  # the storage is opened once (summary, final step and report reuse it)
    assert max(Counter(loads).values()) == 1, loads  # each input size decoded once: trials + final step
    climbs = sorted({s for s in stacks if len(set(s)) < len(s)})
    assert not climbs, "modules entered again below themselves:\n" + "\n".join(" -> ".join(s) for s in climbs[:10])
    trainer_paths = [s for s in stacks if s and s[-1] == "search.run.train" and s[0] == "search.cli"]
    assert trainer_paths, "the trainer was not reached from the command line"
