"""Decoding one image file: by content, EXIF-oriented, guarded against decompression bombs.

One decode yields both what the duplicate finder needs (hashes of the pixels) and, when asked,
the uint8 array at the requested size, so a cold load reads and decodes each file exactly once.

JPEGs are decoded with ``Image.draft`` (DCT scaling by 1/2, 1/4 or 1/8) so that the short side
stays at least ``max(HASH_SIZE, image_size)`` pixels: a 1280x960 photo decodes at 640x480, several
times faster than in full, and the result is the same whichever path (scan or tensor-only) decodes.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, ImageStat, UnidentifiedImageError
from scipy.fft import dctn

__all__ = ["HASH_SIZE", "MAX_PIXELS", "Decoded", "Target", "decode", "fit", "phash"]

MAX_PIXELS = 80_000_000   # the largest real photo is 7172x4912 = 35 Mpx
HASH_SIZE = 256           # JPEG draft floor, so hashes do not depend on the requested image size
_THUMB = 32


@dataclass(frozen=True)
class Target:
    """What the model sees: ``size`` x ``size`` px, ``color`` gray|rgb, ``resize`` stretch|letterbox."""

    size: int
    color: str
    resize: str


@dataclass(frozen=True)
class Decoded:
    """The outcome of decoding one file.

    ``reason`` is "" on success; otherwise it says why the file was skipped and ``is_image`` says
    whether the file is an image at all (a corrupt photo is, a notebook is not).
    """

    reason: str = ""
    is_image: bool = True
    width: int = 0
    height: int = 0
    sha256: str = ""                  # of the file's bytes
    pixel_sha256: str = ""
    phash: int = 0                    # 64-bit perceptual hash (DCT of the 32x32 thumbnail)
    thumb: np.ndarray | None = None   # (32, 32) uint8 grayscale, for verifying near-duplicates
    mirror_pixel_sha256: str = ""     # the same three of the picture mirrored left-right,
    mirror_phash: int = 0             # for finding mirrored copies (anklealign.ingest.dedup)
    mirror_thumb: np.ndarray | None = None
    array: np.ndarray | None = None   # (C, H, W) uint8 at the target size


class _Skip(Exception):
    def __init__(self, reason: str, *, is_image: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.is_image = is_image


def decode(data: bytes, *, target: Target | None = None, hashes: bool = True,
           max_pixels: int = MAX_PIXELS) -> Decoded:
    """Decode image bytes (any format PIL reads, whatever the file name says) and never raise.

    Args:
        data: the file's bytes.
        target: if given, also return the array at this size/colour/resize.
        hashes: compute the sha256 of the bytes and of the pixels, the 32x32 grayscale thumbnail and
            its 64-bit pHash, and the last three of the horizontally mirrored picture as well.
        max_pixels: larger images are skipped (decompression-bomb guard), as are those PIL itself refuses.
    """
    try:
        draft = max(HASH_SIZE, target.size if target else 0)
        rgb = _open_rgb(data, draft=draft, max_pixels=max_pixels)
        result: dict = {"width": rgb.width, "height": rgb.height}
        if hashes:
            result.update(_hashes(rgb), sha256=hashlib.sha256(data).hexdigest())
        if target is not None:
            result["array"] = fit(rgb, target)
        return Decoded(**result)
    except _Skip as skip:
        return Decoded(reason=skip.reason, is_image=skip.is_image)


def _open_rgb(data: bytes, *, draft: int, max_pixels: int) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise _Skip("not an image (unrecognised content)", is_image=False) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _Skip(f"too large, refused by the decompression-bomb guard ({exc})") from None
        except Exception as exc:
            raise _Skip(f"undecodable ({type(exc).__name__}: {exc})") from None
        width, height = image.size
        if width * height > max_pixels:
            raise _Skip(f"too large: {width}x{height} px = {width * height / 1e6:.0f} Mpx exceeds the "
                        f"{max_pixels / 1e6:.0f} Mpx limit (decompression-bomb guard)")
        try:
            image.draft(None, (draft, draft))   # JPEG only: decode at 1/2, 1/4 or 1/8 scale
            image.load()
            try:
                image = ImageOps.exif_transpose(image)
            except Exception:  # a broken EXIF block must not cost the picture
                pass
            return _to_rgb(image)
        except Exception as exc:
            raise _Skip(f"undecodable ({type(exc).__name__}: {exc})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):   # 16-bit or float grayscale -> 8 bit
        values = np.asarray(image, dtype=np.float64)
        top = float(values.max()) if values.size else 0.0
        values = values * (255.0 / top) if top > 255 else values
        image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))   # transparent -> white
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def phash(thumb: np.ndarray) -> int:
    """64-bit pHash: signs of the 8x8 lowest DCT frequencies of a 32x32 thumbnail against their median.

    Unlike a difference hash (dHash), it does not flip bits on flat walls and floors when a copy is
    resized: resized or re-encoded copies stay within a few bits. The DCT is SciPy's unnormalised
    DCT-II, a positive multiple (4) of the textbook sum, so the signs against the median are the same.
    """
    low = dctn(thumb.astype(np.float64), type=2)[:8, :8].ravel()   # (64,)
    return int.from_bytes(np.packbits(low > np.median(low)).tobytes(), "big")


def _pixel_sha256(rgb: Image.Image) -> str:
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}\n".encode())
    digest.update(np.asarray(rgb).tobytes())
    return digest.hexdigest()


def _thumb(gray: Image.Image) -> np.ndarray:
    return np.asarray(gray.resize((_THUMB, _THUMB), Image.Resampling.BOX), dtype=np.uint8)


def _hashes(rgb: Image.Image) -> dict:
    # The mirror's thumbnail is made from the mirrored picture: PIL's box filter does not commute
    # with a flip (thumb[:, ::-1] is off by one grey level here and there).
    gray = rgb.convert("L")
    thumb = _thumb(gray)
    mirror_thumb = _thumb(gray.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    return {"pixel_sha256": _pixel_sha256(rgb), "phash": phash(thumb), "thumb": thumb,
            "mirror_pixel_sha256": _pixel_sha256(rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
            "mirror_phash": phash(mirror_thumb), "mirror_thumb": mirror_thumb}


def fit(rgb: Image.Image, target: Target) -> np.ndarray:
    """Resize an RGB image to ``(C, size, size)`` uint8.

    ``stretch`` scales each side to ``size`` (aspect ratio not kept). ``letterbox`` scales the long side to
    ``size``, keeps the aspect ratio and pads the rest symmetrically with the mean colour of the
    resized picture: padding with black would add hard artificial edges whose position encodes the
    aspect ratio, something a small CNN can latch onto.
    """
    source = rgb.convert("L") if target.color == "gray" else rgb
    size = target.size
    if target.resize == "stretch":
        out = source.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    else:
        scale = size / max(source.width, source.height)
        width = min(size, max(1, round(source.width * scale)))
        height = min(size, max(1, round(source.height * scale)))
        inner = source.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
        means = [round(m) for m in ImageStat.Stat(inner).mean]
        fill = means[0] if source.mode == "L" else tuple(means)
        out = Image.new(source.mode, (size, size), fill)
        out.paste(inner, ((size - width) // 2, (size - height) // 2))
    array = np.asarray(out, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)   # (C, H, W)
    return np.ascontiguousarray(array)
