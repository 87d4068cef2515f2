"""Names for the synthetic twin: participant codes, file names and the ways a JSON renames them."""

from __future__ import annotations

import string
from urllib.parse import quote

import numpy as np

__all__ = ["CLASS_FOLDERS", "UNKNOWN_LABEL", "VOCABS", "NameMaker", "codes", "mangle"]

# Label strings as the participants' Label Studio projects wrote them (docs/DATA.md "Label vocabulary").
VOCABS: dict[str, tuple[str, str, str]] = {
    "std": ("1_Pronacio", "2_Neutralis", "3_Szupinacio"),
    "std_space": ("1_Pronacio", "2_Neutralis ", "3_Szupinacio"),
    "english": ("pronation", "neutral", "supination"),
    "accented": ("1_Pronáló", "2_Neutrális", "3_Szupináló"),
    "accented_space": ("1_Pronáló ", "2_Neutrális ", "3_Szupináló "),
}
UNKNOWN_LABEL = "4_Egyeb"
CLASS_FOLDERS = ("pronation", "normal", "supination")  # the sub-folder names one participant used

_ALPHABET = string.ascii_uppercase + string.digits
_SITES = ("pinterest", "shutterstock", "istockphoto", "freepik", "wikimedia", "alamy", "google")
_WORDS = ("barefoot", "woman", "man", "standing", "on", "wooden", "floor", "rear", "view", "of", "heels",
          "and", "ankles", "white", "background", "stock", "photo", "flat", "feet", "posture", "closeup",
          "achilles", "tendon", "podiatry", "orthopedic", "insoles", "isolated", "studio")
_ACCENTED = ("lábfej hátulról", "bal sarok", "jobb boka", "sarokcsont", "bokaízület")


def codes(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct 6-character participant codes; letter O and digit 0 both occur."""
    out: list[str] = []
    while len(out) < n:
        code = "".join(_ALPHABET[i] for i in rng.integers(len(_ALPHABET), size=6))
        letters = sum(c.isalpha() for c in code)
        # At least two letters and two digits: a lower-cased code must differ from the original.
        if code not in out and 2 <= letters <= 4 and "O" not in code and "0" not in code:
            out.append(code)
    # The confusable pair, at random positions; no other code holds either, so all stay distinct.
    for index, char in ((1, "O"), (2, "0")):
        pos = int(rng.integers(1, 6))
        out[index] = out[index][:pos] + char + out[index][pos + 1:]
    return out


def mangle(name: str, quirk: str, code: str, rng: np.random.Generator) -> str:
    """The name a Label Studio JSON uses for the disk file ``name`` under a naming ``quirk``."""
    stem, dot, ext = name.rpartition(".")
    if quirk == "code_appended":
        return f"{stem}_{code}.{ext}"
    if quirk == "code_twice":
        return f"{stem}_{code}_{code}.{ext}"
    if quirk == "code_prefixed":
        return f"{code}_{name}"
    if quirk == "dedup_2":
        return f"{stem}_2.{ext}"
    if quirk == "truncated":
        # Label Studio (Django storage) cuts the stem to fit its 100-character upload path and adds
        # a random 7-character suffix: "upload/<project>/<8 hex>-" leaves 81 characters for the name.
        room = 81 - len(ext) - 1 - 8
        suffix = "".join(string.ascii_letters[i] if i < 52 else string.digits[i - 52]
                         for i in rng.integers(62, size=7))
        return f"{stem[:room]}_{suffix}.{ext}"
    if quirk == "percent":
        return quote(name)
    if quirk == "plain":
        return name
    raise ValueError(f"unknown name quirk {quirk!r}")


class NameMaker:
    """File names in one participant's style, unique within the folder (case-insensitively)."""

    def __init__(self, rng: np.random.Generator, scheme: str) -> None:
        self._rng = rng
        self._scheme = scheme
        self._count: dict[str, int] = {}
        self._taken: set[str] = set()

    def _next(self, key: str) -> int:
        self._count[key] = self._count.get(key, 0) + 1
        return self._count[key]

    def stem(self, scheme: str | None = None) -> str:
        """A new stem in ``scheme`` (default: the folder's own scheme)."""
        scheme = scheme or self._scheme
        rng = self._rng
        if scheme.startswith("sajat"):
            return f"sajat_reszvevo{int(scheme[5:]):02d}_{self._next(scheme):02d}"
        if scheme == "internet":
            site = _SITES[int(rng.integers(len(_SITES)))]
            return f"internet_{site}_{self._next(site):02d}"
        if scheme == "photo":
            return f"photo_{self._next(scheme):02d}"
        if scheme == "img":
            return f"IMG_{1000 + 7 * self._next(scheme) + int(rng.integers(7)):04d}"
        if scheme == "foot":
            return f"foot_{self._next(scheme):03d}"
        if scheme == "accent":
            return f"{_ACCENTED[int(rng.integers(len(_ACCENTED)))]} {self._next(scheme):02d}"
        if scheme == "long":  # an internet download's descriptive name, longer than Label Studio keeps
            words = [_WORDS[int(i)] for i in rng.integers(len(_WORDS), size=14)]
            return "-".join(words) + f"-{int(rng.integers(10**6, 10**7))}"
        raise ValueError(f"unknown name scheme {scheme!r}")

    def take(self, name: str) -> bool:
        """Reserve ``name``; False if the folder already holds it (case and .jpeg/.jpg folded)."""
        key = name.casefold().replace(".jpeg", ".jpg")
        if key in self._taken:
            return False
        self._taken.add(key)
        return True

    def new(self, ext: str, scheme: str | None = None) -> str:
        """A fresh unique file name with extension ``ext`` (including the dot)."""
        while True:
            name = self.stem(scheme) + ext
            if self.take(name):
                return name
