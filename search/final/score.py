"""``search score RUN_DIR FOLDER``: a finished run's models scored on another labelled folder.

The folder holds ``<class>/`` subfolders named like the model's classes (e.g. the twin's evaluation
draw ``eval/``). Every model the final step kept is scored the way the final step scored the test
set: the winner's seeds (mean over seeds), the exported ensemble, each retrained preset
(``best/baselines/<name>/``: the default configuration and the seed nets) and the guessers that
know only the training class frequencies, with 95 % bootstrap intervals and the search gain. The
folder is not the study's test set: reading it is logged as a read of the test labels only when it holds
copies of the study's test images (found by the ingest's duplicate rules); copies of training images are
left out of every score.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anklealign import DataError, decode_image, known_copies
from search.final.calibration import apply_temperature
from search.final.export import load_model
from search.final.gain import net_word, search_gain
from search.final.predict import IMAGE_SUFFIXES
from search.final.scoring import baselines, score_seeds
from search.final.testset import TEST_READS, log_test_read
from search.final.trust import trust_blocks
from search.run.train import predict_proba
from search.study.errors import SearchError
from space import SEED_NETS

__all__ = ["score_folder", "labelled_images", "predictions", "Predictions"]

_log = logging.getLogger(__name__)


def labelled_images(folder: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """Image files under ``folder/<class>/`` and their class indices (sorted, hidden files left out).

    Class folders match the model's classes case-insensitively (``Cat/`` is ``cat``), as in ingest.
    """
    if not folder.is_dir():
        raise SearchError(f"no labelled folder at {folder}")
    subdirs = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    known = {c.casefold(): k for k, c in enumerate(classes)}
    unknown = [d for d in subdirs if d.casefold() not in known]
    if unknown or not subdirs:
        raise SearchError(f"{folder} must hold one subfolder per class named like the model's classes "
                          f"({', '.join(classes)}; case does not matter); found {', '.join(subdirs) or 'no subfolder'}"
                          + (f": {', '.join(unknown)} is not a class the model knows" if unknown else ""))
    paths, labels = [], []
    for d in (folder / name for name in subdirs):
        k = known[d.name.casefold()]
        if d.is_dir():
            for f in sorted(d.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                    paths.append(f)
                    labels.append(k)
    if not paths:
        raise SearchError(f"{folder} holds no image files under its class folders")
    return paths, np.asarray(labels, dtype=np.int64)


class _Decoder:
    """The folder's images as uint8 tensors, decoded once per (size, colour, resize) and shared by the models."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.skipped: dict[str, str] = {}
        self._done: dict[tuple, tuple[torch.Tensor, np.ndarray]] = {}

    def __call__(self, pre: dict[str, Any]) -> tuple[torch.Tensor, np.ndarray]:
        """(uint8 (N, C, H, W) images, indices into ``paths`` of the decodable files)."""
        key = (pre["image_size"], pre["color"], pre["resize"])
        if key not in self._done:
            arrays, keep = [], []
            for i, p in enumerate(self.paths):
                try:
                    arrays.append(decode_image(p.read_bytes(), image_size=key[0], color=key[1], resize=key[2]))
                    keep.append(i)
                except (OSError, DataError) as exc:
                    self.skipped[str(p)] = str(exc)
            self._done[key] = torch.from_numpy(np.stack(arrays)), np.asarray(keep)
        return self._done[key]


def _without_training_copies(paths: list[Path], labels: np.ndarray,
                              data: dict[str, Any]) -> tuple[list[Path], np.ndarray, dict[str, Any]]:
    """The folder's images less those that duplicate a training image (exact, near or mirrored, by the ingest's
    rules), and what was found: a score on pictures the model trained on is not a score on new data. Copies of
    the study's test images are kept but found too (``test_copies``): scoring them is a read of the test set."""
    source = data.get("source")
    # The study's mirror rule, as anklealign.load takes it (None when it is the layout's own: the cached scan).
    rule = data.get("mirror_duplicates")
    mirrors = None if rule is None or rule == (data.get("kind") == "anklealign") else rule
    try:
        copies = known_copies(source, paths, mirrors=mirrors)
    except (DataError, OSError) as exc:
        _log.warning("score: could not compare the folder with the training images (%s): duplicates not checked", exc)
        return paths, labels, {"duplicate_check": f"not done: the training data {source} could not be read ({exc})"}
    found = {j: i for j, (split, i) in copies.items() if split == "train"}
    if found:
        _log.warning("score: %d image(s) duplicate training images and are left out of every score: %s", len(found),
                     ", ".join(paths[j].name for j in sorted(found)[:5]) + (" ..." if len(found) > 5 else ""))
    keep = [j for j in range(len(paths)) if j not in found]
    return ([paths[j] for j in keep], labels[keep],
            {"duplicate_check": "done: exact, near and (where the data's rule says so) mirrored copies of training "
                                "images are left out",
             "excluded_duplicates": [{"file": str(paths[j]), "duplicates_training_image": t}
                                     for j, t in sorted(found.items())],
             "test_copies": sum(1 for split, _ in copies.values() if split == "test")})


def _member_probs(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """(S, M, K) probabilities of each member of an exported ensemble, as the final step computes them."""
    return np.stack([predict_proba(m, images).numpy() for m in model.members])


@dataclass
class Predictions:
    """A finished run's models on a labelled folder: per-image probabilities, in the order of ``labels``."""

    final: dict[str, Any]  # best/metrics.json
    classes: list[str]
    labels: np.ndarray
    members: np.ndarray  # (S, N, K): each seed of the exported ensemble, before calibration
    average: np.ndarray  # (N, K): the members' (weighted) average, before calibration
    exported: np.ndarray  # (N, K): what the exported model outputs (the average, temperature applied)
    presets: dict[str, np.ndarray]  # retrained preset -> (N, K), its seeds averaged
    calibration: dict[str, Any]
    duplicates: dict[str, Any]
    skipped: dict[str, str]


def predictions(run_dir: Path, folder: Path) -> Predictions:
    """Every model the run's final step kept, applied to ``folder`` (copies of training images left out)."""
    best = Path(run_dir) / "best"
    try:
        final = json.loads((best / "metrics.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SearchError(f"{run_dir} has no final model (best/metrics.json): run the final step first "
                          "('python -m search finalize --study ...')") from None
    except (OSError, ValueError) as exc:
        raise SearchError(f"unreadable {best / 'metrics.json'}: {exc}") from None
    model, card = load_model(best)
    classes = [str(c) for c in card["classes"]]
    paths, labels = labelled_images(Path(folder), classes)
    paths, labels, duplicates = _without_training_copies(paths, labels, final.get("data") or {})
    if duplicates.get("test_copies"):
        count = log_test_read(Path(run_dir), {"command": "score", "folder": str(Path(folder).resolve()),
                                              "test_images": duplicates["test_copies"]})
        _log.warning("score: %d image(s) of %s are the study's test images: this counts as read %d of its test "
                     "labels (%s)", duplicates["test_copies"], folder, count, TEST_READS)
    decode = _Decoder(paths)
    x, keep = decode(card["preprocessing"])
    members = _member_probs(model, x)
    calibration = {**(card.get("calibration") or {}), "temperature": float(getattr(model, "temperature", 1.0))}
    presets = {}
    for d in sorted(p for p in (best / "baselines").glob("*") if p.is_dir()):
        pmodel, pcard = load_model(d)
        px, pkeep = decode(pcard["preprocessing"])
        if not np.array_equal(pkeep, keep):
            raise SearchError(f"baseline {d.name} could not decode images the model decoded")
        presets[d.name] = _member_probs(pmodel, px).mean(0)  # its seeds averaged, as in final
    average = np.average(members, axis=0, weights=model.weights)
    return Predictions(final=final, classes=classes, labels=labels[keep], members=members, average=average,
                       exported=apply_temperature(average, calibration["temperature"]), presets=presets,
                       calibration=calibration, duplicates=duplicates, skipped=decode.skipped)


def score_folder(run_dir: Path, folder: Path, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Score the run's exported model, its seeds and every kept baseline on ``folder``; metrics.json's shape."""
    p = predictions(run_dir, folder)
    final, classes, labels, members, skipped, duplicates = (p.final, p.classes, p.labels, p.members, p.skipped,
                                                            p.duplicates)
    votes = np.eye(len(classes), dtype=np.int64)[labels]  # one label per image: a one-hot "vote"
    common = {"classes": classes, "groups": None, "n_boot": n_boot, "seed": seed}
    raw, calibration = p.average[None], p.calibration
    exported = p.exported[None]  # what the exported model outputs
    n_seeds = len(final.get("seeds") or [len(members)])
    out: dict[str, Any] = {
        "data": {"folder": str(Path(folder).resolve()), "images": int(len(labels)),
                 "class_counts": {c: int((labels == k).sum()) for k, c in enumerate(classes)},
                 "skipped": skipped, "trained_on": final.get("data"), **duplicates,
                 "note": "an extra labelled folder; logged as a read of the study's test labels only when it holds "
                         "copies of its test images"},
        "study": final.get("study"), "trial": final.get("trial"), "seeds": final.get("seeds"), "classes": classes,
        "exported": final.get("exported"),
        "test": score_seeds(members[:n_seeds], labels, votes, **common),
        "ensemble": score_seeds(exported, labels, votes, **common),
    }
    out["classes_absent"] = out["test"]["classes_absent"]
    counts = final.get("train_class_counts")
    base: dict[str, Any] = {}
    if counts:
        train_labels = np.repeat(np.arange(len(classes)), [int(counts[c]) for c in classes])
        base.update(baselines(labels, votes, train_labels, **common))
        prior = np.bincount(train_labels, minlength=len(classes)) / len(train_labels)
        ref = final.get("out_of_fold")
        oof = (np.asarray(ref["probs"]), np.asarray(ref["labels"])) if ref else None
        out.update(trust_blocks(raw, labels, votes, calibration=calibration, train_prior=prior, classes=classes,
                                groups=None, n_boot=n_boot, seed=seed, label_shift=True, votes_eval=False,
                                per_class=True, oof=oof,
                                class_weighting=((final.get("config") or {}).get("train") or {}).get(
                                    "class_weighting", "none")))
    preset_probs = {name: probs[None] for name, probs in p.presets.items()}
    for name, probs in preset_probs.items():
        base[name] = {"kind": "preset", "description": (final.get("baselines", {}).get(name) or {}).get(
            "description", f"{name}, retrained like the model"), **score_seeds(probs, labels, votes, **common)}
    out["baselines"] = base
    metric = (final.get("cv") or {}).get("metric", "macro_f1")
    out["search_gain"] = search_gain(exported, preset_probs, labels,
                                     random=base.get("stratified_random"), metric=metric, groups=None,
                                     n_boot=n_boot, seed=seed, model_score=out["ensemble"], seed_nets=SEED_NETS,
                                     net_word=net_word(final.get("data") or {}))
    out["bootstrap"] = {"resamples": n_boot, "seed": seed,
                        "interval": "95 % BCa (percentile where BCa is undefined) over the folder's images"}
    out["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    if skipped:
        _log.warning("score: %d file(s) could not be decoded and were left out", len(skipped))
    return out
