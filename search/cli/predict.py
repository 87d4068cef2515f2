"""The handler of ``predict``: nothing on its ``--onnx`` path imports torch (onnxruntime, numpy and PIL only)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from search.final.predict import classify_files

__all__ = ["cmd_predict"]


def cmd_predict(args: argparse.Namespace) -> int:
    """``predict``: one line per image (or one JSON object); exit 1 when any input failed."""
    classes, predictions = classify_files(Path(args.model).expanduser(), args.inputs, onnx=args.onnx)
    failed = 0
    for p in predictions:
        if p.probabilities is None:
            failed += 1
            print(f"error: {p.path}: {p.problem}", file=sys.stderr)
        else:
            _print_prediction(p.path, classes, p.probabilities, as_json=args.json)
    return 1 if failed else 0


def _print_prediction(path: Path, classes: Sequence[str], probs: np.ndarray, *, as_json: bool) -> None:
    best = classes[int(np.argmax(probs))]
    if as_json:
        print(json.dumps({"path": str(path), "class": best,
                          "probabilities": {c: round(float(p), 6) for c, p in zip(classes, probs, strict=True)}}))
    else:
        print(f"{path}\t{best}\t" + " ".join(f"{c}={float(p):.4f}" for c, p in zip(classes, probs, strict=True)))
