"""The exported model: ensemble output, safe weights, ONNX parity, the model card, refusal of tampered files."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from search.final.export import FORMAT, ONNX_TOLERANCE, EnsembleCNN, intended_use, load_model, save_model
from search.study.errors import SearchError
from space import PRESET_TRIALS, build_cnn, normalize

CLASSES = ("pronation", "neutral", "supination")
REPO = Path(__file__).resolve().parents[3]
DATA = {"kind": "anklealign", "synthetic": True, "source": "synthetic twin (seed 0, scale 1.0)",
        "fingerprint": "f" * 64, "train_images": 10, "test_images": 4,
        "twin": {"difficulty": "realistic", "test": {"ceiling_macro_f1": 0.61, "ceiling_accuracy": 0.88,
                                                     "label_noise": 0.28, "chance_macro_f1": 0.27}}}


def _models(n: int = 2, name: str = "net4") -> tuple[list[torch.nn.Module], object]:
    cfg = PRESET_TRIALS[name]
    torch.manual_seed(0)
    models = [build_cnn(cfg.model) for _ in range(n)]
    for m in models:  # non-trivial batchnorm statistics, so eval mode matters in the export
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
        m.eval()
    return models, cfg


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[torch.nn.Module], object]:
    out = tmp_path_factory.mktemp("model")
    models, cfg = _models()
    images = torch.randint(0, 256, (6, 1, 64, 64), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    save_model(out, models, cfg, card={"data": DATA, "seeds": [1, 2], "epochs": 3}, classes=CLASSES,
               check_images=images)
    return out, models, cfg


def test_ensemble_averages_member_softmax() -> None:
    models, cfg = _models(3)
    ens = EnsembleCNN.from_models(cfg.model, models)
    x = normalize(torch.randint(0, 256, (5, 1, 32, 32), dtype=torch.uint8))
    with torch.no_grad():
        want = torch.stack([torch.softmax(m(x), 1) for m in models]).mean(0)
        got = ens(x)
    assert got.shape == (5, 3)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got.sum(1), torch.ones(5))


def test_a_weighted_ensemble_round_trips_through_model_pt_and_onnx(tmp_path: Path) -> None:
    """A greedy ensemble's weights: the output is the weighted average in PyTorch, after loading, and in ONNX."""
    import onnxruntime as ort

    models, cfg = _models(3)
    weights = [0.5, 0.3, 0.2]
    images = torch.randint(0, 256, (6, 1, 64, 64), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    card = save_model(tmp_path, models, cfg, card={"data": DATA, "seeds": [1], "epochs": 3}, classes=CLASSES,
                      check_images=images, member_trials=[cfg] * 3, weights=weights)
    x = normalize(images)
    with torch.no_grad():
        probs = torch.stack([torch.softmax(m(x), 1) for m in models])
        want = (probs * torch.tensor(weights)[:, None, None]).sum(0)
        loaded, _ = load_model(tmp_path)
        torch.testing.assert_close(loaded(x), want)
        assert not torch.allclose(want, probs.mean(0), atol=1e-4)  # the weights matter for these members
    assert card["onnx"]["exported"]
    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="weights summing to 1"):
        EnsembleCNN.from_models(cfg.model, models, weights=[0.5, 0.5, 0.5])


def test_model_pt_holds_only_plain_values(exported: tuple) -> None:
    out, models, cfg = exported
    blob = torch.load(out / "model.pt", weights_only=True)
    assert blob["format"] == FORMAT and blob["classes"] == list(CLASSES)
    assert blob["config"] == cfg.to_dict() and len(blob["state_dicts"]) == 2
    assert blob["preprocessing"]["mean"] == 0.5 and blob["preprocessing"]["std"] == 0.5


def test_load_round_trip_gives_the_same_probabilities(exported: tuple) -> None:
    out, models, cfg = exported
    model, card = load_model(out)
    x = normalize(torch.randint(0, 256, (4, 1, 64, 64), dtype=torch.uint8))
    with torch.no_grad():
        torch.testing.assert_close(model(x), EnsembleCNN.from_models(cfg.model, models)(x), rtol=0, atol=0)
    assert card["classes"] == list(CLASSES)


def test_card_states_data_preprocessing_versions_and_onnx_check(exported: tuple) -> None:
    out, _, cfg = exported
    card = json.loads((out / "model_card.json").read_text())
    assert card["data"] == DATA and card["seeds"] == [1, 2] and card["epochs"] == 3
    assert card["config"] == cfg.to_dict() and card["members"] == 2
    assert "SYNTHETIC TWIN" in card["intended_use"]
    assert "test (consensus majority) macro-F1 ceiling 0.610 (chance 0.270" in card["intended_use"]
    pre = card["preprocessing"]
    assert (pre["image_size"], pre["color"], pre["resize"]) == (64, "gray", "stretch")
    steps = " ".join(pre["steps"]).lower()
    for needle in ("exif", "bilinear", "/ 255", "(x - 0.5) / 0.5", "draft"):
        assert needle in steps
    assert set(card["versions"]) >= {"torch", "torchvision", "optuna", "onnx", "onnxruntime", "python"}
    onnx = card["onnx"]
    assert onnx["exported"] is True and onnx["opset"] >= 17
    assert 0 <= onnx["max_abs_diff"] <= onnx["tolerance"] == ONNX_TOLERANCE
    assert card["created"][:2] == "20"


def test_real_data_card_does_not_claim_synthetic() -> None:
    text = intended_use({**DATA, "synthetic": False, "source": "/data/anklealign.zip"})
    assert "SYNTHETIC" not in text and "not a medical device" in text and "/data/anklealign.zip" in text


@pytest.mark.parametrize("batch", [1, 7])
def test_onnx_matches_pytorch_at_any_batch_size(exported: tuple, batch: int) -> None:
    import onnxruntime as ort

    out, models, cfg = exported
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    x = normalize(torch.randint(0, 256, (batch, 1, 64, 64), dtype=torch.uint8))
    got = session.run(["probabilities"], {"image": x.numpy()})[0]
    with torch.no_grad():
        want = EnsembleCNN.from_models(cfg.model, models)(x).numpy()
    assert got.shape == (batch, 3)
    assert np.abs(got - want).max() <= ONNX_TOLERANCE


def test_loads_in_a_process_that_never_imports_optuna(exported: tuple) -> None:
    out = exported[0]
    code = (
        "import sys, torch\n"
        f"blob = torch.load({str(out / 'model.pt')!r}, weights_only=True)\n"
        "from search.final.export import load_model\n"
        f"model, card = load_model({str(out)!r})\n"
        "x = torch.zeros(2, 1, 64, 64)\n"
        "assert model(x).shape == (2, 3)\n"
        "assert 'optuna' not in sys.modules, 'optuna was imported'\n"
        "print('ok', len(blob['state_dicts']))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok 2"


class _Payload:
    """Unpickling this would run ``open(path, 'w')``: a stand-in for arbitrary code in a model file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def test_tampered_model_is_refused_and_never_run(tmp_path: Path) -> None:
    victim = tmp_path / "pwned.txt"
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    torch.save({"format": FORMAT, "config": {}, "state_dicts": [_Payload(str(victim))]}, model_dir / "model.pt")
    with pytest.raises(SearchError) as err:
        load_model(model_dir)
    assert not victim.exists()
    msg = str(err.value)
    assert "\n" not in msg and "model.pt" in msg and "refusing to load" in msg and "GLOBAL" in msg


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"not a model at all", "refusing to load"),
        (None, "is not an anklealign-search/1 model file"),  # a plain dict of another format
        ("badconfig", "does not rebuild its model"),
    ],
)
def test_corrupt_model_files_are_one_line_errors(tmp_path: Path, content: object, needle: str) -> None:
    path = tmp_path / "model.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is None:
        torch.save({"format": "something-else/9"}, path)
    else:
        torch.save({"format": FORMAT, "config": {"model": {}}, "state_dicts": [], "classes": [],
                    "preprocessing": {}}, path)
    with pytest.raises(SearchError, match=needle) as err:
        load_model(tmp_path)
    assert "\n" not in str(err.value)


def test_missing_model_folder_or_file(tmp_path: Path) -> None:
    with pytest.raises(SearchError, match="no model folder"):
        load_model(tmp_path / "nope")
    with pytest.raises(SearchError, match="holds no model.pt"):
        load_model(tmp_path)


def test_atomic_writes_leave_no_temporary_files(exported: tuple) -> None:
    out = exported[0]
    assert sorted(os.listdir(out)) == ["model.onnx", "model.pt", "model_card.json"]


def test_top_k_ensemble_of_different_nets_round_trips(tmp_path: Path) -> None:
    """k trials x R seeds of different architectures (one input): saved, loaded, and the mean of all members."""
    (a, b), cfg_a = _models(2, "net4")
    (c,), cfg_c = _models(1, "net6")
    out = tmp_path / "topk"
    images = torch.randint(0, 256, (4, 1, 64, 64), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    card = save_model(out, [a, b, c], cfg_a, card={"data": DATA}, classes=CLASSES, check_images=images,
                      member_trials=[cfg_a, cfg_a, cfg_c])
    assert card["members"] == 3 and card["onnx"].get("exported")
    loaded, _ = load_model(out)
    x = normalize(images)
    with torch.no_grad():
        want = torch.stack([torch.softmax(m(x), 1) for m in (a, b, c)]).mean(0)
        torch.testing.assert_close(loaded(x), want)
    other_input = dataclasses.replace(cfg_c, input=dataclasses.replace(cfg_c.input, image_size=96))
    with pytest.raises(ValueError, match="share one input"):
        save_model(tmp_path / "bad", [a, c], cfg_a, card={}, classes=CLASSES, member_trials=[cfg_a, other_input])
