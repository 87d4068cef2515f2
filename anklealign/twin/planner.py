"""Data types of the synthetic twin's plan and the random choices they are made of."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from anklealign.twin.difficulty import Difficulty
from anklealign.twin.draw import NEUTRAL_BAND, tilt_class
from anklealign.twin.naming import NameMaker

__all__ = ["CLASS_PRIOR", "CONSENSUS_SHOWN", "EXT_FORMAT", "TILT_RANGE", "Entry", "Folder", "Picture", "Plan",
           "Planner", "shown_tilt"]

CLASS_PRIOR = (0.40, 0.48, 0.12)  # true classes of ordinary photos; label noise moves them to ~41/43/16
TILT_RANGE = ((-20.0, -NEUTRAL_BAND), (-NEUTRAL_BAND, NEUTRAL_BAND), (NEUTRAL_BAND, 20.0))  # per true class
EXT_FORMAT = {".jpg": "JPEG", ".jpeg": "JPEG", ".JPG": "JPEG", ".png": "PNG", ".webp": "WEBP"}


@dataclass(frozen=True)
class Picture:
    """One drawn scene; every file showing it (original or copy) shares its key.

    ``tilt`` is the true heel tilt (its class is the true class); ``shown`` the tilt the picture
    shows and people read, ``tilt`` plus the presentation noise.
    """

    key: int
    tilt: float
    feet: int
    size: tuple[int, int]  # (width, height) of the original, upright
    shown: float = 0.0


# The consensus photos were chosen to look neutral (docs/DATA.md: ~86 % neutral majorities): a consensus
# picture of a neutral tilt shows at most this many degrees.
CONSENSUS_SHOWN = NEUTRAL_BAND - 1.5


def shown_tilt(tilt: float, key: int, seed: int, difficulty: Difficulty, stream: int = 5,
               within: float | None = None) -> float:
    """The tilt a picture shows: its own random stream, so that the plan's draws do not depend on it.

    ``within``: pictures are selected to show at most this tilt (redrawn, as a photographer retakes).
    """
    rng = np.random.default_rng([seed, stream, key])
    for _ in range(1000):
        shown = tilt + difficulty.presentation_noise * float(rng.standard_normal())
        if within is None or abs(shown) <= within:
            break
    if within is not None:
        shown = float(np.clip(shown, -within, within))
    return round(shown, 3)


@dataclass
class Entry:
    """One file in a participant folder (mutable while planning)."""

    code: str
    relpath: str
    picture: int | None  # None: not an image (notebook, text, junk)
    fmt: str  # JPEG PNG WEBP BMP, or EMPTY HTML TRUNCATED (undecodable), NOTEBOOK TEXT JUNK
    size: tuple[int, int] = (0, 0)  # stored size, upright
    quality: int = 90
    orientation: int = 1  # EXIF orientation tag: 1, 3, 6 or 8
    source: str | None = None  # id of the entry this file copies
    variant: str = "original"  # original | exact | resized | reencoded
    label: int | None = None  # the participant's own judgement (JSON folders)
    task: str | None = None  # how the JSON names it (after mangling); None = no task
    state: str = "ok"  # ok | empty_result | cancelled | cancelled_with_result | unknown_label
    quirks: set[str] = field(default_factory=set)

    @property
    def id(self) -> str:
        return f"{self.code}/{self.relpath}"

    @property
    def name(self) -> str:
        return self.relpath.rsplit("/", 1)[-1]


@dataclass
class Folder:
    """One participant folder."""

    code: str
    role: str
    json_style: str | None
    vocab: str
    ext: str
    bias: float
    names: NameMaker
    entries: list[Entry] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # task names with no file behind them

    @property
    def fmt(self) -> str:
        return EXT_FORMAT[self.ext]


@dataclass
class Plan:
    """Everything the writer needs except pixels and Label Studio boilerplate."""

    seed: int
    scale: float
    full_size: bool
    difficulty: Difficulty
    pictures: dict[int, Picture]
    folders: list[Folder]
    consensus: list[str]  # entry ids in consensus-txt order
    ties: set[int]  # picture keys planned as tied votes
    extra_codes: list[str]  # codes of annotators without a participant folder
    rng: np.random.Generator


class Planner:
    """The random source of a plan and the small decisions every recipe needs."""

    def __init__(self, seed: int, scale: float, full_size: bool, difficulty: Difficulty) -> None:
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.difficulty = difficulty
        self.scale = scale
        self.full_size = full_size
        self.pictures: dict[int, Picture] = {}
        self.smallest_done = False

    def n(self, count: int, minimum: int = 1) -> int:
        """``count`` at scale 1, scaled; never below ``minimum`` so every quirk survives."""
        return max(minimum, round(count * self.scale))

    def size(self) -> tuple[int, int]:
        """(width, height): real-archive sizes, or a quarter of them for the small default twin."""
        rng = self.rng
        aspect = float(rng.choice((4 / 3, 3 / 4, 9 / 16, 16 / 9, 1.0, 2.3, rng.uniform(0.56, 2.3)),
                                  p=(0.33, 0.35, 0.08, 0.08, 0.1, 0.03, 0.03)))
        long = float(np.clip(rng.lognormal(np.log(1280), 0.3), 400, 4032))
        if rng.random() < 0.01:
            long = 4032.0
        if not self.smallest_done:  # docs/DATA.md's smallest image, in both modes
            self.smallest_done = True
            return 170, 148
        if not self.full_size:
            long = float(np.clip(long / 4, 200, 1008))
        w, h = (long, long / aspect) if aspect >= 1 else (long * aspect, long)
        grow = max(1.0, 128 / min(w, h))
        return round(w * grow), round(h * grow)

    def picture(self, tilt: float | None = None, *, shown_within: float | None = None) -> Picture:
        """A new scene; without ``tilt``, its class is drawn from :data:`CLASS_PRIOR` (``shown_within``: see
        :func:`shown_tilt`)."""
        rng = self.rng
        if tilt is None:
            lo, hi = TILT_RANGE[int(rng.choice(3, p=CLASS_PRIOR))]
            tilt = float(rng.uniform(lo, hi))
        key = len(self.pictures)
        pic = Picture(key, round(tilt, 3), 2 if rng.random() < 0.3 else 1, self.size(),
                      shown_tilt(tilt, key, self.seed, self.difficulty, within=shown_within))
        self.pictures[pic.key] = pic
        return pic

    def judge(self, folder: Folder, pic: Picture) -> int:
        """The class a participant sees: the shown tilt through their bias and noise."""
        noise = self.difficulty.participant_noise * float(self.rng.standard_normal())
        return tilt_class(pic.shown + folder.bias + noise)

    def add(self, folder: Folder, pic: Picture, *, name: str | None = None, scheme: str | None = None,
            ext: str | None = None) -> Entry:
        """A file of ``pic`` in ``folder``: ``name`` if still free there, else a new one in ``scheme``."""
        ext = ext or folder.ext
        name = name if name is not None and folder.names.take(name) else folder.names.new(ext, scheme)
        entry = Entry(folder.code, name, pic.key, EXT_FORMAT[name[name.rfind("."):]], pic.size,
                      quality=int(self.rng.integers(72, 96)))
        if folder.json_style is not None:
            entry.label = self.judge(folder, pic)
        folder.entries.append(entry)
        return entry

    def pick(self, folder: Folder, count: int, *, allow: frozenset[str] = frozenset()) -> list[Entry]:
        """Up to ``count`` random decodable originals of ``folder`` with no quirk outside ``allow``."""
        pool = [e for e in folder.entries if e.picture is not None and e.variant == "original"
                and e.quirks <= allow and e.fmt in ("JPEG", "PNG", "WEBP")]
        chosen = self.rng.choice(len(pool), size=min(count, len(pool)), replace=False)
        return [pool[int(i)] for i in sorted(chosen)]
