"""Class vocabulary: the canonical AnkleAlign classes and the rule that maps raw labels onto them."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["CLASSES", "clean_label", "normalize_label"]

CLASSES: tuple[str, ...] = ("pronation", "neutral", "supination")

# Stems seen in the real exports (Hungarian and English, with and without accents).
# A normalised label maps to a class when it *starts with* one of these stems.
_STEMS: tuple[tuple[str, int], ...] = (
    ("prona", 0),
    ("neutr", 1),
    ("normal", 1),
    ("szupi", 2),
    ("supin", 2),
)
_NUMBER_PREFIX = re.compile(r"^\d+_")


def clean_label(raw: str) -> str:
    """Strip accents (NFKD) and all whitespace, lower-case, drop a leading ``<digits>_``.

    ``" 2_Neutrális "`` -> ``"neutralis"``.
    """
    text = unicodedata.normalize("NFKD", raw)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = "".join(text.split()).lower()
    return _NUMBER_PREFIX.sub("", text)


def normalize_label(raw: str) -> int | None:
    """The class id of a raw label or folder name, or ``None`` when it is not recognised.

    Never guesses: a label whose cleaned form does not start with a known stem is unknown.
    """
    text = clean_label(raw)
    for stem, class_id in _STEMS:
        if text.startswith(stem):
            return class_id
    return None
