"""Classify image files with an exported model (``python -m search predict``).

Images are decoded by the function that decoded the training images (``anklealign.decode_image``)
with the size, colour and resize mode the model card states, then scaled and normalised as the card
says. An unreadable or non-image file is a :class:`Prediction` with a problem and the rest go on; a
missing, corrupt or tampered model is a :class:`SearchError` before any image is read.

The ``--onnx`` path needs only onnxruntime, numpy and PIL: nothing on it imports torch.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anklealign import DataError, decode_image
from search.study.errors import SearchError

__all__ = ["IMAGE_SUFFIXES", "Prediction", "classify_files", "read_card", "image_files"]

# File names a folder is searched for (explicitly named files are decoded whatever their name).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
_BATCH = 64

Classifier = Callable[[np.ndarray], np.ndarray]  # (B, C, H, W) float32 normalised -> (B, K) probabilities


def read_card(model_dir: Path) -> dict[str, Any]:
    """The model card (plain JSON: no torch needed), checked for what prediction relies on."""
    if not model_dir.is_dir():
        raise SearchError(f"no model folder at {model_dir}")
    path = model_dir / "model_card.json"
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SearchError(f"{model_dir} holds no model_card.json (write one with 'python -m search finalize' "
                          "or 'export')") from None
    except (OSError, ValueError) as exc:
        raise SearchError(f"unreadable model card {path}: {exc}") from None
    _preprocessing(card, path)
    return card


def _preprocessing(card: Any, where: Path) -> dict[str, Any]:
    pre = card.get("preprocessing") if isinstance(card, dict) else None
    ok = (isinstance(pre, dict) and isinstance(pre.get("image_size"), int) and pre.get("color") in ("gray", "rgb")
          and pre.get("resize") in ("stretch", "letterbox")
          and all(isinstance(pre.get(k), int | float) for k in ("scale", "mean", "std"))
          and isinstance(card.get("classes"), list) and card["classes"])
    if not ok:
        raise SearchError(f"{where}: model card lacks a valid 'preprocessing' (image_size, color, resize, scale, "
                          "mean, std) or 'classes'")
    return pre


def image_files(inputs: Sequence[str]) -> Iterator[tuple[Path, str | None]]:
    """``(path, None)`` for each file to classify, ``(path, reason)`` for an input that cannot be used.

    A folder is searched recursively (sorted) for files named like images; hidden files and other
    names are left out, with one note on stderr per folder.
    """
    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_dir():
            found, others = [], 0
            for f in sorted(path.rglob("*")):
                if not f.is_file() or any(part.startswith(".") for part in f.relative_to(path).parts):
                    continue
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    found.append(f)
                else:
                    others += 1
            if others:
                print(f"note: {path}: left out {others} file(s) not named like images", file=sys.stderr)
            if not found:
                yield path, "no image files in this folder"
            for f in found:
                yield f, None
        elif path.is_file():
            yield path, None
        else:
            yield path, "no such file or folder"


def _load(path: Path, pre: dict[str, Any]) -> tuple[np.ndarray | None, str]:
    """The image as the training tensors were made: anklealign's own decode + resize (numpy + PIL only)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    try:
        return decode_image(data, image_size=pre["image_size"], color=pre["color"], resize=pre["resize"]), ""
    except DataError as exc:
        return None, str(exc).removeprefix("cannot use this image: ")


def _torch_classifier(model_dir: Path) -> tuple[Classifier, dict[str, Any]]:
    import torch

    from search.final.export import load_model

    model, card = load_model(model_dir)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return run, card


def _onnx_classifier(model_dir: Path) -> tuple[Classifier, dict[str, Any]]:
    """onnxruntime + numpy only (never imports torch)."""
    card = read_card(model_dir)
    path = model_dir / "model.onnx"
    if not path.is_file():
        raise SearchError(f"{model_dir} holds no model.onnx ({card.get('onnx', {}).get('reason', 'not exported')})")
    try:
        import onnxruntime as ort
    except ImportError:
        raise SearchError("--onnx needs onnxruntime (pip install onnxruntime)") from None
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
        raise SearchError(f"cannot load {path}: {first}") from None
    if [i.name for i in session.get_inputs()] != ["image"]:
        raise SearchError(f"{path}: expected one input named 'image', got {[i.name for i in session.get_inputs()]}")

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(["probabilities"], {"image": x})[0]

    return run, card


@dataclass(frozen=True)
class Prediction:
    """One input's outcome: its class probabilities (in ``classes`` order), or why it has none."""

    path: Path
    probabilities: np.ndarray | None
    problem: str = ""


def classify_files(model_dir: Path, inputs: Sequence[str], *,
                   onnx: bool = False) -> tuple[list[str], Iterator[Prediction]]:
    """The model's classes and, lazily and in input order, a :class:`Prediction` per image file.

    Raises:
        SearchError: no model folder, or a missing, corrupt or tampered model (before any image is read).
    """
    if not model_dir.is_dir():
        raise SearchError(f"no model folder at {model_dir}")
    classify, card = _onnx_classifier(model_dir) if onnx else _torch_classifier(model_dir)
    pre = _preprocessing(card, model_dir / "model_card.json")
    return [str(c) for c in card["classes"]], _predictions(classify, pre, inputs)


def _predictions(classify: Classifier, pre: dict[str, Any], inputs: Sequence[str]) -> Iterator[Prediction]:
    batch: list[tuple[Path, np.ndarray]] = []

    def flush() -> Iterator[Prediction]:
        if not batch:
            return
        x = np.stack([a for _, a in batch]).astype(np.float32) / np.float32(pre["scale"])  # (B, C, H, W)
        x = (x - np.float32(pre["mean"])) / np.float32(pre["std"])
        probs = classify(np.ascontiguousarray(x, dtype=np.float32))
        yield from (Prediction(path, p) for (path, _), p in zip(batch, probs, strict=True))
        batch.clear()

    for path, problem in image_files(inputs):
        array = None
        if problem is None:
            array, problem = _load(path, pre)
        if array is None:
            yield from flush()  # keep the output in input order
            yield Prediction(path, None, problem)
            continue
        batch.append((path, array))
        if len(batch) >= _BATCH:
            yield from flush()
    yield from flush()
