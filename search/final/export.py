"""The exported model: an ensemble of the retrained seeds, as safe weights, ONNX and a model card.

``model.pt`` holds only tensors and plain values (``torch.load(weights_only=True)`` reads it, and
refuses anything else, so a tampered file is never executed); the config in it rebuilds the
network with :func:`space.build_cnn` without Optuna. ``model.onnx`` is the same ensemble, checked
against PyTorch before it is written. Both take normalised images and return the averaged softmax
probabilities of the members.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import math
import platform
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from anklealign.report import twin_sentence
from search.study import atomic
from search.study.errors import SearchError
from space import InputCfg, ModelCfg, TrialCfg, build_cnn, normalize

__all__ = [
    "FORMAT",
    "ONNX_OPSET",
    "ONNX_TOLERANCE",
    "EnsembleCNN",
    "preprocessing",
    "library_versions",
    "intended_use",
    "save_model",
    "load_model",
]

_log = logging.getLogger(__name__)

FORMAT = "anklealign-search/1"
ONNX_OPSET = 18
ONNX_TOLERANCE = 1e-4  # max |p_onnx - p_torch| over the check images' probabilities
_CHECK_IMAGES = 16  # random check images when none are given


class EnsembleCNN(nn.Module):
    """Networks on one input; the output is the mean of their softmax probabilities.

    The members are R seeds of one :class:`ModelCfg`, or (a top-k ensemble) R seeds of each of k
    configs: ``member_cfgs`` then gives each member's config. Input ``image``: (B, C, H, W) float32,
    normalised with :func:`space.normalize`; output ``probabilities``: (B, K), rows sum to 1. A
    ``temperature`` other than 1 (fitted on out-of-fold predictions, :mod:`search.final.calibration`)
    calibrates the averaged probabilities: ``softmax(log p / T)``, part of the ONNX graph too.
    """

    def __init__(self, cfg: ModelCfg, members: int, member_cfgs: Sequence[ModelCfg] | None = None,
                 temperature: float = 1.0, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"an ensemble needs at least one member, got {members}")
        cfgs = list(member_cfgs) if member_cfgs is not None else [cfg] * members
        if len(cfgs) != members or len({c.num_classes for c in cfgs}) != 1:
            raise ValueError(f"{members} members need {members} configs with one class count")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if weights is not None and (len(weights) != members or min(weights) < 0 or not math.isclose(sum(weights), 1)):
            raise ValueError(f"{members} members need {members} non-negative weights summing to 1, got {weights}")
        self.weights = [float(w) for w in weights] if weights is not None else None
        self.cfg = cfg
        self.member_cfgs = cfgs
        self.temperature = float(temperature)
        self.members = nn.ModuleList(build_cnn(c) for c in cfgs)
        self.eval()

    @classmethod
    def from_models(cls, cfg: ModelCfg, models: Sequence[nn.Module], member_cfgs: Sequence[ModelCfg] | None = None,
                    temperature: float = 1.0, weights: Sequence[float] | None = None) -> EnsembleCNN:
        """A CPU ensemble with the weights of trained models (any device) of these configs."""
        ens = cls(cfg, len(models), member_cfgs, temperature, weights)
        for member, model in zip(ens.members, models, strict=True):
            member.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
        return ens.eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(m(image), dim=1) for m in self.members])  # (R, B, K)
        if self.weights is None:
            mean = probs.mean(0)  # (B, K)
        else:  # a greedy ensemble: each member's share of the average
            mean = (probs * torch.tensor(self.weights, dtype=probs.dtype, device=probs.device)[:, None, None]).sum(0)
        if self.temperature == 1.0:
            return mean
        return torch.softmax(torch.log(mean.clamp_min(1e-12)) / self.temperature, dim=1)


def preprocessing(inp: InputCfg) -> dict[str, Any]:
    """What an image goes through before the model, exactly as the training tensors were made.

    The decoder is ``anklealign.ingest.decode.decode`` (used by ``predict`` too), so these words describe
    code rather than replace it.
    """
    resize = ("stretch: each side scaled to image_size (aspect ratio not kept)" if inp.resize == "stretch" else
              "letterbox: long side scaled to image_size, aspect ratio kept, the rest padded symmetrically "
              "(extra pixel right/bottom) with the mean colour of the resized picture")
    return {
        "decoder": "anklealign.ingest.decode.decode (the function that decoded the training images)",
        "steps": [
            "decode by content with PIL (not by file extension); JPEGs use PIL draft mode so the short side "
            "stays >= max(256, image_size)",
            "apply the EXIF orientation (ImageOps.exif_transpose)",
            "convert to RGB (transparency composited on white; 16-bit gray scaled to 8 bit)",
            "gray: PIL convert('L') (ITU-R 601-2 luma)" if inp.color == "gray" else "rgb: keep 3 channels",
            resize,
            f"resize with PIL bilinear (reducing_gap=3.0) to {inp.image_size}x{inp.image_size}",
            "uint8, layout (C, H, W), batch -> (B, C, H, W)",
            "float32 x / 255",
            "(x - 0.5) / 0.5",
        ],
        "image_size": inp.image_size,
        "color": inp.color,
        "channels": inp.channels,
        "resize": inp.resize,
        "interpolation": "bilinear",
        "scale": 255.0,
        "mean": 0.5,
        "std": 0.5,
        "layout": "NCHW",
        "input": {"name": "image", "dtype": "float32", "shape": ["batch", inp.channels, inp.image_size,
                                                                inp.image_size]},
        "output": {"name": "probabilities", "dtype": "float32", "shape": ["batch", "classes"],
                   "meaning": "softmax probabilities averaged over the ensemble members (calibrated by the "
                              "model's temperature, when it has one)"},
    }


def library_versions() -> dict[str, str | None]:
    """Installed versions of what made the model (read from package metadata; imports nothing)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "optuna", "onnx", "onnxruntime", "onnxscript", "numpy", "pillow",
                 "scikit-learn"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def intended_use(data: dict[str, Any]) -> str:
    """The card's plain-words "intended use / limitations" for the data a model was made from."""
    if data.get("synthetic"):
        return ("DEMONSTRATION ONLY: this model was trained and scored on the SYNTHETIC TWIN of AnkleAlign "
                "(generated drawings with a learnable tilt signal, not photographs). Its scores say that the "
                "pipeline works, nothing about real feet. Do not use it on real photographs, and never for "
                "a clinical decision. " + twin_sentence(data)).strip()
    anklealign = data.get("kind") == "anklealign"
    what = ("rear-view photographs of the foot and ankle into pronation / neutral / supination" if anklealign
            else "images into the classes of its training folders")
    votes = " Its labels are a majority vote of annotators who often disagree." if anklealign else ""
    return (f"Research use: sorts {what}, learnt from {data.get('train_images', '?')} labelled images of "
            f"{data.get('source', '?')}. It is not a medical device and must not be used for diagnosis or "
            f"treatment. The test set has {data.get('test_images', '?')} images;{votes} read the intervals and "
            "per-class recall in metrics.json before trusting a number; classes without a test image are "
            "unmeasured. Images unlike the training images (other views, lighting, cameras, people) are out of "
            "scope. Use the exact preprocessing stated here.")


def save_model(out_dir: Path | str, models: Sequence[nn.Module], cfg: TrialCfg, *, card: dict[str, Any],
               classes: Sequence[str], check_images: torch.Tensor | None = None,
               member_trials: Sequence[TrialCfg] | None = None, onnx: bool = True,
               temperature: float = 1.0, weights: Sequence[float] | None = None) -> dict[str, Any]:
    """Write model.pt, model.onnx and model_card.json for an ensemble of trained models.

    Args:
        out_dir: folder to write into (created).
        models: the R trained members (built from ``cfg.model``, any device).
        cfg: their trial config (the card and model.pt record it); for a top-k ensemble the first
            (best) trial's, with ``member_trials`` giving each member's trial config (all share ``cfg.input``).
        card: caller's card fields (``data`` = :func:`search.run.data.describe`, metrics, seeds, epochs, ...);
            the format, config, preprocessing, versions, date, ONNX check and intended use are added.
        classes: the K class names (index = output column).
        check_images: uint8 (N, C, H, W) images the ONNX model is checked on (default: seeded noise).
        onnx: write model.onnx too (a baseline kept only for ``search score`` needs model.pt alone).
        temperature: the calibration temperature folded into the model (1 = none).
        weights: each member's share of the averaged probabilities (None: equal).

    Returns:
        The card as written.
    """
    out_dir = Path(out_dir)
    if len(classes) != cfg.model.num_classes:
        raise ValueError(f"{len(classes)} class names for a model with {cfg.model.num_classes} outputs")
    if member_trials is not None and any(t.input != cfg.input for t in member_trials):
        raise ValueError("the members of an ensemble must share one input config")
    member_cfgs = [t.model for t in member_trials] if member_trials is not None else None
    ensemble = EnsembleCNN.from_models(cfg.model, models, member_cfgs, temperature, weights)
    blob = {"format": FORMAT, "config": cfg.to_dict(),
            "state_dicts": [dict(m.state_dict()) for m in ensemble.members],
            "classes": list(classes), "preprocessing": preprocessing(cfg.input), "temperature": float(temperature)}
    if member_trials is not None:
        blob["member_trials"] = [t.to_dict() for t in member_trials]
    if weights is not None:
        blob["member_weights"] = [float(w) for w in weights]
    atomic.write_with(out_dir / "model.pt", lambda p: torch.save(blob, p))
    if check_images is None:
        gen = torch.Generator().manual_seed(0)
        size = (_CHECK_IMAGES, cfg.input.channels, cfg.input.image_size, cfg.input.image_size)
        check_images = torch.randint(0, 256, size, generator=gen, dtype=torch.uint8)
    onnx_info = (_export_onnx(ensemble, normalize(check_images.cpu()), out_dir / "model.onnx") if onnx
                 else {"exported": False, "reason": "not asked for (a baseline kept for 'search score')"})
    full = {"format": FORMAT, **card, "classes": list(classes), "config": cfg.to_dict(),
            "members": len(models), "preprocessing": blob["preprocessing"], "onnx": onnx_info,
            "files": ["model.pt", "model.onnx"] if onnx_info.get("exported") else ["model.pt"],
            "versions": library_versions(),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "intended_use": intended_use(card.get("data", {}))}
    atomic.write_json(out_dir / "model_card.json", full)
    return full


def _export_onnx(ensemble: EnsembleCNN, x: torch.Tensor, path: Path) -> dict[str, Any]:
    """Export with the dynamo exporter (legacy TorchScript as fallback) and check against PyTorch.

    The export goes to a scratch folder first; only a model that passes the check is written (atomically)
    to ``path``. A model that cannot be exported or fails the check is not written; the reason goes in
    the card and the log.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        _log.warning("model.onnx not written: onnxruntime is not installed (pip install -e '.[onnx]')")
        return {"exported": False, "reason": f"onnxruntime not installed ({exc})"}
    sample = x[:2] if len(x) >= 2 else torch.cat([x, x])[:2]  # trace at batch 2: batch is a dynamic axis
    with tempfile.TemporaryDirectory(prefix="onnx-export-") as scratch:
        tmp = Path(scratch) / "model.onnx"
        exporter, error = None, ""
        for dynamo in (True, False):
            try:
                with _quiet_exporter(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # deprecation notes of the fallback exporter
                    _onnx_export(ensemble, sample, tmp, dynamo=dynamo)
                exporter = "dynamo" if dynamo else "torchscript"
                break
            except Exception as exc:  # the exporters' errors are many and version-dependent
                error = f"{exc.__class__.__name__}: {_first_line(exc)}"
                _log.debug("ONNX export (dynamo=%s) failed: %s", dynamo, exc)
        if exporter is None:
            _log.warning("model.onnx not written: export failed (%s)", error)
            return {"exported": False, "reason": f"export failed: {error}"}
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run(["probabilities"], {"image": x.numpy().astype(np.float32)})[0]  # (N, K)
        with torch.no_grad():
            want = ensemble(x).numpy()
        diff = float(np.abs(got - want).max()) if len(x) else 0.0
        info: dict[str, Any] = {
            "exported": diff <= ONNX_TOLERANCE, "exporter": exporter, "opset": ONNX_OPSET, "input": "image",
            "output": "probabilities", "dynamic_axes": ["batch"], "check_images": int(len(x)),
            "max_abs_diff": diff, "tolerance": ONNX_TOLERANCE,
            "argmax_agreement": float((got.argmax(1) == want.argmax(1)).mean()) if len(x) else 1.0}
        if not info["exported"]:
            _log.warning("model.onnx not written: ONNX and PyTorch differ by %.2e > %.0e", diff, ONNX_TOLERANCE)
            info["reason"] = f"ONNX output differs from PyTorch by {diff:.2e} (> {ONNX_TOLERANCE:.0e})"
            path.unlink(missing_ok=True)  # never leave an older model.onnx beside the new model.pt
            return info
        atomic.write_bytes(path, tmp.read_bytes())
    _log.info("model.onnx: %s exporter, opset %d, max |diff| vs PyTorch %.2e on %d images", exporter,
              ONNX_OPSET, diff, len(x))
    return info


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]


def _load_reason(exc: BaseException) -> str:
    """The informative line of torch.load's refusal (its first line is a generic upgrade note)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (named or [f"{exc.__class__.__name__}: {_first_line(exc)}"])[0][:200]


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The ONNX exporter's helpers log every graph pass at INFO; keep them to warnings while exporting."""
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _onnx_export(model: nn.Module, sample: torch.Tensor, path: Path, *, dynamo: bool) -> None:
    common = dict(input_names=["image"], output_names=["probabilities"], opset_version=ONNX_OPSET)
    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=65536)
        program = torch.onnx.export(model, (sample,), None, dynamo=True, verbose=False,
                                    dynamic_shapes={"image": {0: batch}}, **common)
        program.save(str(path), external_data=False)
    else:
        torch.onnx.export(model, (sample,), str(path), dynamo=False,
                          dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}}, **common)


def load_model(model_dir: Path | str) -> tuple[EnsembleCNN, dict[str, Any]]:
    """Load an exported ensemble and its card, refusing anything but plain weights.

    Raises:
        SearchError: the folder or model.pt is missing, model.pt is not a plain weights file
            (``torch.load(weights_only=True)`` refuses pickled code, which is never run), or its
            content does not rebuild the model.
    """
    model_dir = Path(model_dir)
    path = model_dir / "model.pt"
    if not model_dir.is_dir():
        raise SearchError(f"no model folder at {model_dir}")
    if not path.is_file():
        raise SearchError(f"{model_dir} holds no model.pt (write one with 'python -m search finalize' or 'export')")
    try:
        with warnings.catch_warnings():
            # A foreign pickle makes torch warn about its protocol before refusing it; the refusal says enough.
            warnings.simplefilter("ignore", UserWarning)
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError (forbidden global), RuntimeError (not a zip), EOFError, ...
        raise SearchError(f"refusing to load {path}: not a plain weights file, corrupt or holding pickled code "
                          f"(torch.load with weights_only=True said: {_load_reason(exc)}); nothing in it was run"
                          ) from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise SearchError(f"{path} is not an {FORMAT} model file (format {found!r})")
    try:
        cfg = TrialCfg.from_dict(blob["config"])
        states = blob["state_dicts"]
        member_cfgs = ([TrialCfg.from_dict(m).model for m in blob["member_trials"]] if "member_trials" in blob
                       else None)
        model = EnsembleCNN(cfg.model, len(states), member_cfgs, float(blob.get("temperature", 1.0)),
                            blob.get("member_weights"))
        for member, state in zip(model.members, states, strict=True):
            member.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise SearchError(f"{path} does not rebuild its model: {_first_line(exc)}") from None
    card_path = model_dir / "model_card.json"
    card: dict[str, Any] = {"config": blob["config"], "classes": blob["classes"],
                            "preprocessing": blob["preprocessing"]}
    if card_path.is_file():
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SearchError(f"unreadable model card {card_path}: {exc}") from None
    return model.eval(), card
