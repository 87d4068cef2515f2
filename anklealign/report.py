"""The quality report: what a source holds, what was used, and why every other file was not."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["DEVELOPMENT_SEEDS", "QualityReport", "twin_brief", "twin_lines", "twin_sentence"]

_CATEGORY = re.compile(r"^(.*?)(?: of |: | \(|$)")


@dataclass(frozen=True)
class QualityReport:
    """Counts and explanations of one scan; :meth:`to_dict` is the ``inspect --json`` output.

    The first ten fields are the agreed interface; the rest are details for people.
    """

    kind: str
    synthetic: bool
    images_found: int
    train: dict[str, Any]         # {"images": int, "class_counts": {class: int}}
    test: dict[str, Any]          # {"listed", "images", "majority_counts", "ties", "annotators"}
    duplicate_groups: int
    leakage_removed: int
    skipped: tuple[dict[str, str], ...]   # every unused file: {"path", "reason"}
    source: str = ""
    fingerprint: str = ""                 # sha256 of the labelled content (Dataset.fingerprint)
    images_skipped: int = 0               # image files among ``skipped``
    unlabelled: int = 0                   # decodable images with no label anywhere (not test images)
    agreement: dict[str, float | None] = field(default_factory=dict)
    annotators_usable: tuple[str, ...] = ()
    annotators_unusable: dict[str, str] = field(default_factory=dict)
    order_paired_votes: int = 0           # consensus votes placed by the upload-order assumption
    label_tasks: int = 0
    unmatched_tasks: tuple[dict[str, str], ...] = ()
    unknown_labels: tuple[dict[str, str], ...] = ()
    conflicts: tuple[dict[str, str], ...] = ()
    consensus_problems: tuple[dict[str, str], ...] = ()
    twin: dict[str, Any] = field(default_factory=dict)   # a synthetic twin's priors, label noise, ceiling
    mirror_duplicates: bool | None = None  # mirrored copies grouped as duplicates (None: a scan before the rule)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str, fingerprint: str = "") -> QualityReport:
        """Build from a stored scan's report dict (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
        return cls(**{**values, "source": source, "fingerprint": fingerprint or values.get("fingerprint", "")})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict: the agreed keys first, then the details."""
        return {f.name: _copy(getattr(self, f.name)) for f in fields(self)}

    def summary(self) -> str:
        """A compact human-readable summary: counts, then skipped files grouped by reason."""
        kind = "AnkleAlign" if self.kind == "anklealign" else "image-folder"
        lines = [f"{kind} data: {self.source}" + ("  [SYNTHETIC TWIN, not real data]" if self.synthetic else "")]
        row = lines.append
        row(f"  images found       {self.images_found}")
        row(f"  train              {self.train['images']} images ({_counts(self.train['class_counts'])})")
        test = self.test
        row(f"  test               {test['images']} images of {test['listed']} listed "
            f"(majority {_counts(test['majority_counts'])}; {test['ties']} ties)")
        if self.kind == "anklealign":
            unusable = "".join(f"; not counted {c}: {r}" for c, r in self.annotators_unusable.items())
            paired = f"; {self.order_paired_votes} votes paired by upload order" if self.order_paired_votes else ""
            row(f"  annotators         {test['annotators']} usable{paired}{unusable}")
            agreement = self.agreement
            if agreement.get("fleiss_kappa") is not None:
                row(f"  agreement          {agreement['mean_with_majority']:.1%} with the majority, "
                    f"{agreement['pairwise']:.1%} pairwise, Fleiss kappa {agreement['fleiss_kappa']:.3f}")
            row(f"  label tasks        {self.label_tasks} in participant files; "
                f"{len(self.unmatched_tasks)} unmatched, {len(self.unknown_labels)} with unknown labels")
        mirrored = {True: "; mirrored copies count as duplicates", False: "; mirrored copies do not count "
                    "(a flip may change the class; study key data.mirror_duplicates)", None: ""}[self.mirror_duplicates]
        row(f"  duplicates         {self.duplicate_groups} groups; {self.leakage_removed} labelled images "
            f"kept out of training as test images or their duplicates{mirrored}")
        row(f"  unlabelled         {self.unlabelled}")
        row(f"  label conflicts    {len(self.conflicts)}")
        if self.twin:
            lines.extend(twin_lines(self.twin))
        for title, entries in (("unmatched tasks", self.unmatched_tasks), ("unknown labels", self.unknown_labels),
                               ("conflicts", self.conflicts), ("consensus list", self.consensus_problems)):
            if entries:
                row(f"{title} ({len(entries)}):")
                lines.extend("  " + "; ".join(f"{k} {v}" for k, v in entry.items()) for entry in entries)
        grouped: dict[str, list[dict[str, str]]] = defaultdict(list)
        for entry in self.skipped:
            grouped[_CATEGORY.match(entry["reason"]).group(1)].append(entry)
        row(f"skipped files ({len(self.skipped)}, of which {self.images_skipped} images):")
        for category, entries in sorted(grouped.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            row(f"  {category} ({len(entries)})")
            for entry in entries:
                detail = "" if entry["reason"] == category else f"  [{entry['reason']}]"
                row(f"    {entry['path']}{detail}")
        return "\n".join(lines)


def twin_lines(twin: dict[str, Any]) -> list[str]:
    """The twin's figures in a few lines: per split, label noise and the ceiling (macro-F1, accuracy)."""
    if not twin.get("splits"):
        return []
    lines = [f"  difficulty {twin['difficulty']['name']}: ceiling = best possible score (Bayes classifier of the "
             f"latent tilt), chance = random guessing with the training prior"]
    names = {"train": "training labels", "test": "consensus majority", "eval_train_prior": "eval draw (train prior)",
             "eval_test_prior": "eval draw (test prior)"}
    for key, split in twin.get("splits", {}).items():
        against = "vs_labels" if "vs_labels" in split["ceiling"] else "vs_true"
        c = split["ceiling"][against]
        lines.append(f"  {names.get(key, key):26s} label noise {split['label_noise']:.0%}  ceiling macro-F1 "
                     f"{c['macro_f1']['value']:.3f}, accuracy {c['accuracy']['value']:.3f} "
                     f"({'vs ' + ('labels' if against == 'vs_labels' else 'true class')}); chance macro-F1 "
                     f"{split['chance_macro_f1']:.3f}")
    if "eval" in twin:
        e = twin["eval"]
        lines.append(f"  eval draw: {e['images']} images ({e['prior']} prior) in {e['path']}, labelled with the "
                     f"true class")
    return lines


# Twin generator seeds the search's defaults were chosen on (docs/SEARCH_QUALITY.md): figures measured on them are
# not evidence of how the defaults do on new data. Seeds 100-102 give the held-out headline figures.
DEVELOPMENT_SEEDS = (0, 1, 2)


def twin_brief(twin: dict[str, Any]) -> dict[str, Any]:
    """A twin's known limits in brief: per split, the best possible score (Bayes ceiling), label noise, chance.

    The ceiling of the training labels bounds a CV score; that of the consensus majority a test score.
    """
    splits = {"train": ("cv", "vs_labels"), "test": ("test", "vs_labels")}
    out: dict[str, Any] = {"difficulty": twin.get("difficulty", {}).get("name"), "seed": twin.get("seed")}
    for key, (name, against) in splits.items():
        split = twin.get("splits", {}).get(key)
        if not split or against not in split.get("ceiling", {}):
            continue
        c = split["ceiling"][against]
        out[name] = {"ceiling_macro_f1": c["macro_f1"]["value"], "ceiling_accuracy": c["accuracy"]["value"],
                     "label_noise": split["label_noise"], "chance_macro_f1": split["chance_macro_f1"]}
    return out


def twin_sentence(data: Mapping[str, Any]) -> str:
    """One sentence on a twin's ceiling for reports and cards; empty for real data or an older study."""
    twin = data.get("twin")
    if not data.get("synthetic") or not isinstance(twin, dict):
        return ""
    parts = [f"{label} macro-F1 ceiling {twin[key]['ceiling_macro_f1']:.3f} (chance "
             f"{twin[key]['chance_macro_f1']:.3f}, {twin[key]['label_noise']:.0%} of labels differ from the true class)"
             for key, label in (("cv", "CV (training labels)"), ("test", "test (consensus majority)")) if key in twin]
    dev = (f" Generator seed {twin['seed']} is a development seed: the search's defaults were chosen on it, so its "
           "figures flatter them; docs/SEARCH_QUALITY.md has figures on held-out seeds."
           if twin.get("seed") in DEVELOPMENT_SEEDS else "")
    return (f"Twin difficulty {twin.get('difficulty')}: the best possible scores, those of the Bayes classifier of "
            f"the generator's latent tilt, are: " + "; ".join(parts) + "." + dev) if parts else ""


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value
