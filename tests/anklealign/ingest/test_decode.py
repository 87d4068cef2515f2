"""Decoding by content: EXIF, formats, broken files, decompression bombs, stretch vs letterbox."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from anklealign.ingest.decode import MAX_PIXELS, Target, decode

from ..conftest import encode, jpeg, picture


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels (1 bit) but holds almost no data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_exif_orientation_is_applied() -> None:
    image = picture(1, (40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    tagged = decode(encode(image, "PNG", exif=exif.tobytes()))
    upright = decode(encode(image.transpose(Image.Transpose.ROTATE_270), "PNG"))
    assert (tagged.width, tagged.height) == (20, 40)
    assert tagged.pixel_sha256 == upright.pixel_sha256


@pytest.mark.parametrize("fmt", ["BMP", "WEBP", "PNG", "GIF", "TIFF"])
def test_decoded_by_content_not_by_name(fmt: str) -> None:
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    result = decode(encode(picture(2), fmt, **kwargs), target=Target(16, "rgb", "stretch"))
    assert result.reason == ""
    assert result.array.shape == (3, 16, 16) and result.array.dtype == np.uint8


@pytest.mark.parametrize(("data", "is_image", "reason"), [
    (b'{"cells": []}', False, "not an image"),
    (b"", False, "not an image"),
    (jpeg(3)[:400], True, "undecodable"),                       # truncated JPEG
    (_png_header_only(9000, 9000), True, "too large: 9000x9000"),  # over our limit, under PIL's
    (_png_header_only(20000, 20000), True, "decompression-bomb"),  # PIL refuses it on open
])
def test_skipped_with_reason(data: bytes, is_image: bool, reason: str) -> None:
    result = decode(data, target=Target(16, "gray", "stretch"))
    assert reason in result.reason
    assert result.is_image is is_image
    assert result.array is None


def test_pixel_limit_is_configurable_and_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limit refuses an image from its header: not one pixel is decoded. Fails if the size is
    checked after ``load()`` (a bomb would be decoded first) or if ``max_pixels`` is ignored."""
    from PIL import ImageFile

    loads: list[tuple[int, int]] = []
    real_load = ImageFile.ImageFile.load

    def counting_load(self: ImageFile.ImageFile) -> object:
        loads.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    refused = decode(jpeg(4, (64, 48)), max_pixels=64 * 48 - 1)
    assert "too large: 64x48" in refused.reason and refused.array is None
    assert loads == []  # refused before decoding
    assert decode(jpeg(4, (64, 48)), max_pixels=64 * 48).reason == ""
    assert loads  # ...while an image within the limit is decoded (the counter sees real decoding)


def test_default_pixel_limit_sits_between_real_photos_and_bombs() -> None:
    """By default one pixel over MAX_PIXELS is refused and the largest real photo (7172x4912) is not."""
    over = decode(_png_header_only(MAX_PIXELS + 1, 1))
    assert "too large" in over.reason and "Mpx limit" in over.reason
    largest = decode(_png_header_only(7172, 4912))  # header only: it gets past the limit, then fails to decode
    assert "too large" not in largest.reason and largest.reason


def test_stretch_and_letterbox() -> None:
    wide = Image.new("RGB", (80, 40), (200, 10, 10))
    data = encode(wide, "PNG")
    stretch = decode(data, target=Target(32, "rgb", "stretch")).array
    letter = decode(data, target=Target(32, "rgb", "letterbox")).array
    gray = decode(data, target=Target(32, "gray", "letterbox")).array
    assert stretch.shape == letter.shape == (3, 32, 32) and gray.shape == (1, 32, 32)
    assert (stretch == np.array([200, 10, 10])[:, None, None]).all()
    # 80x40 -> 32x16 centred; 8 rows above and below padded with the picture's mean colour
    assert (letter == np.array([200, 10, 10])[:, None, None]).all()
    two_tone = Image.new("L", (80, 40), 0)
    two_tone.paste(255, (40, 0, 80, 40))
    boxed = decode(encode(two_tone, "PNG"), target=Target(32, "gray", "letterbox")).array[0]
    assert (boxed[:8] == round(boxed[8:24].mean())).all() and (boxed[24:] == boxed[0, 0]).all()
    assert boxed[16, 0] == 0 and boxed[16, -1] == 255


def test_large_jpeg_decodes_at_reduced_scale_with_the_same_hash_for_any_size() -> None:
    data = encode(picture(5, (1280, 960)))
    small = decode(data, target=Target(64, "gray", "stretch"))
    other = decode(data, target=Target(128, "rgb", "letterbox"))
    assert (small.width, small.height) == (640, 480)   # JPEG draft: 1/2 scale keeps >= 256 px
    assert small.pixel_sha256 == other.pixel_sha256 and small.phash == other.phash


def test_sixteen_bit_and_transparent_images() -> None:
    deep = Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    assert deep.mode.startswith("I;16")
    result = decode(encode(deep, "PNG"), target=Target(8, "gray", "stretch"))
    assert result.reason == "" and 0 < result.array.mean() < 255
    clear = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    result = decode(encode(clear, "PNG"), target=Target(8, "gray", "stretch"))
    assert (result.array == 255).all()   # transparent -> white, not black


def test_bytes_hash_differs_pixels_hash_equal_for_lossless_formats() -> None:
    image = picture(6)
    png, bmp = decode(encode(image, "PNG")), decode(encode(image, "BMP"))
    assert png.sha256 != bmp.sha256 and png.pixel_sha256 == bmp.pixel_sha256
