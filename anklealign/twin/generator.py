"""The synthetic twin of the AnkleAlign archive: same layout, same Label Studio format, same quirks.

The real archive cannot be downloaded here, so :func:`synth` writes a stand-in that the ingest,
the tests and the demo run on. Its pictures are procedurally drawn rear views of a lower leg and
heel; the heel's tilt against the leg axis, measured relative to the foot, decides the class
(pronation < -6 degrees <= neutral <= 6 degrees < supination), so the task is learnable and a
horizontal flip keeps the class. Participants and consensus annotators label what they see
through personal bias and Gaussian noise, so labels near a class boundary disagree, as they do in
the real data. Every quirk class of docs/DATA.md is planted, at least once at any ``scale``.

The ground truth comes back as a :class:`SynthManifest` and is never written into the archive:
an ingest cannot read the answers, it has to find them. The only hint in the archive is the
marker file ``anklealign/SYNTHETIC_TWIN.txt`` that says the data are synthetic.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from anklealign.twin.annotators import plan_annotators
from anklealign.twin.archive import ROOT, archive_files, write_archive
from anklealign.twin.difficulty import Difficulty, parse_difficulty
from anklealign.twin.eval_draw import write_eval_draw
from anklealign.twin.manifest import ImageTruth, manifest_fields
from anklealign.twin.plan import build_plan
from anklealign.twin.summary import EVAL_PRIORS, expected_summary, realised

__all__ = ["GENERATOR_VERSION", "TWIN_JSON", "SynthManifest", "synth"]

_log = logging.getLogger(__name__)

GENERATOR_VERSION = "2.1"  # bump whenever the same seed would produce different bytes (2: difficulty, 2.1: figures)
TWIN_JSON = "twin.json"  # written beside the archive
MAX_SCALE = 4.0


@dataclass(frozen=True)
class SynthManifest:
    """What a generated twin holds: the answers an ingest of it should find. Treat as read-only.

    Ids are ``"<CODE>/<path inside the participant folder>"`` (e.g. ``"BP8WM9/normal/x.jpg"``);
    other paths are relative to the ``anklealign/`` root; class names are :attr:`classes`.

    Attributes:
        root: the written ``anklealign`` folder, or the zip file.
        as_zip: whether ``root`` is a zip.
        seed: generator seed.
        scale: count scale (1.0 = the real archive's counts).
        full_size: real image sizes (else about a quarter of them).
        difficulty: how strongly the class shows and how noisy the labels are (``realistic`` default).
        twin: the ``twin.json`` written beside the archive: per split the class prior, label-noise
            rate and Bayes ceiling, and the evaluation draw (if any).
        version: generator version.
        seconds: wall time the generation took.
        classes: ``("pronation", "neutral", "supination")``.
        participants: the 15 participant folder codes.
        participant_json: code -> path of its Label Studio export (13 folders have one).
        folders_without_json: codes of the folders with images but no JSON.
        images: id -> :class:`ImageTruth` for every image file in participant folders, broken ones too.
        images_by_kind: number of image files per variant (original, exact, resized, reencoded).
        images_by_format: number of image files per real content format.
        tasks: tasks in the participant JSONs.
        labels: id -> class for every decodable image a participant labelled (JSON task, else the
            class sub-folder); the consensus images among them included.
        label_sources: id -> ``"json"`` or ``"subfolder"``.
        unmatched_json_names: ``"<CODE>/<name in the JSON>"`` of tasks whose file does not exist.
        images_without_task: ids of images in JSON folders that no task names.
        unlabelled_tasks: id -> ``empty_result``, ``cancelled`` or ``cancelled_with_result`` (a
            cancelled annotation counts as no label even when it carries a result).
        unknown_labels: id -> the label string no vocabulary knows.
        undecodable: ids of image files no decoder can read.
        non_image_files: ids of files that are not images.
        sample_files: the paths under ``sample/`` (not data).
        consensus_ids: the consensus images in ``anklealign-consensus.txt`` order.
        consensus_listed: lines in the txt (57 at scale 1).
        consensus_unique_names: distinct file names among them (53 at scale 1).
        consensus_votes: consensus id -> votes per class (usable annotators).
        consensus_majority: consensus id -> majority class, None for a tie.
        consensus_ties: consensus ids whose vote is tied.
        consensus_duplicates: ids outside the consensus list showing a consensus picture (exact or near).
        labelled_consensus: consensus ids that their participant also labelled in their own JSON.
        annotators: codes of the consensus JSON files, in file-name order.
        annotator_files: code -> path of its consensus JSON.
        usable_annotators: annotators whose file yields labels (18 at any scale).
        annotators_without_folder: annotators with no participant folder.
        annotator_labels: usable annotator -> class (or None) per consensus id, in txt order.
        mean_agreement: mean share of an image's labels that agree with its majority.
        pairwise_agreement: share of annotator pairs on an image that agree.
        exact_duplicate_sets: sets of ids with identical bytes.
        near_duplicate_sets: sets of ids showing one picture as different bytes (resized,
            re-encoded); may include exact members.
        conflicts: (original id, copy id) pairs: one participant's photos copied by another who
            labelled them differently.
        quirks: quirk class -> the ids, paths or codes that carry it.
    """

    root: Path
    as_zip: bool
    seed: int
    scale: float
    full_size: bool
    difficulty: Difficulty
    twin: dict[str, Any]
    version: str
    seconds: float
    classes: tuple[str, ...]
    participants: tuple[str, ...]
    participant_json: dict[str, str]
    folders_without_json: tuple[str, ...]
    images: dict[str, ImageTruth]
    images_by_kind: dict[str, int]
    images_by_format: dict[str, int]
    tasks: int
    labels: dict[str, str]
    label_sources: dict[str, str]
    unmatched_json_names: tuple[str, ...]
    images_without_task: tuple[str, ...]
    unlabelled_tasks: dict[str, str]
    unknown_labels: dict[str, str]
    undecodable: tuple[str, ...]
    non_image_files: tuple[str, ...]
    sample_files: tuple[str, ...]
    consensus_ids: tuple[str, ...]
    consensus_listed: int
    consensus_unique_names: int
    consensus_votes: dict[str, tuple[int, ...]]
    consensus_majority: dict[str, str | None]
    consensus_ties: tuple[str, ...]
    consensus_duplicates: tuple[str, ...]
    labelled_consensus: tuple[str, ...]
    annotators: tuple[str, ...]
    annotator_files: dict[str, str]
    usable_annotators: tuple[str, ...]
    annotators_without_folder: tuple[str, ...]
    annotator_labels: dict[str, tuple[str | None, ...]]
    mean_agreement: float
    pairwise_agreement: float
    exact_duplicate_sets: tuple[tuple[str, ...], ...]
    near_duplicate_sets: tuple[tuple[str, ...], ...]
    conflicts: tuple[tuple[str, str], ...]
    quirks: dict[str, tuple[str, ...]]

    @property
    def true_classes(self) -> dict[str, str]:
        """id -> class of the drawn tilt, for every image file."""
        return {i: t.true_class for i, t in self.images.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples become lists, the root path a string)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["root"] = str(self.root)
        out["difficulty"] = asdict(self.difficulty)
        out["images"] = {i: asdict(t) for i, t in self.images.items()}
        return _plain(out)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def synth(out: Path, *, seed: int = 0, scale: float = 1.0, as_zip: bool = False, full_size: bool = False,
          difficulty: str | float | Difficulty = "realistic", eval_n: int = 0,
          eval_prior: str = "train") -> SynthManifest:
    """Write a synthetic twin of the AnkleAlign archive and return its ground truth.

    Beside the archive it writes ``twin.json`` (the split priors, label-noise rates and ceilings;
    see :attr:`SynthManifest.twin`) and, with ``eval_n``, the evaluation draw ``eval/<class>/*.png``.

    Args:
        out: a folder to create ``anklealign/`` in; with ``as_zip``, the zip file to write (a path
            ending in ``.zip``) or a folder to create ``anklealign.zip`` in.
        seed: generator seed; the same seed, scale, size and difficulty give the same bytes.
        scale: count scale, 1.0 = the real archive (~414 participant images, 57 consensus
            lines); smaller twins keep at least one instance of every quirk. In (0, 4].
        as_zip: write one zip holding ``anklealign/`` instead of a folder tree.
        full_size: real image sizes (median ~1280x960, a few ~4000 px) instead of a quarter
            of them; for ingest benchmarks.
        difficulty: ``easy``, ``realistic``, ``hard`` or a number in [0, 1] (anklealign.twin.difficulty).
        eval_n: images in the evaluation draw (0: none): fresh pictures labelled with their true
            class, never part of the archive.
        eval_prior: ``train`` (the training pool's class prior) or ``test`` (the consensus set's).

    Returns:
        The :class:`SynthManifest` (only its ``twin`` part is written, as ``twin.json``).

    Raises:
        ValueError: ``seed``, ``scale``, ``difficulty``, ``eval_n`` or ``eval_prior`` out of range.
        FileExistsError: the target already exists (a twin never overwrites anything).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0 < scale <= MAX_SCALE:
        raise ValueError(f"scale must be in (0, {MAX_SCALE:g}], got {scale!r}")
    level = parse_difficulty(difficulty)
    if isinstance(eval_n, bool) or not isinstance(eval_n, int) or eval_n < 0:
        raise ValueError(f"eval must be a non-negative number of images, got {eval_n!r}")
    if eval_prior not in EVAL_PRIORS:
        raise ValueError(f"eval prior must be one of {', '.join(EVAL_PRIORS)}, got {eval_prior!r}")
    out = Path(out)
    if as_zip:
        target = out if out.suffix.lower() == ".zip" else out / f"{ROOT}.zip"
    else:
        target = out / ROOT
    beside = target.parent
    for path in (target, beside / TWIN_JSON, *([beside / "eval"] if eval_n else [])):
        if path.exists():
            raise FileExistsError(f"{path} already exists; remove it or choose another --out")
    beside.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    plan = build_plan(seed, float(scale), full_size, level)
    annotators = plan_annotators(plan, {f.code: f.bias for f in plan.folders})
    expected = expected_summary(level)
    # The evaluation draw first: each part appears complete or not at all, and a failure takes back
    # what this call wrote, so the same command can simply be run again.
    drawn = write_eval_draw(beside / "eval", n=eval_n, seed=seed, difficulty=level, prior=eval_prior) \
        if eval_n else None
    atomic = beside / f".{TWIN_JSON}.partial-{os.getpid()}"
    try:
        digests = write_archive(archive_files(plan, annotators, GENERATOR_VERSION, expected), target,
                                as_zip=as_zip)
        fields_ = manifest_fields(plan, annotators, digests)
        twin = {"synthetic": True, "generator_version": GENERATOR_VERSION, "seed": seed, "scale": float(scale),
                "archive": str(target), **expected,
                "realised": realised(fields_["labels"], {i: t.true_class for i, t in fields_["images"].items()},
                                     fields_["consensus_majority"]),
                **({"eval": drawn} if drawn else {})}
        atomic.write_text(json.dumps(twin, indent=1) + "\n")
        atomic.replace(beside / TWIN_JSON)
    except BaseException:
        atomic.unlink(missing_ok=True)
        if drawn:
            shutil.rmtree(beside / "eval", ignore_errors=True)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists():
            target.unlink()
        raise
    seconds = round(time.perf_counter() - start, 3)
    _log.info("synthetic twin: %d files in %s (seed %d, scale %g, %s, %.1f s)", len(digests), target, seed,
             scale, level.name, seconds)
    return SynthManifest(root=target, as_zip=as_zip, seed=seed, scale=float(scale), full_size=full_size,
                         difficulty=level, twin=twin, version=GENERATOR_VERSION, seconds=seconds, **fields_)
