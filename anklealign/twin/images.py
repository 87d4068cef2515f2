"""Pixels and file bytes of the synthetic twin's images.

A picture is drawn once, upright, at its original size (scenes are rendered at most
:data:`RENDER_MAX` pixels on the long side and upscaled, which keeps full-size twins cheap), then
every file showing it is encoded from that: the original, exact copies (same bytes), resized and
re-encoded copies, EXIF-rotated files, a BMP behind a ``.jpg`` name and broken files.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageFilter

from anklealign.twin.difficulty import Difficulty
from anklealign.twin.draw import Nuisance, random_scene, render
from anklealign.twin.planner import Entry, Picture, Plan

__all__ = ["RENDER_MAX", "encode_entries", "picture_image"]

RENDER_MAX = 320
_EXIF_ORIENTATION = 0x0112
# Orientation tag -> how the upright picture is stored so that applying the tag restores it.
_STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
_HTML = (b"<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head>\n<body><h1>Forbidden</h1>"
         b"<p>You don't have permission to access this resource.</p></body></html>\n")
_NOTEBOOK = {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                        "source": ["import json\n", "tasks = json.load(open('export.json'))\n", "len(tasks)"]}],
             "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
             "nbformat": 4, "nbformat_minor": 5}
_TEXT = "Cimkezes: 1 = pronacio, 2 = neutralis, 3 = szupinacio.\r\nA kepek egy resze internetrol van.\r\n"


def picture_image(pic: Picture, seed: int, difficulty: Difficulty, *, stream: int = 1) -> Image.Image:
    """The upright original of ``pic`` (RGB), with its camera blur and sensor noise.

    The heel is drawn at ``difficulty.tilt_gain`` times the picture's shown tilt, among the
    difficulty's nuisance. ``stream`` keeps other draws (the evaluation draw) apart from the archive's.
    """
    rng = np.random.default_rng([seed, stream, pic.key])  # per picture: independent of drawing order
    w, h = pic.size
    nuisance = Nuisance(foot_scale=difficulty.foot_scale, lean=difficulty.lean, light=difficulty.light,
                        texture=difficulty.texture, lines=difficulty.lines)
    scene = random_scene(rng, tilt=difficulty.tilt_gain * pic.shown, feet=pic.feet, aspect=w / h, nuisance=nuisance)
    f = min(1.0, RENDER_MAX / max(w, h))
    rw, rh = max(8, round(w * f)), max(8, round(h * f))
    sigma = float(rng.uniform(0.0, difficulty.grain))  # sensor noise, grey levels
    img = render(scene, rw, rh, grain=rng.standard_normal((rh, rw), dtype=np.float32) * sigma)
    blur = float(rng.choice((0.0, 0.0, 0.5, 1.0))) * difficulty.blur * min(rw, rh) / 240
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    return img if (rw, rh) == (w, h) else img.resize((w, h), Image.Resampling.BILINEAR)


def _encode(img: Image.Image, entry: Entry) -> bytes:
    buf = io.BytesIO()
    if entry.size != img.size:
        img = img.resize(entry.size, Image.Resampling.LANCZOS)
    exif = Image.Exif()
    if entry.orientation != 1:
        img = img.transpose(_STORED[entry.orientation])
        exif[_EXIF_ORIENTATION] = entry.orientation
    fmt = "PNG" if entry.fmt == "TRUNCATED" else entry.fmt
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=entry.quality, exif=exif.tobytes() if entry.orientation != 1 else b"")
    elif fmt == "PNG":
        img.save(buf, "PNG", compress_level=1)
    elif fmt == "WEBP":
        img.save(buf, "WEBP", quality=entry.quality, method=0)
    elif fmt == "BMP":
        img.save(buf, "BMP")
    else:
        raise ValueError(f"cannot encode format {entry.fmt!r}")
    data = buf.getvalue()
    return data[: len(data) // 2] if entry.fmt == "TRUNCATED" else data  # cut inside the pixel data


def _other_bytes(entry: Entry, seed: int) -> bytes:
    """Files that are not (or no longer) images."""
    if entry.fmt == "EMPTY":
        return b""
    if entry.fmt == "HTML":
        return _HTML
    if entry.fmt == "NOTEBOOK":
        return json.dumps(_NOTEBOOK, indent=1).encode()
    if entry.fmt == "TEXT":
        return _TEXT.encode()
    if entry.fmt == "JUNK":
        return np.random.default_rng([seed, 2]).bytes(4096)
    raise ValueError(f"unknown file format {entry.fmt!r}")


def encode_entries(plan: Plan) -> Iterator[tuple[Entry, bytes]]:
    """Every participant file of ``plan`` with its bytes, one picture at a time (bounded memory)."""
    by_picture: dict[int | None, list[Entry]] = defaultdict(list)
    for folder in plan.folders:
        for entry in folder.entries:
            drawn = entry.picture is not None and entry.fmt not in ("EMPTY", "HTML")
            by_picture[entry.picture if drawn else None].append(entry)
    for entry in by_picture.pop(None, []):
        yield entry, _other_bytes(entry, plan.seed)
    for key in sorted(by_picture):  # type: ignore[type-var]
        upright = picture_image(plan.pictures[key], plan.seed, plan.difficulty)  # type: ignore[index]
        cache: dict[tuple, bytes] = {}  # equal encoding settings -> the very same bytes (exact copies)
        for entry in by_picture[key]:
            setting = (entry.fmt, entry.size, entry.quality, entry.orientation)
            if setting not in cache:
                cache[setting] = _encode(upright, entry)
            yield entry, cache[setting]
