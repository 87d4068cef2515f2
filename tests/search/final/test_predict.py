"""``python -m search predict``: one line per image, bad files reported, ONNX without torch, exit codes."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from search.cli import main
from search.final.export import save_model
from space import PRESET_TRIALS, build_cnn

CLASSES = ("pronation", "neutral", "supination")
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model")
    base = PRESET_TRIALS["net0"]
    cfg = dataclasses.replace(base, input=dataclasses.replace(base.input, image_size=32))
    torch.manual_seed(0)
    models = [build_cnn(cfg.model).eval() for _ in range(2)]
    save_model(out, models, cfg, card={"data": {"synthetic": True}}, classes=CLASSES)
    return out


def _jpeg_with_orientation(size: tuple[int, int], orientation: int) -> bytes:
    image = Image.new("RGB", size, (200, 40, 40))
    image.paste((20, 20, 220), (0, 0, size[0] // 2, size[1] // 3))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif)
    return buf.getvalue()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / "a.png")
    (root / "b.JPG").write_bytes(_jpeg_with_orientation((50, 70), 6))
    (root / "sub").mkdir()
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(root / "sub" / "c.webp")
    (root / "notes.txt").write_text("not an image")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_folder_gives_one_line_per_image_and_reports_bad_files(model_dir: Path, images: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["predict", "--model", str(model_dir), str(images)])
    out, err = capsys.readouterr()
    assert rc == 1  # broken.jpg failed; the others were still classified
    lines = _lines(out)
    assert [Path(line.split("\t")[0]).name for line in lines] == ["a.png", "b.JPG", "c.webp"]
    for line in lines:
        path, cls, probs = line.split("\t")
        values = {k: float(v) for k, v in (p.split("=") for p in probs.split())}
        assert cls in CLASSES and set(values) == set(CLASSES)
        assert sum(values.values()) == pytest.approx(1, abs=1e-3) and cls == max(values, key=values.get)
    assert "broken.jpg" in err and "notes.txt" not in err.replace("left out 1 file(s)", "")
    assert "left out 1 file(s)" in err


def test_json_lines_and_explicit_non_image_file(model_dir: Path, images: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["predict", "--model", str(model_dir), "--json", str(images / "notes.txt"), str(images / "a.png"),
               str(images / "missing.png")])
    out, err = capsys.readouterr()
    assert rc == 1
    (row,) = [json.loads(line) for line in _lines(out)]
    assert row["path"].endswith("a.png") and row["class"] in CLASSES
    assert sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert "notes.txt: not an image" in err and "missing.png: no such file" in err


def test_onnx_and_pytorch_agree(model_dir: Path, images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = []
    for extra in ([], ["--onnx"]):
        main(["predict", "--model", str(model_dir), "--json", *extra, str(images)])
        results.append({r["path"]: r for r in map(json.loads, _lines(capsys.readouterr().out))})
    torch_rows, onnx_rows = results
    assert torch_rows.keys() == onnx_rows.keys() and len(torch_rows) == 3
    for path, row in torch_rows.items():
        assert row["class"] == onnx_rows[path]["class"]
        for c in CLASSES:
            assert abs(row["probabilities"][c] - onnx_rows[path]["probabilities"][c]) <= 1e-4


def test_exif_orientation_is_applied(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The same picture stored upright and stored rotated with an EXIF tag must give the same answer.
    upright = Image.open(io.BytesIO(_jpeg_with_orientation((50, 70), 6)))
    from PIL import ImageOps

    ImageOps.exif_transpose(upright).save(tmp_path / "upright.png")
    (tmp_path / "tagged.jpg").write_bytes(_jpeg_with_orientation((50, 70), 6))
    main(["predict", "--model", str(model_dir), "--json", str(tmp_path / "upright.png"), str(tmp_path / "tagged.jpg")])
    a, b = (json.loads(line)["probabilities"] for line in _lines(capsys.readouterr().out))
    assert all(abs(a[c] - b[c]) < 0.02 for c in CLASSES)  # JPEG loss only


@pytest.mark.parametrize("onnx", [False, True])
def test_missing_or_tampered_model_is_one_line_exit_2(model_dir: Path, images: Path, tmp_path: Path, onnx: bool,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    flag = ["--onnx"] if onnx else []
    assert main(["predict", "--model", str(tmp_path / "nope"), *flag, str(images)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no model folder") and len(_lines(err)) == 1
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    (bad / ("model.onnx" if onnx else "model.pt")).write_bytes(b"garbage")
    assert main(["predict", "--model", str(bad), *flag, str(images)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(_lines(err)) == 1 and err.startswith("error: ")


_NO_TORCH = """
import sys

class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is blocked in this test ({name})")
        return None

sys.meta_path.insert(0, BlockTorch())
from search.cli import main
rc = main(["predict", "--model", sys.argv[1], "--onnx", sys.argv[2]])
leaked = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("TORCH-MODULES", leaked, "RC", rc)
"""


def test_onnx_path_runs_without_torch(model_dir: Path, images: Path) -> None:
    res = subprocess.run([sys.executable, "-c", _NO_TORCH, str(model_dir), str(images)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = _lines(res.stdout)
    assert lines[-1] == "TORCH-MODULES [] RC 1", res.stderr  # 1: broken.jpg
    assert len(lines) == 4 and "broken.jpg" in res.stderr
