"""The synthetic twin's plan: folders, files, tasks and labels, before any pixel is drawn.

Every quirk of docs/DATA.md is planted by a rule of the form "this folder role gets ``n(k)`` files with
quirk Q", and ``n`` never goes below one, so each quirk survives any scale. Each planted file
records its quirks in :attr:`Entry.quirks`; the manifest is built from those records.
"""

from __future__ import annotations

import numpy as np

from anklealign.twin.difficulty import Difficulty
from anklealign.twin.draw import NEUTRAL_BAND
from anklealign.twin.naming import CLASS_FOLDERS, NameMaker, codes, mangle
from anklealign.twin.planner import CONSENSUS_SHOWN, Entry, Folder, Plan, Planner

__all__ = ["CONSENSUS_SHARE", "NAME_QUIRKS", "build_plan"]

# role, own images at scale 1, JSON naming, label vocabulary, extension, name scheme.
_ROLES = (
    ("cons_a", 27, "code", "std", ".jpg", "sajat1"),
    ("cons_b", 26, "lower", "accented", ".jpeg", "photo"),
    ("cons_c", 35, None, "", ".jpg", "sajat2"),
    ("nojson", 50, None, "", ".JPG", "img"),
    ("subfolders", 20, "labels", "std", ".jpg", "sajat1"),
    ("english", 23, "hf", "english", ".png", "foot"),
    ("copier", 20, "project", "std_space", ".jpg", "sajat1"),
    ("source", 25, "code", "std", ".jpg", "internet"),
    ("percent", 22, "code", "std", ".jpg", "accent"),
    ("twice", 24, "project", "accented_space", ".jpg", "photo"),
    ("notebook", 22, "code", "std", ".jpeg", "sajat1"),
    ("unknown", 24, "code", "std", ".jpg", "photo"),
    ("broken", 24, "project", "std", ".jpg", "img"),
    ("exif", 22, "code", "std", ".jpg", "sajat1"),
    ("misc", 23, "code", "std", ".jpg", "photo"),
)
_ALT_EXT = {"source": ".webp", "misc": ".png", "unknown": ".jpeg"}  # a third of their files
CONSENSUS_SHARE = {"cons_a": 20, "cons_b": 17, "cons_c": 20}  # 57 consensus images at scale 1
CONSENSUS_NAME_CLASHES = 4  # cons_c consensus images named like cons_a's: 4 names in two folders
NAME_QUIRKS = ("code_appended", "code_twice", "code_prefixed", "dedup_2", "truncated", "percent")


def _consensus_tilts(p: Planner, count: int, ties: int) -> list[tuple[float, bool]]:
    """Tilts of the consensus images: ~86 % read as neutral by most annotators, the rest pronation."""
    pron = max(1, round(0.10 * count))
    rng = p.rng
    out = [(float(rng.uniform(-17, -10)), False) for _ in range(pron)]
    out += [(float(rng.uniform(-6.5, -5.5)), True) for _ in range(ties)]
    out += [(float(rng.uniform(-3.0, 2.5)), False) for _ in range(count - pron - ties)]
    return [out[int(i)] for i in rng.permutation(len(out))]


def _fill(p: Planner, folder: Folder, count: int, cons: list[tuple[float, bool]], ties: set[int]) -> None:
    """The folder's own photos: its consensus images first, then ordinary ones."""
    internet = folder.role not in ("cons_c", "nojson", "english", "percent")
    for i in range(count):
        if i < len(cons):
            tilt, tie = cons[i]
            pic = p.picture(tilt, shown_within=None if tie or abs(tilt) > NEUTRAL_BAND else CONSENSUS_SHOWN)
            if tie:
                ties.add(pic.key)
            clash = folder.role == "cons_c" and i < p.n(CONSENSUS_NAME_CLASHES)
            p.add(folder, pic, scheme="sajat1" if clash else None).quirks.add("consensus")
            continue
        scheme = "internet" if internet and p.rng.random() < 0.3 else None
        alt = _ALT_EXT.get(folder.role)
        p.add(folder, p.picture(), scheme=scheme, ext=alt if alt and p.rng.random() < 0.33 else None)


def _plant(p: Planner, roles: dict[str, Folder]) -> None:
    """File-level and task-level quirks, each in the folder role that carries it."""
    rng = p.rng
    for role, quirk, count in (("cons_a", "code_appended", 3), ("cons_b", "code_prefixed", 3),
                               ("twice", "code_twice", 2), ("percent", "dedup_2", 2),
                               ("percent", "percent", 3), ("misc", "untasked", 3),
                               ("notebook", "cancelled", 1), ("notebook", "cancelled_with_result", 1),
                               ("notebook", "empty_result", 2), ("unknown", "unknown_label", 1)):
        for entry in p.pick(roles[role], p.n(count)):
            entry.quirks.add(quirk)
    source = roles["source"]
    for i, entry in enumerate(p.pick(source, p.n(4))):  # long internet names, some cut by Label Studio
        entry.relpath = source.names.new(entry.name[entry.name.rfind("."):], "long")
        entry.quirks |= {"long_name", "truncated"} if i < p.n(2) else {"long_name"}
    orientations = (6, 8, 3)
    for role, count in (("cons_a", 1), ("nojson", 3), ("twice", 2), ("exif", 4)):
        for entry in p.pick(roles[role], p.n(count)):
            if entry.fmt == "JPEG":
                entry.orientation = orientations[int(rng.integers(3))]
                entry.quirks.add("exif")
    for role, quirk, fmt in (("english", "truncated_file", "TRUNCATED"), ("unknown", "bmp_as_jpg", "BMP"),
                             ("broken", "empty_file", "EMPTY"), ("broken", "html_as_jpg", "HTML")):
        [entry] = p.pick(roles[role], 1)
        if fmt != "TRUNCATED" and not entry.name.endswith(".jpg"):
            entry.relpath = roles[role].names.new(".jpg")
        entry.fmt = fmt
        entry.quirks.add(quirk)
    for role, name, fmt in (("notebook", "elemzes.ipynb", "NOTEBOOK"), ("broken", "notes.txt", "TEXT"),
                            ("nojson", "Thumbs.db", "JUNK")):
        roles[role].names.take(name)
        roles[role].entries.append(Entry(roles[role].code, name, None, fmt, quirks={"non_image"}))
    exif = roles["exif"]
    exif.orphans = [exif.names.new(exif.ext) for _ in range(p.n(2))]  # tasks whose file is gone


def _copy(p: Planner, entry: Entry, target: Folder, variant: str) -> Entry:
    """Put a copy of ``entry`` into ``target``: byte-identical (exact) or resized/re-encoded (near)."""
    pic = p.pictures[entry.picture]  # type: ignore[index]
    if variant == "exact":
        copy = p.add(target, pic, name=entry.name, ext=entry.name[entry.name.rfind("."):])
        copy.fmt, copy.size, copy.quality = entry.fmt, entry.size, entry.quality
    else:
        copy = p.add(target, pic)
        if variant == "resized":
            w, h = entry.size
            f = max(float(p.rng.uniform(0.5, 0.8)), 170 / max(w, h))
            copy.size = (round(w * f), round(h * f))
        copy.quality = int(np.clip(entry.quality - p.rng.integers(12, 30), 40, 95))
    copy.source, copy.variant = entry.id, variant
    copy.quirks.add("exact_copy" if variant == "exact" else "near_copy")
    if "consensus" in entry.quirks:
        copy.quirks.add("consensus_duplicate")
    return copy


def _share(p: Planner, roles: dict[str, Folder]) -> None:
    """Duplicates across folders: the conflict set, consensus leaks, shared internet photos."""
    rng = p.rng
    for entry in p.pick(roles["source"], p.n(5)):  # copied by another participant who disagrees
        copy = _copy(p, entry, roles["copier"], "exact")
        pic = p.pictures[entry.picture]  # type: ignore[index]
        copy.label = 1 if entry.label != 1 else (0 if pic.tilt < 0 else 2)
        copy.quirks.add("conflict")
    leaks = (("cons_a", "exif", "exact"), ("cons_c", "misc", "exact"),
             ("cons_b", "percent", "resized"), ("cons_c", "notebook", "reencoded"))
    for i, (src, dst, variant) in enumerate(leaks):
        if i % 2 == 0 or p.n(2) > 1:
            pool = [e for e in roles[src].entries if e.quirks == {"consensus"}]
            _copy(p, pool[int(rng.integers(len(pool)))], roles[dst], variant)
    labelled = [f for f in roles.values() if f.json_style is not None and f.role != "subfolders"]
    for variant, count in (("exact", p.n(4)), ("near", p.n(11))):
        for _ in range(count):
            src = labelled[int(rng.integers(len(labelled)))]
            picked = p.pick(src, 1)
            if not picked:  # only in tiny twins: every file of that folder already carries a quirk
                continue
            entry = picked[0]
            others = [f for f in roles.values() if f is not src and f.role != "subfolders"]
            copies = 2 if variant == "near" and rng.random() < 0.25 else 1
            for dst in (others[int(i)] for i in rng.choice(len(others), copies, replace=False)):
                kind = variant if variant == "exact" else ("resized", "reencoded")[int(rng.integers(2))]
                _copy(p, entry, dst, kind)


def _tasks(p: Planner, roles: dict[str, Folder]) -> None:
    """Which files get a Label Studio task, under which name, in which state."""
    sub = roles["subfolders"]
    untasked = {id(e) for e in p.pick(sub, p.n(2))}
    for entry in sub.entries:  # the participant sorted the photos by their own label
        entry.relpath = f"{CLASS_FOLDERS[entry.label]}/{entry.relpath}"  # type: ignore[index]
        entry.quirks.add("subfolder")
        if id(entry) in untasked:
            entry.quirks.add("untasked")
    for folder in roles.values():
        if folder.json_style is None:
            continue
        for entry in folder.entries:
            if entry.picture is None or "untasked" in entry.quirks:
                continue
            quirk = next((q for q in NAME_QUIRKS if q in entry.quirks), "plain")
            entry.task = mangle(entry.name, quirk, folder.code, p.rng)
            for state in ("cancelled", "cancelled_with_result", "empty_result", "unknown_label"):
                if state in entry.quirks:
                    entry.state = state


def build_plan(seed: int, scale: float, full_size: bool, difficulty: Difficulty) -> Plan:
    """The whole archive as data: deterministic for ``seed``.

    ``full_size`` changes only image sizes and ``difficulty`` only the noise of labels and shown
    tilts (the draws of the layout, names and quirks are the same at every difficulty).
    """
    p = Planner(seed, scale, full_size, difficulty)
    rng = p.rng
    all_codes = codes(rng, len(_ROLES) + 9)
    roles: dict[str, Folder] = {}
    for code, index in zip(all_codes, rng.permutation(len(_ROLES)), strict=False):
        role, _, style, vocab, ext, scheme = _ROLES[int(index)]
        bias = difficulty.participant_bias * float(rng.standard_normal())
        roles[role] = Folder(code, role, style, vocab, ext, bias, NameMaker(rng, scheme))
    share = {role: max(p.n(count), p.n(CONSENSUS_NAME_CLASHES) + 1) for role, count in CONSENSUS_SHARE.items()}
    tilts = _consensus_tilts(p, sum(share.values()), p.n(2))
    ties: set[int] = set()
    for role, count, *_ in _ROLES:
        k = share.get(role, 0)
        _fill(p, roles[role], max(p.n(count), k + 4, 6), tilts[:k], ties)
        tilts = tilts[k:]
    _plant(p, roles)
    _share(p, roles)
    _tasks(p, roles)
    consensus = [e.id for f in roles.values() for e in f.entries if "consensus" in e.quirks]
    consensus = [consensus[int(i)] for i in rng.permutation(len(consensus))]
    return Plan(seed=seed, scale=scale, full_size=full_size, difficulty=difficulty, pictures=p.pictures,
                folders=sorted(roles.values(), key=lambda f: f.code), consensus=consensus, ties=ties,
                extra_codes=all_codes[len(_ROLES):], rng=rng)
