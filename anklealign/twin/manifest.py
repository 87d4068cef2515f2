"""Ground truth of a generated twin, computed from the plan and the bytes actually written."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from anklealign.twin.annotators import Annotator
from anklealign.twin.draw import tilt_class
from anklealign.twin.planner import Entry, Plan

__all__ = ["CLASSES", "ImageTruth", "manifest_fields"]

CLASSES = ("pronation", "neutral", "supination")
_DECODABLE = ("JPEG", "PNG", "WEBP", "BMP")


@dataclass(frozen=True)
class ImageTruth:
    """What one image file in a participant folder really is.

    Attributes:
        id: ``"<CODE>/<relative path>"``.
        tilt: heel tilt in degrees, relative to the foot (< 0 pronation).
        true_class: the class of ``tilt`` (labels are noisy views of it).
        feet: 1 or 2 feet in the picture.
        width: upright width in pixels (after applying the EXIF orientation).
        height: upright height in pixels.
        picture: drawn-content key; files sharing it are exact or near duplicates.
        variant: ``original``, ``exact``, ``resized`` or ``reencoded``.
        format: the real content format (``JPEG``, ``PNG``, ``WEBP``, ``BMP``; ``EMPTY``, ``HTML``,
            ``TRUNCATED`` are undecodable).
        decodable: whether a decoder can read it.
        md5: hex digest of the file.
    """

    id: str
    tilt: float
    true_class: str
    feet: int
    width: int
    height: int
    picture: int
    variant: str
    format: str
    decodable: bool
    md5: str


def _agreement(votes: list[Counter[int]]) -> tuple[float, float]:
    """(mean share of an image's labels equal to its majority, pooled pairwise agreement)."""
    mean = sum(max(c.values()) / sum(c.values()) for c in votes) / max(len(votes), 1)
    pairs = sum(sum(v * (v - 1) for v in c.values()) for c in votes)
    total = sum(sum(c.values()) * (sum(c.values()) - 1) for c in votes)
    return round(mean, 4), round(pairs / max(total, 1), 4)


def _duplicates(images: dict[str, ImageTruth]) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]:
    """(exact sets: equal MD5; near sets: one picture stored as different bytes), from what was written."""
    by_picture: dict[int, list[ImageTruth]] = defaultdict(list)
    for truth in images.values():
        if truth.decodable:
            by_picture[truth.picture].append(truth)
    exact, near = [], []
    for group in by_picture.values():
        by_md5: dict[str, list[str]] = defaultdict(list)
        for truth in group:
            by_md5[truth.md5].append(truth.id)
        exact += [tuple(sorted(ids)) for ids in by_md5.values() if len(ids) > 1]
        if len(by_md5) > 1:
            near.append(tuple(sorted(t.id for t in group)))
    return tuple(sorted(exact)), tuple(sorted(near))


def _labels(entries: list[Entry]) -> tuple[dict[str, str], dict[str, str]]:
    """The participant labels an ingest should find (decodable files only), and where each comes from."""
    labels, sources = {}, {}
    for e in entries:
        if e.label is None or e.fmt not in _DECODABLE:
            continue
        if e.task is not None and e.state == "ok":
            labels[e.id], sources[e.id] = CLASSES[e.label], "json"
        elif e.task is None and "subfolder" in e.quirks:  # the folder name is the last resort
            labels[e.id], sources[e.id] = CLASSES[e.label], "subfolder"
    return labels, sources


def _quirks(plan: Plan, entries: list[Entry], annotators: list[Annotator], digests: dict[str, str],
            consensus_names: Counter[str]) -> dict[str, tuple[str, ...]]:
    """Per quirk class, the ids or paths that carry it."""
    out: dict[str, list[str]] = defaultdict(list)
    for e in entries:
        for quirk in e.quirks:
            out[quirk].append(e.id)
        if e.picture is not None:
            out[f"ext{e.name[e.name.rfind('.'):]}"].append(e.id)
    json_of = {f.code: f.json_style for f in plan.folders}
    for path in digests:
        code, _, name = path.partition("/")
        if name.endswith(".json") and "/" not in name and code in json_of:
            out[f"json_name_{json_of[code]}"].append(path)
            out[f"vocab_{next(f.vocab for f in plan.folders if f.code == code)}"].append(path)
    for f in plan.folders:
        if f.json_style is None:
            out["folder_without_json"].append(f.code)
        out["code_with_letter_O" if "O" in f.code else "code_with_digit_0" if "0" in f.code else ""].append(f.code)
        out["task_missing_file"] += [f"{f.code}/{name}" for name in f.orphans]
    for a in annotators:
        path = f"consensus/{a.file_name}"
        out[{"empty": "annotator_empty_file", "no_labels": "annotator_no_labels"}.get(a.kind, f"vocab_{a.vocab}")
            ].append(path)
        if a.file_name != f"{a.code}.json":
            out["annotator_lowercase_name"].append(path)
    bare = Counter(e.name for e in entries if e.picture is not None)
    out["name_repeats_across_folders"] = [e.id for e in entries if e.picture is not None and bare[e.name] > 1]
    out["consensus_name_clash"] = [i for i in plan.consensus if consensus_names[i.split("/", 1)[1]] > 1]
    out.pop("", None)
    return {k: tuple(sorted(v)) for k, v in sorted(out.items())}


def manifest_fields(plan: Plan, annotators: list[Annotator], digests: dict[str, str]) -> dict[str, Any]:
    """Every :class:`~anklealign.twin.generator.SynthManifest` field except where and how it was written."""
    entries = [e for f in plan.folders for e in f.entries]
    images = {}
    for e in entries:
        if e.picture is None:
            continue
        pic = plan.pictures[e.picture]
        images[e.id] = ImageTruth(e.id, pic.tilt, CLASSES[tilt_class(pic.tilt)], pic.feet, e.size[0], e.size[1],
                                  pic.key, e.variant, e.fmt, e.fmt in _DECODABLE, digests[e.id])
    labels, sources = _labels(entries)
    usable = [a for a in annotators if a.kind == "usable"]
    votes = [Counter(a.votes[j] for a in usable if a.votes[j] is not None) for j in range(len(plan.consensus))]
    majority = {}
    for image, count in zip(plan.consensus, votes, strict=True):
        top = count.most_common()
        majority[image] = CLASSES[top[0][0]] if len(top) == 1 or top[0][1] > top[1][1] else None
    mean, pairwise = _agreement(votes)
    consensus_names = Counter(i.split("/", 1)[1] for i in plan.consensus)
    consensus_pictures = {images[i].picture for i in plan.consensus}
    exact, near = _duplicates(images)
    json_folders = {f.code for f in plan.folders if f.json_style is not None}
    folder_codes = {f.code for f in plan.folders}
    return dict(
        classes=CLASSES,
        participants=tuple(f.code for f in plan.folders),
        participant_json={p.split("/")[0]: p for p in digests if p.endswith(".json") and p.count("/") == 1
                          and p.split("/")[0] in folder_codes},
        folders_without_json=tuple(f.code for f in plan.folders if f.json_style is None),
        images=images,
        images_by_kind=dict(sorted(Counter(t.variant for t in images.values()).items())),
        images_by_format=dict(sorted(Counter(t.format for t in images.values()).items())),
        tasks=sum(e.task is not None for e in entries) + sum(len(f.orphans) for f in plan.folders),
        labels=labels,
        label_sources=sources,
        unmatched_json_names=tuple(sorted(f"{f.code}/{n}" for f in plan.folders for n in f.orphans)),
        images_without_task=tuple(sorted(e.id for e in entries if e.picture is not None and e.task is None
                                         and e.code in json_folders)),
        unlabelled_tasks={e.id: e.state for e in entries if e.state in ("empty_result", "cancelled",
                                                                        "cancelled_with_result")},
        unknown_labels={e.id: "4_Egyeb" for e in entries if e.state == "unknown_label"},
        undecodable=tuple(sorted(i for i, t in images.items() if not t.decodable)),
        non_image_files=tuple(sorted(e.id for e in entries if e.picture is None)),
        sample_files=tuple(sorted(p for p in digests if p.startswith("sample/"))),
        consensus_ids=tuple(plan.consensus),
        consensus_listed=len(plan.consensus),
        consensus_unique_names=len(consensus_names),
        consensus_votes={i: tuple(c.get(k, 0) for k in range(3)) for i, c in zip(plan.consensus, votes, strict=True)},
        consensus_majority=majority,
        consensus_ties=tuple(i for i in plan.consensus if majority[i] is None),
        consensus_duplicates=tuple(sorted(i for i, t in images.items() if t.picture in consensus_pictures
                                          and i not in set(plan.consensus))),
        labelled_consensus=tuple(sorted(i for i in plan.consensus if i in labels)),
        annotators=tuple(a.code for a in annotators),
        annotator_files={a.code: f"consensus/{a.file_name}" for a in annotators},
        usable_annotators=tuple(a.code for a in usable),
        annotators_without_folder=tuple(a.code for a in annotators if a.code not in folder_codes),
        annotator_labels={a.code: tuple(None if v is None else CLASSES[v] for v in a.votes) for a in usable},
        mean_agreement=mean,
        pairwise_agreement=pairwise,
        exact_duplicate_sets=exact,
        near_duplicate_sets=near,
        conflicts=tuple(sorted((e.source, e.id) for e in entries if "conflict" in e.quirks)),  # type: ignore[misc]
        quirks=_quirks(plan, entries, annotators, digests, consensus_names),
    )
