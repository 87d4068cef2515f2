"""``python -m search predict --model DIR IMAGE|FOLDER... [--json] [--onnx]``: classify image files.

Images are decoded by the function that decoded the training images (``anklealign.decode_image``)
with the size, colour and resize mode the model card states, then scaled and normalised as the card
says. One output line per image; an unreadable or non-image file is reported on stderr and the rest
go on (exit 1 if any failed). A missing, corrupt or tampered model is one ``error:`` line, exit 2.

The ``--onnx`` path needs only onnxruntime, numpy and PIL: nothing on it imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anklealign import DataError, decode_image
from search.errors import SearchError

__all__ = ["IMAGE_SUFFIXES", "cli_predict", "read_card", "image_files"]

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

    from search.export import load_model

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


def cli_predict(args: argparse.Namespace) -> int:
    """Classify every image named on the command line; returns 0, or 1 when any input failed."""
    model_dir = Path(args.model).expanduser()
    if not model_dir.is_dir():
        raise SearchError(f"no model folder at {model_dir}")
    classify, card = _onnx_classifier(model_dir) if args.onnx else _torch_classifier(model_dir)
    pre = _preprocessing(card, model_dir / "model_card.json")
    classes = [str(c) for c in card["classes"]]
    failed = 0
    batch: list[tuple[Path, np.ndarray]] = []

    def flush() -> None:
        if not batch:
            return
        x = np.stack([a for _, a in batch]).astype(np.float32) / np.float32(pre["scale"])  # (B, C, H, W)
        x = (x - np.float32(pre["mean"])) / np.float32(pre["std"])
        probs = classify(np.ascontiguousarray(x, dtype=np.float32))
        for (path, _), p in zip(batch, probs, strict=True):
            _print_result(path, classes, p, as_json=args.json)
        batch.clear()

    for path, problem in image_files(args.inputs):
        array = None
        if problem is None:
            array, problem = _load(path, pre)
        if array is None:
            failed += 1
            print(f"error: {path}: {problem}", file=sys.stderr)
            continue
        batch.append((path, array))
        if len(batch) >= _BATCH:
            flush()
    flush()
    return 1 if failed else 0


def _print_result(path: Path, classes: Sequence[str], probs: np.ndarray, *, as_json: bool) -> None:
    best = classes[int(np.argmax(probs))]
    if as_json:
        print(json.dumps({"path": str(path), "class": best,
                          "probabilities": {c: round(float(p), 6) for c, p in zip(classes, probs, strict=True)}}))
    else:
        print(f"{path}\t{best}\t" + " ".join(f"{c}={float(p):.4f}" for c, p in zip(classes, probs, strict=True)))
