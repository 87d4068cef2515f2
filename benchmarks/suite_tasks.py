"""The task suite's data: each task a ``train/<class>``, ``test/<class>`` folder and a held-out draw.

Every task is made from its seed alone (numpy ``default_rng``), so a task and seed name one dataset. The
held-out draw (``heldout/<class>/``) comes from the same generator as the training images and no earlier
decision has seen it; for the digits (real scans) it is every scan not used for training or test.

- ``twin``: the realistic AnkleAlign twin (``anklealign.synth``); held-out = its evaluation draw.
- ``colour``: blobs on a gray texture whose hue, at equal luma, is the class: a gray input sees no class.
- ``flip``: arrows pointing left, right or up: a horizontal flip swaps two classes.
- ``digits``: scikit-learn's handwritten digits (8x8 scans, 10 classes), 400 training images with 15 % of
  their labels moved to another class; test and held-out labels clean.
- ``tilt``: gratings whose tilt away from horizontal (0, 12 or 24 degrees, either sign) is the class: a
  rotation of up to 10 degrees, as the default augments, moves a picture toward the next class. Mirror
  symmetric (a flip keeps the class), so only the rotation is wrong for it.

The oracle of a task (``ORACLE``) is the one setting the task's construction says the default gets wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
N_TRAIN, N_TEST, N_HELDOUT = 300, 100, 1000
# The settings that make the default right for a task, as --set overrides that restrict the space to them.
ORACLE = {"colour": ['space.color=["rgb"]'], "flip": ["space.aug_hflip_p=[0.0, 0.0]"],
          "tilt": ["space.aug_rotate_deg=[0.0, 0.0]"]}


def _texture(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A smooth gray background (noise at a quarter of the size, upsampled), values around 128."""
    small = rng.normal(128, 30, (size // 4, size // 4))
    return np.asarray(Image.fromarray(np.clip(small, 0, 255).astype(np.uint8)).resize((size, size),
                                                                                       Image.BILINEAR), float)


def _colour(rng: np.random.Generator, k: int) -> Image.Image:
    # Three hues 120 degrees apart in the plane orthogonal to PIL's luma weights (ITU-R 601-2), so that
    # convert("L") maps each class's blobs to the same gray.
    w = np.array([0.299, 0.587, 0.114])
    u = np.array([1.0, -w[0] / w[1], 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(w / np.linalg.norm(w), u)
    img = np.repeat(_texture(rng)[..., None], 3, axis=2)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for _ in range(rng.integers(1, 4)):
        angle = 2 * np.pi * k / 3 + rng.normal(0, 0.25)
        luma = rng.uniform(100, 160)
        rgb = luma + 55 * (np.cos(angle) * u + np.sin(angle) * v)
        cy, cx, ry, rx = rng.uniform(12, 52), rng.uniform(12, 52), rng.uniform(6, 14), rng.uniform(6, 14)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img[inside] = rgb
    img += rng.normal(0, 6, (SIZE, SIZE, 1))  # luma noise, the same on every channel
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _flip(rng: np.random.Generator, k: int) -> Image.Image:
    img = Image.fromarray(np.clip(_texture(rng), 0, 255).astype(np.uint8), "L")
    length, width = rng.uniform(22, 40), rng.uniform(4, 8)
    head = rng.uniform(0.35, 0.5) * length
    # An arrow pointing along +x, then turned to the class's direction (left, right, up) +- 12 degrees.
    pts = np.array([[-length / 2, -width / 2], [length / 2 - head, -width / 2], [length / 2 - head, -head / 1.6],
                    [length / 2, 0], [length / 2 - head, head / 1.6], [length / 2 - head, width / 2],
                    [-length / 2, width / 2]])
    theta = np.deg2rad([180.0, 0.0, -90.0][k] + rng.uniform(-12, 12))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    centre = rng.uniform(22, 42, 2)
    shade = int(rng.choice([rng.integers(0, 60), rng.integers(196, 256)]))
    ImageDraw.Draw(img).polygon([tuple(p) for p in pts @ rot.T + centre], fill=shade)
    noisy = np.asarray(img, float) + rng.normal(0, 8, (SIZE, SIZE))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "L")


def _tilt(rng: np.random.Generator, k: int) -> Image.Image:
    angle = np.deg2rad((0.0, 12.0, 24.0)[k] * rng.choice([-1, 1]) + rng.uniform(-2, 2))
    yy, xx = np.mgrid[:SIZE, :SIZE] - SIZE / 2
    period = rng.uniform(7, 12)
    wave = np.sin(2 * np.pi * (yy * np.cos(angle) - xx * np.sin(angle)) / period + rng.uniform(0, 2 * np.pi))
    img = 128 + rng.uniform(30, 70) * wave + rng.normal(0, 25, (SIZE, SIZE))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L")


_DRAW: dict[str, tuple[tuple[str, ...], Callable[[np.random.Generator, int], Image.Image]]] = {
    "colour": (("a", "b", "c"), _colour),
    "flip": (("left", "right", "up"), _flip),
    "tilt": (("flat", "low", "steep"), _tilt),
}


def _write(folder: Path, split: str, classes: tuple[str, ...], images: list[tuple[int, Image.Image]]) -> None:
    for c in classes:
        (folder / split / c).mkdir(parents=True, exist_ok=True)
    for i, (k, img) in enumerate(images):
        img.save(folder / split / classes[k] / f"{split}-{i:05d}.png")


def _drawn(task: str, seed: int, out: Path, sizes: tuple[int, int, int]) -> None:
    classes, draw = _DRAW[task]
    rng = np.random.default_rng([seed, sum(map(ord, task))])
    for split, n in zip(("train", "test", "heldout"), sizes, strict=True):
        labels = np.arange(n) % len(classes)
        _write(out, split, classes, [(int(k), draw(rng, int(k))) for k in labels])


def _digits(seed: int, out: Path, *, n_train: int = 400, n_test: int = 300, noise: float = 0.15) -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images * (255 / 16)).round().astype(np.uint8)
    rng = np.random.default_rng([seed, 7])
    order = rng.permutation(len(images))
    train, test, heldout = order[:n_train], order[n_train:n_train + n_test], order[n_train + n_test:]
    labels = d.target.copy()
    moved = rng.choice(train, size=round(noise * n_train), replace=False)
    for i in moved:  # to another class, uniformly
        labels[i] = (labels[i] + rng.integers(1, 10)) % 10
    classes = tuple(str(c) for c in range(10))
    for split, idx, lab in (("train", train, labels), ("test", test, d.target), ("heldout", heldout, d.target)):
        _write(out, split, classes, [(int(lab[i]), Image.fromarray(images[i], "L")) for i in idx])
    (out / "noise.json").write_text(json.dumps({"moved_labels": len(moved), "of": n_train}))


def make_task(task: str, seed: int, out: Path, *, quick: bool = False) -> tuple[Path, Path]:
    """Write task ``task`` of seed ``seed`` under ``out`` (once); returns (data folder, held-out folder)."""
    done = out / ".done"
    if task == "twin":
        data, heldout = out / "anklealign", out / "eval"
    else:
        data, heldout = out, out / "heldout"
    if done.is_file():
        return data, heldout
    if task == "twin":
        import anklealign

        anklealign.synth(out, seed=seed, scale=0.2 if quick else 1.0, difficulty="realistic",
                         eval_n=60 if quick else N_HELDOUT)
    elif task == "digits":
        _digits(seed, out, **({"n_train": 120, "n_test": 60} if quick else {}))
    elif task in _DRAW:
        _drawn(task, seed, out, (60, 30, 60) if quick else (N_TRAIN, N_TEST, N_HELDOUT))
    else:
        raise ValueError(f"unknown task {task!r}; known: twin, digits, {', '.join(_DRAW)}")
    done.write_text("")
    return data, heldout


TASKS = ("twin", "colour", "flip", "digits", "tilt")
