"""Duplicate groups (exact and near), leakage removal and the label vote inside a group."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

import anklealign
from anklealign.ingest.decode import decode
from anklealign.ingest.dedup import Groups, find_groups

from ..conftest import LABELS, encode, export, jpeg, mini_files, picture, task, write_tree


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(load_sample_images().images[0]).resize((1280, 854))


def _local_change(image: Image.Image) -> Image.Image:
    """The same scene with one region changed, like a foot in another pose."""
    changed = image.copy()
    region = image.crop((500, 300, 700, 800)).rotate(8)
    changed.paste(region, (500, 300))
    return changed


VARIANTS = {
    "same bytes": (lambda im: encode(im), "exact"),
    "same pixels, other format": (lambda im: encode(im, "BMP"), "near"),   # JPEG pixels vs decoded copy
    "re-encoded q30": (lambda im: encode(im, "JPEG", quality=30), "near"),
    "resized to 170 px, q40": (lambda im: encode(im.resize((170, 113)), "JPEG", quality=40), "near"),
    "webp": (lambda im: encode(im.resize((900, 600)), "WEBP", quality=70), "near"),
    "local change": (lambda im: encode(_local_change(im)), "different"),
    "mirrored": (lambda im: encode(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)), "mirror"),
    "mirrored, lossless": (lambda im: encode(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "PNG"), "mirror"),
    "mirrored, resized q40": (lambda im: encode(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((300, 200)),
                                                "JPEG", quality=40), "mirror"),
    "flipped upside down": (lambda im: encode(im.transpose(Image.Transpose.FLIP_TOP_BOTTOM)), "different"),
    "other photo": (lambda im: encode(picture(7, im.size)), "different"),
}


def _groups(decoded: list, *, mirrors: bool = True) -> Groups:
    fields = ["sha256", "pixel_sha256", "phash", "thumb"]
    extra = {"mirror_pixel_sha256": [d.mirror_pixel_sha256 for d in decoded],
             "mirror_phash": [d.mirror_phash for d in decoded],
             "mirror_thumbs": [d.mirror_thumb for d in decoded]} if mirrors else {}
    return find_groups(*([getattr(d, f) for d in decoded] for f in fields), **extra)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("order", ["original first", "copy first"])
def test_near_duplicate_rule_on_a_photograph(photo: Image.Image, variant: str, order: str) -> None:
    make, expected = VARIANTS[variant]
    pair = [decode(encode(photo)), decode(make(photo))]
    if order == "copy first":
        pair.reverse()
    groups = _groups(pair)
    assert (groups.group[0] == groups.group[1]) is (expected != "different")
    assert (groups.exact[0] == groups.exact[1]) is (expected == "exact")  # a mirror is never an exact copy
    # Without the mirrors' hashes, mirrored copies are not looked for.
    plain = _groups(pair, mirrors=False)
    assert (plain.group[0] == plain.group[1]) is (expected in ("exact", "near"))


def test_exact_mirror_found_by_pixels_even_where_the_thumbnail_check_would_fail() -> None:
    # A tiny noisy picture: its thumbnail is the picture, so only the pixel digest can say "mirror".
    image = picture(11, (20, 14))
    a, b = decode(encode(image, "PNG")), decode(encode(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "PNG"))
    assert a.mirror_pixel_sha256 == b.pixel_sha256 and b.mirror_pixel_sha256 == a.pixel_sha256
    assert a.pixel_sha256 != b.pixel_sha256
    assert _groups([a, b]).group == [0, 0]


def test_mirror_arguments_all_or_none() -> None:
    d = decode(jpeg(1))
    with pytest.raises(ValueError, match="all three"):
        find_groups([d.sha256], [d.pixel_sha256], [d.phash], [d.thumb], mirror_phash=[d.mirror_phash])
    with pytest.raises(ValueError, match="one entry per image"):
        find_groups([d.sha256, d.sha256], [d.pixel_sha256], [d.phash], [d.thumb])
    assert find_groups([], [], [], []).group == []


def test_same_pixels_in_two_lossless_formats_are_exact_duplicates() -> None:
    image = picture(3)
    a, b = decode(encode(image, "PNG")), decode(encode(image, "BMP"))
    groups = find_groups([a.sha256, b.sha256], [a.pixel_sha256, b.pixel_sha256], [a.phash, b.phash],
                         [a.thumb, b.thumb])
    assert groups.exact == [0, 0] and groups.count_duplicate_groups() == 1


def test_groups_are_transitive() -> None:
    image = picture(4, (320, 240))
    files = [encode(image), encode(image.resize((200, 150))), encode(image.resize((200, 150)), "PNG"), jpeg(5)]
    decoded = [decode(f) for f in files]
    groups = find_groups(*zip(*((d.sha256, d.pixel_sha256, d.phash, d.thumb) for d in decoded), strict=True))
    assert groups.group == [0, 0, 0, 1]


def _with_copies(tmp_path: Path) -> Path:
    files = mini_files()
    p = "anklealign/"
    near_p3 = encode(Image.open(io.BytesIO(files[f"{p}A1B2C3/p3.jpg"])).resize((48, 36)), "PNG")
    files.update({
        f"{p}D4E5F6/copy_of_p1.jpg": files[f"{p}A1B2C3/p1.jpg"],        # exact copy, unlabelled folder
        f"{p}G7H8I9/copy_of_d1.jpg": files[f"{p}D4E5F6/d1.jpg"],        # copy of a test image, labelled
        f"{p}G7H8I9/p3_small.png": near_p3,                              # near copy, other label: tie
        f"{p}H1J2K3/p1.jpg": files[f"{p}A1B2C3/p1.jpg"],                 # exact copy, same label
        f"{p}H1J2K3/p1_again.jpg": files[f"{p}A1B2C3/p1.jpg"],           # exact copy, other label
        f"{p}H1J2K3/labels.json": export(task("p1.jpg", LABELS[0]), task("p1_again.jpg", LABELS[1])),
    })
    files[f"{p}G7H8I9/export.json"] = export(task("g1.jpg", "neutral"), task("copy_of_d1.jpg", LABELS[2]),
                                             task("p3_small.png", LABELS[0]))
    return write_tree(tmp_path / "copies", files)


def test_leakage_removal_and_group_votes(tmp_path: Path, cache_dir: Path) -> None:
    root = _with_copies(tmp_path)
    ds = anklealign.load(root, image_size=16, cache_dir=cache_dir)
    report = ds.report.to_dict()
    reasons = {entry["path"].removeprefix(f"{root.name}/"): entry["reason"] for entry in report["skipped"]}
    reasons = {k.removeprefix("anklealign/"): v for k, v in reasons.items()}
    # the copy of test image d1 never trains; p2 (listed, labelled by its participant) counts as leakage too
    assert reasons["G7H8I9/copy_of_d1.jpg"] == "duplicate of test image D4E5F6/d1.jpg"
    assert report["leakage_removed"] == 2
    # p1 + three exact copies: votes pronation 2 / neutral 1 -> pronation, one representative kept
    assert "A1B2C3/p1.jpg" in ds.train.ids
    for copy in ("D4E5F6/copy_of_p1.jpg", "H1J2K3/p1.jpg", "H1J2K3/p1_again.jpg"):
        assert reasons[copy] == "exact duplicate of A1B2C3/p1.jpg" and copy not in ds.train.ids
    assert ds.train.labels[ds.train.ids.index("A1B2C3/p1.jpg")] == 0
    # p3 (supination) and its resized copy (pronation): a tie, both dropped with the reason
    for name in ("A1B2C3/p3.jpg", "G7H8I9/p3_small.png"):
        assert reasons[name] == "conflicting labels (pronation 1, supination 1): tie, dropped"
    resolutions = {c["images"]: c["resolution"] for c in report["conflicts"]}
    assert resolutions["A1B2C3/p3.jpg, G7H8I9/p3_small.png"] == "tie: dropped"
    assert resolutions["A1B2C3/p1.jpg, H1J2K3/p1.jpg, H1J2K3/p1_again.jpg"].startswith("majority pronation")
    assert report["duplicate_groups"] == 3
    # every group id is used by one side only, and near copies share an id
    assert not set(ds.train.groups.tolist()) & set(ds.test.groups.tolist())
    assert report["train"]["images"] == len(ds.train.ids) == 3


def test_mirrored_copy_of_a_test_image_never_trains(tmp_path: Path, cache_dir: Path) -> None:
    files = mini_files()
    p = "anklealign/"
    d1 = Image.open(io.BytesIO(files[f"{p}D4E5F6/d1.jpg"]))
    files[f"{p}G7H8I9/flipped_d1.jpg"] = encode(d1.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "JPEG", quality=80)
    files[f"{p}G7H8I9/export.json"] = export(task("g1.jpg", "neutral"), task("flipped_d1.jpg", LABELS[2]))
    root = write_tree(tmp_path / "mirrored", files)
    ds = anklealign.load(root, image_size=16, cache_dir=cache_dir)
    report = ds.report.to_dict()
    reasons = {e["path"].split("anklealign/", 1)[-1]: e["reason"] for e in report["skipped"]}
    assert reasons["G7H8I9/flipped_d1.jpg"] == "duplicate of test image D4E5F6/d1.jpg"
    assert not any(i.endswith("flipped_d1.jpg") for i in ds.train.ids)
    assert not set(ds.train.groups.tolist()) & set(ds.test.groups.tolist())
