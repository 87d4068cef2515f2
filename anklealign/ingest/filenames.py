"""File-name rules: which file a Label Studio task, or a consensus line, refers to.

Label Studio and the participants changed names on the way (docs/DATA.md). A reference is first reduced to
a file name (:func:`ref_name`: the last path component of ``file_upload`` or ``data.image``, percent-
decoded, without the ``<8 hex>-`` upload prefix). It is then compared with the files of one folder in
tiers; the first tier that finds anything decides, and only a *unique* hit is a match:

1. ``exact``: same name (Unicode NFC, case-insensitive; ``.jpeg`` = ``.jpg``).
2. ``code``: equal after removing a participant code appended or prefixed, any number of times
   (``photo_01_D6AE9F_D6AE9F.jpg``, ``D6AE9F_photo_01.jpg`` -> ``photo_01.jpg``), on both sides.
3. ``dedup-suffix``: the reference carries a de-duplication suffix ``_<digit>`` or `` (<digit>)``.
4. ``truncated``: the reference ends in Label Studio's random ``_<7 letters/digits>`` suffix; the
   rest is the disk name itself or, when Label Studio truncated it, a prefix of it (at least
   :data:`MIN_PREFIX` characters).

The extension must agree at every tier. A tier that finds several files reports all of them, so the
caller can say why the reference is ambiguous instead of picking one.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from urllib.parse import unquote

__all__ = ["MIN_PREFIX", "NameIndex", "ref_name", "split_name"]

MIN_PREFIX = 6
_HASH_PREFIX = re.compile(r"^[0-9a-f]{8}-", re.IGNORECASE)
_RANDOM_SUFFIX = re.compile(r"^(.+)_[a-z0-9]{7}$", re.IGNORECASE)
_DEDUP_SUFFIX = re.compile(r"^(.+?)(?:_\d| ?\(\d\))$")
_EXT_ALIASES = {"jpeg": "jpg", "jpe": "jpg", "tif": "tiff"}


def ref_name(ref: str) -> str:
    """The file name a Label Studio reference points at.

    ``/data/upload/3/9d203653-photo%2001.jpg`` -> ``photo 01.jpg``;
    ``/data/local-files/?d=imgs/photo.jpg`` -> ``photo.jpg``.
    """
    text = ref.strip()
    if "?d=" in text:  # Label Studio local-files storage
        text = text.split("?d=", 1)[1]
    text = unquote(text).replace("\\", "/").rsplit("/", 1)[-1]
    return _HASH_PREFIX.sub("", text)


def split_name(name: str) -> tuple[str, str]:
    """``(stem, extension)`` in comparable form: NFC, case-folded, ``jpeg`` -> ``jpg``."""
    text = unicodedata.normalize("NFC", name).strip().casefold()
    stem, dot, ext = text.rpartition(".")
    if not dot or not stem:
        return text, ""
    return stem, _EXT_ALIASES.get(ext, ext)


class NameIndex:
    """The files of one folder (or of the consensus list), searchable by the tiers above.

    Args:
        items: ``(key, file name)`` pairs; the key is what a match returns (e.g. an image id).
        codes: participant codes that may have been appended to or prefixed on a name.
    """

    def __init__(self, items: Iterable[tuple[str, str]], codes: Iterable[str] = ()) -> None:
        alternatives = sorted({c.casefold() for c in codes if c}, key=len, reverse=True)
        alt = "|".join(re.escape(c) for c in alternatives)
        self._suffix = re.compile(rf"[_\- ]?(?:{alt})$") if alt else None
        self._prefix = re.compile(rf"^(?:{alt})[_\- ]?") if alt else None
        self._exact: dict[tuple[str, str], list[str]] = defaultdict(list)
        self._canon: dict[tuple[str, str], list[str]] = defaultdict(list)
        self._stems: list[tuple[str, str, str, str]] = []  # (raw stem, canonical stem, ext, key)
        for key, name in items:
            stem, ext = split_name(name)
            canon = self._canonical(stem)
            self._exact[stem, ext].append(key)
            self._canon[canon, ext].append(key)
            self._stems.append((stem, canon, ext, key))

    def _strip_codes(self, stem: str) -> str:
        if self._suffix is None or self._prefix is None:
            return stem
        previous = None
        while previous != stem:
            previous = stem
            for pattern in (self._suffix, self._prefix):
                shorter = pattern.sub("", stem)
                if shorter:  # a file named only by the code keeps its name
                    stem = shorter
        return stem

    def _canonical(self, stem: str) -> str:
        return self._strip_codes(_HASH_PREFIX.sub("", stem))

    def _lookup(self, table: dict[tuple[str, str], list[str]], stems: Iterable[str], ext: str) -> set[str]:
        found: set[str] = set()
        for stem in stems:
            found.update(table.get((stem, ext), ()))
        return found

    def candidates(self, name: str) -> tuple[str, tuple[str, ...]]:
        """The first tier that finds files for ``name`` and the keys it found (sorted).

        Returns ``("none", ())`` when no tier finds anything. One key = a match; several = ambiguous.
        """
        stem, ext = split_name(name)
        canon = self._canonical(stem)
        found = self._lookup(self._exact, [stem], ext)
        if found:
            return "exact", tuple(sorted(found))
        found = self._lookup(self._canon, [canon], ext)
        if found:
            return "code", tuple(sorted(found))
        dedup = [m.group(1) for s in (stem, canon) if (m := _DEDUP_SUFFIX.match(s))]
        found = self._lookup(self._canon, {self._canonical(s) for s in dedup}, ext)
        if found:
            return "dedup-suffix", tuple(sorted(found))
        match = _RANDOM_SUFFIX.match(stem)
        if match:
            for prefix in dict.fromkeys((match.group(1), self._canonical(match.group(1)))):
                found = self._lookup(self._canon, [prefix], ext)
                if not found and len(prefix) >= MIN_PREFIX:
                    found = {key for raw, can, e, key in self._stems
                             if e == ext and (raw.startswith(prefix) or can.startswith(prefix))}
                if found:
                    return "truncated", tuple(sorted(found))
        return "none", ()
